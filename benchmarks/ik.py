"""Inverse kinematics: round trip, rotation error, other skeletons, speed (posrft.body.ik).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/ik.py [--n 1000]

* Round trip on prior poses (second library, any heading): SMPL-24 joints -> :func:`fit_smpl`
  -> FK; MPJPE (mm) and rotation error (degrees; :func:`posrft.data.ik.rotation_errors`):
  *observable* = the full local rotation for joints with several children, the swing (twist
  about the joint's own bone removed) for joints with one, leaves excluded; also the full
  error and the twist error per joint.
* The same poses as H3.6M-17, NTU-25 and COCO-17 joints (same skeleton): residual and SMPL
  joint error.
* Joints of other skeletons: (a) every bone 0.85-1.15 x as long (per-bone scale can follow);
  (b) bone directions changed too (8 % of each bone's length): the residual is what is left;
  (c) procedural NTU-25 action clips of performers 0.88-1.12 x the stand-in with 0-8 mm
  joint noise.
* Speed (one thread, poses/s of CPU time) and a baseline in the same run: Adam (lr 0.01) on the same
  objective (positions + the same prior) through posrft's FK with autograd, from the same
  analytic initialisation, on the H3.6M-17 poses; the number of steps and the time it takes
  to reach the LM solution's mean residual (or its residual after 400 steps).

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import roma
import torch

from posrft.body.fk import fk_joints
from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS, get_format
from posrft.body.ik_init import initialise
from posrft.body.rotations import rot6d_to_rotmat, rotmat_to_pose6d
from posrft.data import ik
from posrft.data.actions import make_clips, subject_for
from posrft.data.limits import within_limits
from posrft.data.prior import sample_poses
from posrft.data.skeleton import rest_joints


def _fk(rot: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    return fk_joints(rot, rest, SMPL24_PARENTS)


def _chain(bones: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Rest joints (..., 24, 3) from bone vectors (..., 24, 3) and the root position (3,)."""
    out = [root.expand_as(bones[..., 0, :])]
    for j in range(1, 24):
        out.append(out[SMPL24_PARENTS[j]] + bones[..., j, :])
    return torch.stack(out, -2)


def _timed(fn):
    """``(result, CPU seconds of this process)``: CPU time, so that other jobs on a shared
    machine do not count (the baseline ratio is measured the same way)."""
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def adam_baseline(y: torch.Tensor, fmt: str, target_mm: float, steps: int = 400) -> dict:
    """Adam on 6D rotations + translation + log scale through the FK (autograd), same init."""
    f = get_format(fmt)
    w = torch.as_tensor(f.smpl_matrix(), dtype=torch.float64)
    rest = rest_joints(torch.float64)
    conf = torch.ones(y.shape[:2], dtype=torch.float64)
    scale0 = torch.ones(len(y), dtype=torch.float64)
    rot0, t0 = initialise(y, conf, w, rest, scale0, ik.HINGES)
    r6 = rotmat_to_pose6d(rot0).reshape(len(y), 24, 6).clone().requires_grad_(True)
    transl = t0.clone().requires_grad_(True)
    log_s = torch.zeros(len(y), 24, dtype=torch.float64, requires_grad=True)
    prior = ik.anatomical_prior()
    opt = torch.optim.Adam([r6, transl, log_s], lr=0.01)
    par = torch.tensor(SMPL24_PARENTS).clamp_min(0)
    bones = rest - rest[par]
    start = time.process_time()
    reached = None
    for step in range(1, steps + 1):
        rot = rot6d_to_rotmat(r6)
        scaled = _chain(bones * log_s[..., None].exp(), rest[0])
        x = fk_joints(rot, scaled, SMPL24_PARENTS) + transl[:, None]
        fit = torch.einsum("ik,bkc->bic", w, x)
        res = (fit - y).norm(dim=-1)
        loss = ((fit - y) ** 2).sum() + (prior(rot) ** 2).sum() + 1e-4 * (log_s[:, 1:] ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mm = float(res.detach().mean()) * 1000
        if reached is None and mm <= target_mm:
            reached = (step, time.process_time() - start)
            break
    elapsed = time.process_time() - start
    return {"steps": reached[0] if reached else steps, "seconds": reached[1] if reached else elapsed,
            "reached": reached is not None, "final_mm": mm}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {}
    s = sample_poses(args.n, seed=101, yaw_deg=180.0)
    rot = roma.rotvec_to_rotmat(torch.from_numpy(s.pose).double().reshape(-1, 24, 3))
    y = torch.from_numpy(s.joints).double()
    ik.fit_smpl(y[:16])  # warm-up
    res, dt = _timed(lambda: ik.fit_smpl(y))
    back = _fk(res.rotmats.double(), rest_joints(torch.float64)) + res.transl.double()[:, None]
    mm = (back - y).norm(dim=-1).mean(-1) * 1000
    errs = ik.rotation_errors(res.rotmats, rot)
    body = slice(0, 22)
    within = float(within_limits(roma.rotmat_to_rotvec(res.rotmats).reshape(-1, 72), 1.0)
                   .float().mean())  # fmt: skip
    out["round_trip"] = {
        "poses": args.n, "fk_mpjpe_mm_mean": float(mm.mean()), "fk_mpjpe_mm_max": float(mm.max()),
        "rot_err_observable_deg": float(errs["observable"][:, body].nanmean()),
        "rot_err_full_deg": float(errs["full"][:, body].mean()),
        "twist_err_deg": float(errs["twist"][:, body].mean()), "within_limits": within,
        "poses_per_s": args.n / dt, "iterations": res.iterations,
    }  # fmt: skip
    print(f"round trip on {args.n} prior poses: FK(IK(x)) MPJPE {mm.mean():.4f} mm mean, "
          f"{mm.max():.4f} max; rotation error over observable parts "
          f"{out['round_trip']['rot_err_observable_deg']:.2f} deg, full "
          f"{out['round_trip']['rot_err_full_deg']:.2f} deg (twist about the own bone "
          f"{out['round_trip']['twist_err_deg']:.2f}); within limits {within:.1%}; "
          f"{args.n / dt:.0f} poses/s (1 thread)")  # fmt: skip
    print("per joint (observable / full / twist, degrees):")
    for j in range(22):
        o = errs["observable"][:, j]
        print(f"  {SMPL24_JOINTS[j]:15s} {float(o.nanmean()) if not o.isnan().all() else float('nan'):6.2f}"
              f" {float(errs['full'][:, j].mean()):6.2f} {float(errs['twist'][:, j].mean()):6.2f}")
    out["per_joint_full_deg"] = {SMPL24_JOINTS[j]: float(errs["full"][:, j].mean()) for j in range(22)}

    out["formats"] = {}
    for fmt in ("h36m17", "ntu25", "coco17"):
        yf = get_format(fmt).from_smpl(y)
        r, dt = _timed(lambda yf=yf, fmt=fmt: ik.fit_smpl(yf, fmt))
        smpl_err = float((r.joints.double() - y).norm(dim=-1).mean()) * 1000
        out["formats"][fmt] = {"residual_mm_mean": float(r.mpjpe.mean()) * 1000,
                               "residual_mm_max": float(r.mpjpe.max()) * 1000,
                               "smpl_joint_err_mm": smpl_err, "poses_per_s": len(y) / dt}
        print(f"{fmt}: residual {out['formats'][fmt]['residual_mm_mean']:.3f} mm mean, "
              f"{out['formats'][fmt]['residual_mm_max']:.3f} max; SMPL joints off by "
              f"{smpl_err:.1f} mm (joints the format lacks); {len(y) / dt:.0f} poses/s")  # fmt: skip

    g = torch.Generator().manual_seed(5)
    rest = rest_joints(torch.float64)
    par = torch.tensor(SMPL24_PARENTS).clamp_min(0)
    bones = rest - rest[par]
    factor = 0.85 + 0.3 * torch.rand(24, generator=g, dtype=torch.float64)
    longer = _chain(bones * factor[:, None], rest[0])
    bent = bones + 0.08 * bones.norm(dim=-1, keepdim=True) * torch.randn(24, 3, generator=g,
                                                                        dtype=torch.float64)
    bent[0] = 0
    other = _chain(bent, rest[0])
    out["other_skeletons"] = {}
    for name, skel in (("bone_lengths", longer), ("bone_directions", other)):
        yy = _fk(rot[:300], skel.expand(300, 24, 3))
        row = {}
        for mode in ("per_bone", "none"):
            r = ik.fit_smpl(yy, bone_scale=mode)
            row[mode] = {"residual_mm_mean": float(r.mpjpe.mean()) * 1000,
                         "residual_mm_max": float(r.mpjpe.max()) * 1000}
        out["other_skeletons"][name] = row
        print(f"other skeleton ({name}): residual per-bone scale "
              f"{row['per_bone']['residual_mm_mean']:.2f} mm mean "
              f"({row['per_bone']['residual_mm_max']:.1f} max); stand-in bones as is "
              f"{row['none']['residual_mm_mean']:.1f} mm")  # fmt: skip
    subjects = [subject_for(9, k) for k in range(6)]
    labels = ["jump up", "squat", "bow", "kick left leg", "sit down", "walk in place"]
    sub, lab, seeds = [], [], []
    for k, subj in enumerate(subjects):
        for i, name in enumerate(labels):
            sub.append(subj), lab.append(name), seeds.append(1000 * k + i)
    clips = make_clips(lab, sub, seeds, fmt="ntu25", num_frames=24).reshape(-1, 25, 3)
    r, dt = _timed(lambda: ik.fit_smpl(clips, "ntu25"))
    scale = r.bone_scale[:, 1:].median(1).values
    out["ntu_actions"] = {"frames": len(clips), "residual_mm_mean": float(r.mpjpe.mean()) * 1000,
                          "residual_mm_p95": float(r.mpjpe.quantile(0.95)) * 1000,
                          "poses_per_s": len(clips) / dt}  # fmt: skip
    print(f"NTU-25 action clips ({len(clips)} frames, performers 0.88-1.12 x, 0-8 mm noise): "
          f"residual {out['ntu_actions']['residual_mm_mean']:.1f} mm mean, "
          f"{out['ntu_actions']['residual_mm_p95']:.1f} p95; bone scale median "
          f"{float(scale.min()):.2f}-{float(scale.max()):.2f}")  # fmt: skip

    yh = get_format("h36m17").from_smpl(y[:200])
    r, dt = _timed(lambda: ik.fit_smpl(yh, "h36m17"))
    target = float(r.mpjpe.mean()) * 1000
    base = adam_baseline(yh, "h36m17", target_mm=max(target, 0.05))
    out["speed"] = {"lm_seconds": dt, "lm_residual_mm": target, "adam": base,
                    "speedup": base["seconds"] / dt}  # fmt: skip
    print(f"speed on 200 H3.6M-17 poses: LM {dt:.2f} s to {target:.3f} mm; Adam through the FK "
          f"{base['seconds']:.1f} s ({base['steps']} steps, reached={base['reached']}, "
          f"{base['final_mm']:.3f} mm): {base['seconds'] / dt:.1f}x")  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
