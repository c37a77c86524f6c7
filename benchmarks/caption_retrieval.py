"""Do the new captions tell a pose from its neighbours? Text->pose retrieval, old vs new captions.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/caption_retrieval.py [--quick]

Protocol (both caption versions get exactly the same poses, model, settings and seeds):

* training poses: ``--train`` poses of the prior (second library, seed 0, facing +z);
* captions: version 1 (the first captioner: metres, the floor under each pose, rarest
  statements) and version 2 (the default: body-relative, floor-aware, distinctive statements;
  :mod:`posrft.data.captioner`), one caption per pose;
* model: :func:`posrft.eval.retrieval_train.train_on_pairs` on the captions plus their
  left-right mirror images (the retrieval trainer's default augmentation), ``--epochs``
  epochs, for each of ``--seeds`` seeds;
* galleries (prior seed 7, disjoint from training): 200 random poses ("all"), and for each of
  ``--families`` 200 poses of that one family -- a narrow single-activity gallery where the
  poses differ only in details;
* figure: text->pose R@1 / R@5 / R@10 over the 200 poses of a gallery (chance: 0.5 % / 2.5 %
  / 5 %), mean over seeds, each gallery captioned by the version under test.

Prints a table and, last, one JSON object with every figure and the v2 - v1 differences.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from posrft.body.rotations import axis_angle_to_pose6d
from posrft.data.captioner import caption_poses
from posrft.data.posecodes import lowest_support
from posrft.data.prior import sample_poses
from posrft.eval.retrieval_train import PairSet, TrainSettings, augment, train_on_pairs


def _pairs(samples, idx, version: int, seed: int) -> PairSet:
    joints = samples.joints[idx]
    ground = samples.ground[idx] if version == 2 else lowest_support(joints)
    caps = caption_poses(joints, seed, ground=ground, version=version)
    pose6d = axis_angle_to_pose6d(torch.from_numpy(samples.pose[idx, :66]))
    return PairSet(pose6d, [c.text for c in caps], torch.as_tensor(np.asarray(idx)),
                   torch.from_numpy(joints))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--gallery", type=int, default=200)
    ap.add_argument("--families", nargs="+", default=["standing", "squatting", "jumping", "sports"])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--quick", action="store_true", help="800 training poses, 20 epochs, one seed")
    args = ap.parse_args()
    if args.quick:
        args.train, args.epochs, args.seeds = 800, 20, [0]
    t0 = time.perf_counter()
    train_s = sample_poses(args.train, seed=0, yaw_deg=0.0)
    test_s = sample_poses(6000, seed=7, yaw_deg=0.0)
    fam = np.array(test_s.family)
    galleries = {"all": np.arange(args.gallery)}
    for f in args.families:
        idx = np.nonzero(fam == f)[0][: args.gallery]
        if len(idx) < args.gallery:
            raise SystemExit(f"family {f!r}: only {len(idx)} poses in the test sample")
        galleries[f] = idx
    settings = TrainSettings(epochs=args.epochs)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for version in (1, 2):
        train = augment(_pairs(train_s, np.arange(args.train), version, seed=0))
        tests = {g: _pairs(test_s, idx, version, seed=1) for g, idx in galleries.items()}
        words = np.mean([len(c.split()) for c in train.captions])
        print(f"captions v{version}: {len(train)} training pairs, {words:.1f} words/caption "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        per_seed = []
        for seed in args.seeds:
            model = train_on_pairs(train, seed=seed, settings=settings)
            per_seed.append({g: model.evaluate(p.captions, p.pose6d, ks=(1, 5, 10), pool=None)
                             for g, p in tests.items()})  # fmt: skip
        results[f"v{version}"] = {
            g: {k: float(np.mean([r[g][f"t2p_R@{k}"] for r in per_seed])) for k in (1, 5, 10)}
            for g in galleries
        }  # fmt: skip
    print(f"\ntext->pose recall over galleries of {args.gallery} poses "
          f"(mean of seeds {args.seeds}; chance R@10 = {10 / args.gallery:.1%})")  # fmt: skip
    print(f"{'gallery':12s} {'v1 R@1':>7s} {'v1 R@5':>7s} {'v1 R@10':>8s}   "
          f"{'v2 R@1':>7s} {'v2 R@5':>7s} {'v2 R@10':>8s}   {'dR@10':>6s}")  # fmt: skip
    diff = {}
    for g in galleries:
        a, b = results["v1"][g], results["v2"][g]
        diff[g] = b[10] - a[10]
        print(f"{g:12s} {a[1]:7.1%} {a[5]:7.1%} {a[10]:8.1%}   {b[1]:7.1%} {b[5]:7.1%} "
              f"{b[10]:8.1%}   {diff[g]:+6.1%}")  # fmt: skip
    out = {"train_poses": args.train, "gallery": args.gallery, "epochs": args.epochs,
           "seeds": args.seeds, "t2p_recall": results, "delta_R@10": diff,
           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
