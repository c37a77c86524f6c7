"""Joint-reward throughput, FK included, per core: posrft's reward vs the same reward on smplx.

Every method gets the same rollout batch, as the trainer passes it: ``poses`` a list of
``(132,)`` tensors (6D, 22 joints) with a fraction ``--none-frac`` of ``None`` (no ``<POSE>``),
``gt_joints`` a list of ``(24, 3)`` tensors in which the ``--group`` completions of one prompt
share one object. Methods (each the full call: list handling, stacking, FK, MPJPE, reward,
list out):

* ``posrft``: ``rewards.joint.JointReward()`` (the registered ``joint``): component-major
  Gram-Schmidt (:mod:`rewards.body_batch`) + level-wise FK (:class:`posrft.body.JointFK`);
* ``posrft_roma``: identical, joints from :func:`posrft.body.pose.pose_to_joints` (6D via
  ``roma.special_gramschmidt``, the reference path);
* ``smplx_rigid``: identical, joints from ``smplx.lbs.batch_rigid_transform`` (same 6D
  conversion as ``posrft``, so the two differ by the FK only);
* ``smplx_forward``: identical, joints from the full smplx SMPL forward (``BodyModel.forward``,
  vertices not returned; smplx still skins the mesh internally), on a smaller batch.

Timings are medians of ``--repeats`` runs after ``--warmup``, methods interleaved.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/reward_speed.py --batch 4096

Prints readable lines, then as its last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--group", type=int, default=8,
                    help="completions per prompt (they share one gt object)")  # fmt: skip
    ap.add_argument("--none-frac", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--smplx-forward-batch", type=int, default=512,
                    help="batch of the (slow) full smplx forward; rates are per pose")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import roma
    import torch
    from smplx.lbs import batch_rigid_transform

    from posrft.body.formats import SMPL24_PARENTS
    from posrft.body.model import BodyModel
    from posrft.body.pose import pose_to_joints
    from posrft.body.rotations import rotmat_to_pose6d
    from posrft.body.standin import standin_rest_joints
    from posrft.eval.metrics import mpjpe
    from rewards.body_batch import pose6d_to_rotmat_batched, posed_joints
    from rewards.columns import scatter, stack_column, stack_poses
    from rewards.joint import JointReward

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    reward = JointReward()
    rest = torch.as_tensor(standin_rest_joints(), dtype=torch.float32)
    parents = torch.tensor(SMPL24_PARENTS)
    body = BodyModel("smpl")

    def make_batch(n: int):
        prompts = n // args.group + 1
        rot = roma.random_rotmat((prompts, 22), generator=gen) @ roma.rotvec_to_rotmat(
            0.3 * torch.randn(prompts, 22, 3, generator=gen)
        )
        gt_pose = rotmat_to_pose6d(rot)
        gt_rows = [j for j in posed_joints(gt_pose)]  # one (24, 3) tensor per prompt
        noisy = gt_pose.repeat_interleave(args.group, 0)[:n]
        noisy = noisy + 0.05 * torch.randn(n, 132, generator=gen)
        drop = torch.rand(n, generator=gen) < args.none_frac
        poses = [None if d else p for p, d in zip(noisy, drop.tolist())]
        gts = [gt_rows[i // args.group] for i in range(n)]
        return ["prompt"] * n, ["completion <POSE>"] * n, poses, gts

    def with_fk(fk):
        """The joint reward with its FK swapped for ``fk(pose6d (V, 132)) -> (V, 24, 3)``."""

        @torch.no_grad()
        def call(prompts, completions, poses, gt_joints):
            n = len(poses)
            rows, pose6d = stack_poses("joint", poses, n)
            gt = stack_column("joint", "gt_joints", gt_joints, rows, (24, 3))
            return scatter(n, rows, reward.score(mpjpe(fk(pose6d), gt, "pelvis")))

        return call

    def smplx_rigid(pose6d):
        rot = pose6d_to_rotmat_batched(pose6d, 24)
        rest_b = rest.expand(rot.shape[0], 24, 3)
        return batch_rigid_transform(rot, rest_b, parents, dtype=rot.dtype)[0]

    def smplx_forward(pose6d):
        rot = pose6d_to_rotmat_batched(pose6d, 24)
        return body(rot[:, :1], rot[:, 1:]).joints

    big = make_batch(args.batch)
    small = make_batch(args.smplx_forward_batch)
    methods = {
        "posrft": (lambda: reward(prompts=big[0], completions=big[1], poses=big[2],
                                  gt_joints=big[3]), args.batch),  # fmt: skip
        "posrft_roma": (lambda: with_fk(pose_to_joints(None))(*big), args.batch),
        "smplx_rigid": (lambda: with_fk(smplx_rigid)(*big), args.batch),
        "smplx_forward": (lambda: with_fk(smplx_forward)(*small), args.smplx_forward_batch),
    }
    # the three agree on the same batch
    ref = methods["posrft"][0]()
    alt = with_fk(smplx_rigid)(*big)
    diff = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(ref, alt) if a is not None)
    fwd_small = with_fk(smplx_forward)(*small)
    ours_small = reward(prompts=small[0], completions=small[1], poses=small[2], gt_joints=small[3])
    diff = max(diff, max(abs(a - b) / max(abs(a), 1e-9)
                         for a, b in zip(ours_small, fwd_small) if a is not None))  # fmt: skip

    # where the time goes inside the posrft reward
    def stage_times():
        n = len(big[2])
        t0 = time.perf_counter()
        rows, pose6d = stack_poses("joint", big[2], n)
        gt = stack_column("joint", "gt_joints", big[3], rows, (24, 3))
        t1 = time.perf_counter()
        with torch.no_grad():
            joints = posed_joints(pose6d)
            t2 = time.perf_counter()
            r = reward.score(mpjpe(joints, gt, "pelvis"))
        t3 = time.perf_counter()
        scatter(n, rows, r)
        t4 = time.perf_counter()
        return {"inputs": t1 - t0, "fk": t2 - t1, "mpjpe_reward": t3 - t2, "outputs": t4 - t3}

    for _ in range(args.warmup):
        for fn, _n in methods.values():
            fn()
    times = {k: [] for k in methods}
    stages = []
    for _ in range(args.repeats):
        for name, (fn, _n) in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        stages.append(stage_times())
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: methods[k][1] / med[k] for k in methods}
    stage_med = {k: statistics.median(s[k] for s in stages) * 1e3 for k in stages[0]}

    print(f"batch {args.batch} (smplx forward: {args.smplx_forward_batch}), group {args.group}, "
          f"{args.none_frac:.0%} None, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}")  # fmt: skip
    for name in methods:
        print(f"{name:14s} {med[name] * 1e3:9.3f} ms/call {rate[name]:12.0f} poses/s")
    print("posrft stages (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in stage_med.items()))
    print(f"max relative reward difference between methods: {diff:.1e}")
    print(json.dumps({
        "joint_reward_poses_per_s": round(rate["posrft"], 1),
        "smplx_joint_reward_poses_per_s": round(rate["smplx_rigid"], 1),
        "smplx_forward_joint_reward_poses_per_s": round(rate["smplx_forward"], 1),
        "roma_path_joint_reward_poses_per_s": round(rate["posrft_roma"], 1),
        "ratio": round(rate["posrft"] / rate["smplx_rigid"], 3),
        "ratio_vs_smplx_forward": round(rate["posrft"] / rate["smplx_forward"], 3),
        "stages_ms": {k: round(v, 3) for k, v in stage_med.items()},
        "max_rel_diff": diff,
        "batch": args.batch, "group": args.group, "none_frac": args.none_frac,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "torch": torch.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
