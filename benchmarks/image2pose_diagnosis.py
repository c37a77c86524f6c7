"""Where does an image→pose policy lose MPJPE? Root vs body, heading, and what its features hold.

    python benchmarks/image2pose_diagnosis.py --data DATA MODEL [MODEL ...] [--train 600]

For each policy folder, on ``--split`` (val by default; greedy answers, pose = μ):

* ``mpjpe`` / ``pa_mpjpe`` (mm) and the same with the prediction's global orientation replaced
  by the ground truth's (``gt_root``: what the body alone costs) and with the ground-truth body
  under the predicted root (``gt_body``: what the root alone costs); the train set's mean 6D
  pose under the same swaps;
* the heading: yaw of the hips' normal about the vertical for prediction and truth; quantiles of
  the absolute yaw error (degrees) and the correlation of cos / sin of the two yaws (``cos``:
  front vs back, ``sin``: facing left vs right);
* ``image_sensitivity``: how far μ moves when a prompt gets another row's picture, against how
  far μ varies across rows (teacher-forced, 16 rows), and the image tokens per prompt;
* ridge probes (λ picked on ``--split``, reported on test; ``--train`` training rows): from the
  16 image tokens the language model receives (the projector's output, concatenated, and their
  mean) and from the ``<POSE>`` hidden state after decoder layers 0, 4, ..., and the last
  (teacher-forced on the reference answer) to the 6D pose, as MPJPE / PA-MPJPE (mm).

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
from probe_vision import LAMBDAS, DualRidge, _errors

EVAL_ROWS = 100  # rows of val and test scored


def _yaw(joints: torch.Tensor) -> torch.Tensor:
    """(N, 24, 3) → (N,) heading in radians (:func:`posrft.data.views.facing_yaw_deg`)."""
    from posrft.data.views import facing_yaw_deg

    return torch.deg2rad(facing_yaw_deg(joints))


def heading_stats(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, Any]:
    yp, yg = _yaw(pred), _yaw(gt)
    err = ((yp - yg + math.pi) % (2 * math.pi) - math.pi).abs().rad2deg().numpy()
    corr = {}
    for f in ("cos", "sin"):
        a, b = getattr(torch, f)(yp).numpy(), getattr(torch, f)(yg).numpy()
        corr[f"corr_{f}"] = round(float(np.corrcoef(a, b)[0, 1]), 3) if a.std() > 1e-6 else None  # constant: none
    return {"yaw_err_deg_q10_50_90": np.percentile(err, [10, 50, 90]).round(1).tolist(),
            "yaw_err_under_30deg": float((err < 30).mean()), **corr}


def swaps(pose6d: torch.Tensor, gt6d: torch.Tensor, gt_joints: torch.Tensor, fk: Any) -> dict[str, list[float]]:
    """MPJPE / PA-MPJPE of the prediction, of its body under the true root, of the true body
    under its root."""
    body_gt_root, root_gt_body = pose6d.clone(), gt6d.clone()
    body_gt_root[:, :6], root_gt_body[:, :6] = gt6d[:, :6], pose6d[:, :6]
    with torch.no_grad():
        return {name: [round(v, 1) for v in _errors(fk(p), gt_joints)]
                for name, p in (("pred", pose6d), ("gt_root", body_gt_root), ("gt_body", root_gt_body))}  # fmt: skip


@torch.no_grad()
def features(policy: Any, rows: Any, layers: list[int], batch: int = 16) -> dict[str, np.ndarray]:
    """Teacher-forced features per row: image tokens (concatenated, mean) and the ``<POSE>``
    hidden state after each decoder layer in ``layers``."""
    from posrft.policy.prompts import encode_prompts
    from posrft.train.data import encode_completions

    decoder = policy.model.get_decoder()
    tok = getattr(policy.processing, "tokenizer", policy.processing)
    pose_id, image_id = tok.convert_tokens_to_ids("<POSE>"), tok.convert_tokens_to_ids("<image>")
    seen: dict[Any, torch.Tensor] = {}
    hooks = [decoder.layers[i].register_forward_hook(
        lambda _m, _a, o, i=i: seen.__setitem__(i, (o[0] if isinstance(o, tuple) else o).float())) for i in layers]
    hooks.append(decoder.layers[0].register_forward_pre_hook(
        lambda _m, a, kw: seen.__setitem__("in", (a[0] if a else kw["hidden_states"]).float()), with_kwargs=True))
    out: dict[Any, list] = {k: [] for k in [*layers, "image_cat", "image_mean"]}
    try:
        for s in range(0, len(rows), batch):
            part = rows.select(range(s, min(s + batch, len(rows))))
            enc = encode_prompts(policy.processing, part["prompt"], list(part["images"]), True, policy.family)
            ids, mask = encode_completions(policy, part["prompt"], part["completion"])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                policy(enc.input_ids, enc.attention_mask, ids, mask, mm_inputs=enc.mm_inputs)
            p = enc.input_ids.shape[1]
            at = p + (ids == pose_id).float().argmax(1)
            b = torch.arange(len(at))
            for i in layers:
                out[i].append(seen[i][b, at])
            image = enc.input_ids == image_id
            tokens = [seen["in"][k, :p][image[k]] for k in range(len(at))]
            out["image_cat"].append(torch.stack([t.flatten() for t in tokens]))
            out["image_mean"].append(torch.stack([t.mean(0) for t in tokens]))
    finally:
        for h in hooks:
            h.remove()
    return {str(k): torch.cat(v).double().numpy() for k, v in out.items()}


def ridge_probe(feats: dict[str, dict[str, np.ndarray]], y_train: np.ndarray, gt: dict[str, torch.Tensor],
                fk: Any, pick: str) -> dict[str, list[float]]:  # fmt: skip
    result = {}
    for name in feats["train"]:
        ridge = DualRidge(feats["train"][name], [feats[pick][name], feats["test"][name]])
        best = None
        for lam in LAMBDAS:
            pred_pick, pred_test = ridge.predict(y_train, lam)
            with torch.no_grad():
                score = _errors(fk(torch.as_tensor(pred_pick, dtype=torch.float32)), gt[pick])[0]
                if best is None or score < best[0]:
                    best = (score, _errors(fk(torch.as_tensor(pred_test, dtype=torch.float32)), gt["test"]))
        result[name] = [round(v, 1) for v in best[1]]
    return result


@torch.no_grad()
def image_sensitivity(policy: Any, rows: Any, n: int = 16) -> dict[str, Any]:
    """Does the picture reach μ? Teacher-forced on the reference answers of the first ``n`` rows:
    μ's spread across rows (mean over dimensions of the std) against the mean |Δμ| when each
    prompt gets the next row's picture instead of its own; the image tokens per prompt; and their
    scale: the mean L2 norm of the tokens the projector hands the LM, their spread across rows
    (‖std over rows‖ per token position, averaged), and the mean norm of a text embedding row."""
    rows = rows.select(range(n))
    tok = policy.processing.tokenizer
    comp = tok([c[0]["content"][0]["text"] for c in rows["completion"]], return_tensors="pt",
               padding=True, add_special_tokens=False)
    images = [r[0] for r in rows["images"]]

    def mu(pictures):
        enc = policy.encode(rows["prompt"], [[im] for im in pictures])
        out = policy.forward_logprobs(enc.input_ids, enc.attention_mask, comp.input_ids,
                                      comp.attention_mask, mm_inputs=enc.mm_inputs)
        return enc, out.pose_dist.mean.float()

    from posrft.policy.image_tokens import projector_module_names, text_embedding_norm

    seen: list[torch.Tensor] = []
    projector = policy.model.get_submodule(projector_module_names(policy.model, policy.family)[0])
    hook = projector.register_forward_hook(lambda _m, _a, out: seen.append(out.float()))
    try:
        enc, own = mu(images)
    finally:
        hook.remove()
    _, other = mu(images[1:] + images[:1])
    counts = (enc.input_ids == policy.hf_model.config.image_token_index).sum(1)
    tokens = seen[0].reshape(n, -1, seen[0].shape[-1])
    return {"mu_spread": round(float(own.std(0).mean()), 4),
            "mu_shift_other_image": round(float((own - other).abs().mean()), 4),
            "image_tokens_per_prompt": sorted(set(counts.tolist())),
            "image_token_norm": round(float(tokens.norm(dim=-1).mean()), 3),
            "image_token_spread": round(float(tokens.std(0).norm(dim=-1).mean()), 3),
            "text_embedding_norm": round(text_embedding_norm(policy.hf_model), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", required=True, help="an image2pose DatasetDict (posrft data synth)")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--train", type=int, default=600, help="training rows for the probes")
    ap.add_argument("--no-probe", action="store_true", help="only the answers' errors and heading")
    args = ap.parse_args()

    from datasets import load_from_disk

    from posrft.body.pose import pose_to_joints
    from posrft.eval.pose_eval import predict_poses
    from posrft.policy.model import PosePolicy

    data = load_from_disk(args.data)
    fk = pose_to_joints()
    rows = {"train": data["train"].select(range(args.train)), "val": data["val"].select(range(EVAL_ROWS)),
            "test": data["test"].select(range(EVAL_ROWS))}  # fmt: skip
    gt6d = {k: torch.tensor(v["gt_pose_6d"], dtype=torch.float32) for k, v in rows.items()}
    gt = {k: torch.tensor(v["gt_joints"], dtype=torch.float64) for k, v in rows.items()}
    mean6d = torch.tensor(np.asarray(data["train"]["gt_pose_6d"], dtype=np.float32).mean(0))
    n = len(gt6d[args.split])
    report: dict[str, Any] = {"split": args.split, "mean_pose": swaps(mean6d.expand(n, -1), gt6d[args.split], gt[args.split], fk)}
    with torch.no_grad():
        report["mean_pose"]["heading"] = heading_stats(fk(mean6d.expand(n, -1)).double(), gt[args.split])
    print("mean pose", report["mean_pose"], flush=True)
    for path in args.models:
        t0 = time.perf_counter()
        policy = PosePolicy.from_pretrained(path).eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = predict_poses(policy, rows[args.split], n)
        r: dict[str, Any] = swaps(pred.pose6d, gt6d[args.split], gt[args.split], fk)
        r["heading"] = heading_stats(pred.joints.double(), gt[args.split])
        r["image_sensitivity"] = image_sensitivity(policy, rows[args.split])
        if not args.no_probe:
            last = len(policy.model.get_decoder().layers) - 1
            layers = sorted({*range(0, last, 4), last})
            feats = {k: features(policy, rows[k], layers) for k in ("train", args.split, "test")}
            r["probe"] = ridge_probe(feats, np.asarray(gt6d["train"], dtype=np.float64), gt, fk, args.split)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        report[path] = r
        print(path, json.dumps(r), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
