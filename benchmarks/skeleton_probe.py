"""How much action information survives each way of reading DrAction frames (no training).

The step-cost benchmark (``skeleton_step.py``) says which reading settings are affordable;
this one says what they cost in information. Clips of the seen classes of the ``novel`` split
are rendered by the *initial* (untrained) DrAction, read by the pretrained model's vision
tower + projector exactly as SkeletonLLM feeds the LM (``SkeletonLLM.image_tokens``), and the
concatenated image tokens of a clip (T' × tokens × 576 numbers) go to a ridge classifier
(one-vs-rest on ±1 targets, λ picked on val, solved in the dual: X Xᵀ is only clips × clips).
Reported: top-1 over the seen classes on the test subjects. Same clips, same renderer for every
row; only the reading (T', tower input size, tokens per frame) changes.

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/skeleton_probe.py \
        --model runs/smol-dino --out docs/results/skeleton_probe.json

Last line: one JSON object (top-1 per row, and each row's ratio to the 224-px 16-token row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROWS = {  # name: (T', tower input px, token pool)
    "T'6 224px 16 tok": (6, 224, 1),
    "T'6 224px pooled to 4 tok": (6, 224, 2),
    "T'6 112px 4 tok": (6, 112, 1),
    "T'4 224px 16 tok": (4, 224, 1),
    "T'4 112px 4 tok": (4, 112, 1),
    "T'12 112px 4 tok": (12, 112, 1),
}


def features(model_dir: str, frames: int, size: int, pool: int, clips: np.ndarray,
             batch: int = 8) -> np.ndarray:
    import torch

    from posrft.skeleton.model import RendererSettings, SkeletonLLM

    m = SkeletonLLM.from_pretrained(model_dir, RendererSettings(num_frames=frames, vision_size=size,
                                                                token_pool=pool))
    m.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(clips), batch):
            x = torch.from_numpy(clips[s:s + batch])
            out.append(m.image_tokens(m.pixels(x)).flatten(1).float().numpy())
    return np.concatenate(out)


def ridge_top1(x_tr, y_tr, x_va, y_va, x_te, y_te, n_classes: int) -> dict:
    """Kernel ridge on standardised features; λ from a grid, chosen by val top-1."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    z = [(a - mu) / sd for a in (x_tr, x_va, x_te)]
    k_tr = z[0] @ z[0].T
    targets = -np.ones((len(y_tr), n_classes))
    targets[np.arange(len(y_tr)), y_tr] = 1.0
    best = None
    scale = np.trace(k_tr) / len(k_tr)
    for lam in (1e-3, 1e-2, 1e-1, 1.0, 10.0):
        alpha = np.linalg.solve(k_tr + lam * scale * np.eye(len(k_tr)), targets)
        acc_va = float(np.mean((z[1] @ z[0].T @ alpha).argmax(1) == y_va))
        if best is None or acc_va > best[0]:
            acc_te = float(np.mean((z[2] @ z[0].T @ alpha).argmax(1) == y_te))
            best = (acc_va, acc_te, lam)
    return {"val_top1": best[0], "test_top1": best[1], "lambda": best[2]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="init-pretrained folder (DINOv2 + SmolLM2)")
    ap.add_argument("--clips-per-class", type=int, default=30)
    ap.add_argument("--rows", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from posrft.skeleton.data import load_action_data

    data = load_action_data("", formats=["smpl24"], class_split="novel",
                            clips_per_class=args.clips_per_class, num_frames=48, seed=0,
                            val_fraction=0.2, test_fraction=0.2)
    index = {c: i for i, c in enumerate(data.seen)}
    sets = {s: data.get(s, "smpl24").subset(data.seen) for s in ("train", "val", "test")}
    y = {s: np.array([index[v] for v in c.labels]) for s, c in sets.items()}
    results = {}
    for name, (frames, size, pool) in ROWS.items():
        if args.rows and name not in args.rows:
            continue
        t0 = time.process_time()
        feats = {s: features(args.model, frames, size, pool, c.clips) for s, c in sets.items()}
        res = ridge_top1(feats["train"], y["train"], feats["val"], y["val"], feats["test"],
                         y["test"], len(data.seen))
        res.update(frames=frames, vision_px=size, token_pool=pool,
                   dims=int(feats["train"].shape[1]), cpu_s=round(time.process_time() - t0, 1))
        results[name] = res
        print(f"{name:28s} test top-1 {100 * res['test_top1']:5.1f}  val {100 * res['val_top1']:5.1f}"
              f"  ({res['dims']} dims, {res['cpu_s']} CPU-s)", flush=True)
    ref = results.get("T'6 224px 16 tok", {}).get("test_top1")
    for r in results.values():
        r["ratio_to_224px_16tok"] = round(r["test_top1"] / ref, 3) if ref else None
    out = {"classes": len(data.seen), "chance": 1.0 / len(data.seen),
           "clips": {s: len(c) for s, c in sets.items()}, "rows": results}
    if args.out:
        from posrft.files import atomic_write_json

        atomic_write_json(Path(args.out), out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
