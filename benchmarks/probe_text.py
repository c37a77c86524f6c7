"""What the pose head can read: a ridge probe on the ``<POSE>`` hidden state of text→pose policies.

    python benchmarks/probe_text.py --data DIR MODEL [MODEL ...] [--train 1200]

For each policy folder, the hidden state the pose head reads (captured by a hook on the head,
bf16 autocast) for ``--train`` training rows, 100 val and 200 test rows of a text→pose dataset;
a ridge regression (intercept, λ chosen on val) from it to the 6D pose; test MPJPE / PA-MPJPE
(mm) of the poses it predicts, next to the training set's mean 6D pose. Also printed: how much of
the hidden state's second moment varies between prompts (the rest is one vector shared by every
prompt). A frozen start probes how much caption information its features hold; an SFT'd one, how
much of it the fine-tuning kept. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from probe_vision import LAMBDAS, DualRidge, _errors, _joints_from_pose6d

SPLITS = {"val": 100, "test": 200}


def pose_hidden(path: str, rows: dict, batch: int = 16) -> dict[str, np.ndarray]:
    """split → (N, H) hidden states at each answer's ``<POSE>`` under policy ``path``."""
    from posrft.policy.model import PosePolicy
    from posrft.policy.prompts import encode_prompts
    from posrft.train.data import encode_completions

    policy = PosePolicy.from_pretrained(path).eval()
    captured: list[torch.Tensor] = []
    hook = policy.active_pose_head.register_forward_hook(lambda _m, a, _o: captured.append(a[0].detach().float()))
    out = {}
    for split, r in rows.items():
        captured.clear()
        for i in range(0, len(r), batch):
            part = r.select(range(i, min(i + batch, len(r))))
            enc = encode_prompts(policy.processing, part["prompt"], None, False, policy.family)
            ids, mask = encode_completions(policy, part["prompt"], part["completion"])
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                policy(enc.input_ids, enc.attention_mask, ids, mask)
        out[split] = torch.cat(captured).double().numpy()
    hook.remove()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="policy folders")
    ap.add_argument("--data", required=True, help="text→pose dataset folder (synth_dataset layout)")
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from posrft.data.splits import load_split

    sizes = {"train": args.train, **SPLITS}
    rows = {s: load_split(args.data, s, ["prompt", "completion", "gt_pose_6d"]).select(range(n)) for s, n in sizes.items()}
    gt = {s: np.asarray(rows[s]["gt_pose_6d"], dtype=np.float64) for s in sizes}
    joints = {s: _joints_from_pose6d(gt[s]) for s in sizes}
    mean = np.repeat(gt["train"].mean(0, keepdims=True), sizes["test"], 0)
    result = {"mean_pose": [round(x, 1) for x in _errors(_joints_from_pose6d(mean), joints["test"])], "models": {}}
    print(f"mean 6D pose of train: test MPJPE / PA-MPJPE {result['mean_pose']}", flush=True)
    for path in args.models:
        t = time.perf_counter()
        feats = pose_hidden(path, rows)
        h = feats["train"]
        shared = float((h.mean(0) ** 2).sum() / (h**2).mean(0).sum())
        ridge = DualRidge(feats["train"], [feats["val"], feats["test"]])
        best = None
        for lam in LAMBDAS:
            val_pred, test_pred = ridge.predict(gt["train"], lam)
            val_mm = _errors(_joints_from_pose6d(val_pred), joints["val"])[0]
            if best is None or val_mm < best[0]:
                best = (val_mm, lam, _errors(_joints_from_pose6d(test_pred), joints["test"]))
        row = {"test": [round(x, 1) for x in best[2]], "val_mpjpe": round(best[0], 1), "lambda": best[1],
               "shared_fraction": round(shared, 3), "seconds": round(time.perf_counter() - t)}  # fmt: skip
        result["models"][path] = row
        print(f"{path}: ridge test MPJPE / PA-MPJPE {row['test']} (val {row['val_mpjpe']}, λ {best[1]}); "
              f"{100 * shared:.0f} % of the hidden state's second moment is shared by every prompt", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
