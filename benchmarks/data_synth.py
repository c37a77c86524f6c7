"""Speed and statistics of the offline pose data: prior, captioner, quickstart datasets.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/data_synth.py [--out runs/bench_data]

Prints poses/s of the prior, captions/s, wall time of the quickstart-sized (512/64/64)
text->pose and image->pose builds, caption diversity (distinct captions per 1,000 poses, mean
words), the prior's coverage/rejection statistics, and writes a sample grid.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from posrft.data.captioner import caption_poses, code_frequencies
from posrft.data.prior import coverage_stats, sample_poses
from posrft.data.show import show_dataset
from posrft.data.synth import synth_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="folder for the datasets (default: a temp dir)")
    ap.add_argument("--grid", default=None, help="write a text2pose sample grid here")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="posrft_bench_data_"))

    sample_poses(64, seed=0)  # warm-up (imports, library)
    code_frequencies()
    t = time.perf_counter()
    s = sample_poses(10_000, seed=0)
    dt = time.perf_counter() - t
    print(f"prior: {len(s) / dt:,.0f} poses/s (10,000 poses in {dt:.2f} s)")

    poses = sample_poses(1000, seed=1, yaw_deg=0.0)
    t = time.perf_counter()
    caps = caption_poses(poses.joints, seed=0)
    dt = time.perf_counter() - t
    words = [len(c.text.split()) for c in caps]
    print(f"captioner: {len(caps) / dt:,.0f} captions/s; distinct per 1,000 poses: "
          f"{len({c.text for c in caps})}; mean words {np.mean(words):.1f} "
          f"(min {min(words)}, max {max(words)}); statements/caption "
          f"{np.mean([len(c.relations) for c in caps]):.2f}")  # fmt: skip

    for task in ("text2pose", "image2pose"):
        t = time.perf_counter()
        synth_dataset(task, 640, out / task, seed=0, splits=(512, 64, 64))
        print(f"{task} quickstart 512/64/64: {time.perf_counter() - t:.1f} s -> {out / task}")

    st = coverage_stats(s)
    st.pop("joint_coverage")
    st["key_pose_counts"] = f"{len(st['key_pose_counts'])} key poses used"
    print(json.dumps(st, indent=1))
    if args.grid:
        show_dataset(out / "text2pose", n=8, out=args.grid, size=150)
        print("grid:", args.grid)


if __name__ == "__main__":
    main()
