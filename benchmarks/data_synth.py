"""Speed, coverage and statistics of the offline pose data: prior, captioner, datasets.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/data_synth.py [--out runs/bench_data]

Prints poses/s of the prior (both key-pose libraries) and captions/s of both captioners (CPU
time of this process, so other jobs on a shared machine do not count), wall time of the
quickstart-sized (512/64/64) text->pose and image->pose builds, caption diversity
(distinct captions per 1,000 poses, mean words), the prior's coverage/rejection statistics,
and the **coverage figure** before (first library) and after (second library): the
nearest-neighbour MPJPE of a held-out pose set to 20,000 prior poses (pelvis-aligned, heading
removed, same skeleton; :mod:`posrft.data.coverage`). The held-out set is not drawn from the
prior's sampler: frames of the 37 procedural action classes' clips of :mod:`posrft.data.actions`
(6 performers of the stand-in's size, 24 frames per clip, 5,328 poses), reported over all
frames and over the *moving* frames (> 100 mm from the standing start pose). The last line is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from posrft.data.captioner import caption_poses, code_frequencies
from posrft.data.coverage import coverage, heldout_action_poses
from posrft.data.prior import coverage_stats, sample_poses
from posrft.data.show import show_dataset
from posrft.data.synth import synth_dataset


def _coverage(n_prior: int) -> dict:
    held, labels = heldout_action_poses()
    out: dict = {}
    fixed = None  # one threshold for both: the first library's own 90th percentile
    for version in (1, 2):
        s = sample_poses(n_prior, seed=0, yaw_deg=0.0, version=version)
        c = coverage(s.joints, s.family, held, labels, fixed_mm=fixed)
        if fixed is None:  # the first library against its own p90
            fixed = c["self_nn_mm_p90"]
            c.update(fixed_mm=fixed, frac_beyond_fixed=c["frac_beyond_self_p90"],
                     moving_frac_beyond_fixed=c["moving_frac_beyond_self_p90"])
        out[f"v{version}"] = c
    before, after = out["v1"], out["v2"]
    print(f"coverage of {before['heldout_poses']} held-out action frames by {n_prior:,} prior "
          f"poses (nearest-neighbour MPJPE, mm): before -> after")
    for key in ("nn_mm_median", "nn_mm_mean", "nn_mm_p90", "moving_nn_mm_median",
                "moving_nn_mm_mean", "moving_nn_mm_p90", "self_nn_mm_median",
                "self_nn_mm_p90"):  # fmt: skip
        print(f"  {key:22s} {before[key]:7.1f} -> {after[key]:7.1f}")
    for key in ("frac_beyond_self_p90", "moving_frac_beyond_self_p90"):
        print(f"  {key:28s} {before[key]:6.1%} -> {after[key]:6.1%} (each against its own p90)")
    for key in ("frac_beyond_fixed", "moving_frac_beyond_fixed"):
        print(f"  {key:28s} {before[key]:6.1%} -> {after[key]:6.1%} (beyond {fixed:.1f} mm, the "
              "first library's own p90)")  # fmt: skip
    print("  per class (median mm), the ten worst before:")
    worst = sorted(before["per_class_median_mm"], key=lambda c: -before["per_class_median_mm"][c])
    for c in worst[:10]:
        print(f"    {c:18s} {before['per_class_median_mm'][c]:6.1f} -> "
              f"{after['per_class_median_mm'][c]:6.1f}")  # fmt: skip
    print(f"  nearest family of the 'jump up' frames: before {before['jump_nearest_family']}, "
          f"after {after['jump_nearest_family']}")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="folder for the datasets (default: a temp dir)")
    ap.add_argument("--grid", default=None, help="write a text2pose sample grid here")
    ap.add_argument("--prior-poses", type=int, default=20_000, help="prior poses for coverage")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="posrft_bench_data_"))
    figures: dict = {}

    for version in (1, 2):
        sample_poses(64, seed=0, version=version)  # warm-up (imports, library)
        t = time.process_time()
        s = sample_poses(10_000, seed=0, version=version)
        dt = time.process_time() - t
        figures[f"prior_v{version}_poses_per_s"] = len(s) / dt
        print(f"prior v{version}: {len(s) / dt:,.0f} poses/s (10,000 poses in {dt:.2f} s CPU)")

    poses = sample_poses(1000, seed=1, yaw_deg=0.0)
    for version in (1, 2):
        code_frequencies(version)
        caption_poses(poses.joints[:8], seed=0, version=version)  # warm-up (pool, tables)
        t = time.process_time()
        caps = caption_poses(poses.joints, seed=0, version=version,
                             ground=poses.ground if version == 2 else None)  # fmt: skip
        dt = time.process_time() - t
        words = [len(c.text.split()) for c in caps]
        figures[f"captioner_v{version}_per_s"] = len(caps) / dt
        print(f"captioner v{version}: {len(caps) / dt:,.0f} captions/s; distinct per 1,000 poses: "
              f"{len({c.text for c in caps})}; mean words {np.mean(words):.1f} "
              f"(min {min(words)}, max {max(words)}); statements/caption "
              f"{np.mean([len(c.relations) for c in caps]):.2f}")  # fmt: skip

    for task in ("text2pose", "image2pose"):
        t = time.perf_counter()
        synth_dataset(task, 640, out / task, seed=0, splits=(512, 64, 64))
        figures[f"{task}_quickstart_s"] = time.perf_counter() - t
        print(f"{task} quickstart 512/64/64: {time.perf_counter() - t:.1f} s -> {out / task}")

    st = coverage_stats(s)
    st.pop("joint_coverage")
    st["key_pose_counts"] = f"{len(st['key_pose_counts'])} key poses used"
    print(json.dumps(st, indent=1))
    figures["coverage"] = _coverage(args.prior_poses)
    if args.grid:
        show_dataset(out / "text2pose", n=8, out=args.grid, size=150)
        print("grid:", args.grid)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
