"""What bf16 autocast buys on this CPU: one SFT forward + backward, fp32 vs bf16.

    python benchmarks/bf16_speed.py [--model DIR] [--batch 16] [--rounds 3] [--threads 2]

The policy is SmolLM2-135M built offline by ``posrft model init-pretrained`` (or ``--model``), with
the table's LoRA set-up (top 8 decoder layers, the ``<POSE>`` rows) and ``l2_nll`` pose loss, on a
batch of synthetic text→pose prompts. fp32 and bf16 alternate over ``--rounds`` rounds (other jobs
share the cores) and each keeps its fastest round; the ratio is bf16 / fp32 from the same run.
Also printed: how far bf16 moves the answer's token log-probs and the pose head's μ (the head
stays fp32 under autocast; only its input is rounded). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="policy folder (default: init-pretrained smollm2)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from posrft.data.splits import load_split
    from posrft.data.synth import synth_dataset
    from posrft.policy.prompts import encode_prompts
    from posrft.train.common import build_policy
    from posrft.train.config import SFTConfig
    from posrft.train.data import encode_completions
    from posrft.train.sft import sft_losses

    tmp = Path(tempfile.mkdtemp(prefix="posrft_bf16_"))
    model = args.model
    if model is None:
        from posrft.policy.pretrained import init_pretrained

        init_pretrained(tmp / "start", text="smollm2", vision="none")
        model = str(tmp / "start")
    synth_dataset("text2pose", max(2 * args.batch, 32), tmp / "data", seed=0)
    cfg = SFTConfig(model_name_or_path=model, dataset_path=str(tmp / "data"), output_dir=str(tmp / "out"),
                    use_peft=True, lora_layers=8, pose_loss="l2_nll", report_to=["none"])  # fmt: skip
    policy = build_policy(cfg)
    policy.pose_head.sigma_stops_gradient = True
    rows = load_split(cfg.dataset_path, "train", ["prompt", "completion", "gt_pose_6d"]).select(range(args.batch))
    enc = encode_prompts(policy.processing, rows["prompt"], None, False, policy.family)
    comp_ids, comp_mask = encode_completions(policy, rows["prompt"], rows["completion"])
    gt = torch.tensor(rows["gt_pose_6d"], dtype=torch.float32)

    def step(bf16: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = policy(enc.input_ids, enc.attention_mask, comp_ids, comp_mask)
            text, pose, _ = sft_losses(out, comp_mask, gt, "l2_nll")
        (text + 10.0 * pose).backward()
        policy.zero_grad(set_to_none=True)
        return time.perf_counter() - t, out.token_logps.detach().float(), out.pose_dist.mean.detach()

    step(False)  # warm-up
    best = {"fp32": float("inf"), "bf16": float("inf")}
    outs = {}
    for _ in range(args.rounds):
        for name in ("fp32", "bf16"):
            s, logps, mu = step(name == "bf16")
            best[name] = min(best[name], s)
            outs[name] = (logps, mu)
    mask = comp_mask.bool()
    dlogp = (outs["bf16"][0] - outs["fp32"][0])[mask].abs()
    dmu = (outs["bf16"][1] - outs["fp32"][1]).abs()
    result = {"tokens": [int(enc.input_ids.shape[1]), int(comp_ids.shape[1])], "batch": args.batch,
              "threads": args.threads, "fp32_s": round(best["fp32"], 3), "bf16_s": round(best["bf16"], 3),
              "ratio": round(best["bf16"] / best["fp32"], 3),
              "token_logp_abs_diff": {"mean": round(dlogp.mean().item(), 4), "max": round(dlogp.max().item(), 4)},
              "pose_mu_abs_diff": {"mean": round(dmu.mean().item(), 5), "max": round(dmu.max().item(), 5)}}  # fmt: skip
    print(f"SFT forward+backward, batch {args.batch}: fp32 {best['fp32']:.2f} s, bf16 {best['bf16']:.2f} s "
          f"(x{result['ratio']:.2f})")  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
