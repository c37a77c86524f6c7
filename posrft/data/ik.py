"""SMPL inverse kinematics with anatomy, its file command and its rotation-error metric.

:func:`fit_smpl` is :func:`posrft.body.ik.inverse_kinematics` on the stand-in skeleton with the
joint limits of :mod:`posrft.data.limits` as its prior and the knee / elbow hinges. The prior
is a per-joint residual of the anatomical coordinates ``c_j`` of each local rotation, in
metres-equivalent units of the position residual:

    r_j = [ w_lim * (relu(lo_j - c_j) + relu(c_j - hi_j)),  w_neu * c_j / half_range_j ]

``w_lim`` (per radian outside the box) keeps the solution inside the limits; the small
``w_neu`` pulls every coordinate towards the neutral 0 in units of its range. It decides only
what the joints cannot: how a twist about a bone is shared between the bone and its child
(e.g. hip vs. tibial rotation of a straight leg); a rotation the joints do determine moves by
a negligible amount. The root is not penalised. Hinges (flexion axis in the child's frame,
:mod:`posrft.data.limits` signs): knees ``+x``, left elbow ``-y``, right elbow ``+y``.

Rotation error (:func:`rotation_errors`): with joints only, the twist of joint ``j`` about
its own bone (towards its single child) is not observable from that bone's joints, and a
leaf's rotation not at all. The *observable* error of joint ``j`` is therefore the geodesic
error of its local rotation for joints with several children (pelvis, spine3), the error of
its swing (``R_true^T R_est`` with the twist about the rest bone ``J_c - J_j`` removed,
:func:`limits.swing_twist`) for joints with one child, and undefined for leaves (feet, head,
hands).

``posrft data ik IN OUT --format F`` (:func:`ik_file`): ``IN`` is ``.npy`` joints
``(N, J, 3)`` / ``(J, 3)`` or ``.npz`` with ``joints`` (and optionally ``confidence``
``(N, J)``); ``OUT`` (``.npz``, written atomically) holds ``pose6d`` (N, 144), ``pose``
(N, 72) axis-angle, ``transl`` (N, 3), ``bone_scale`` (N, 24), ``smpl_joints`` (N, 24, 3),
``fitted`` (N, J, 3), ``residual`` (N, J) metres and ``mpjpe`` (N,) metres.
"""

from __future__ import annotations

import io
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import roma
import torch
from torch import Tensor

from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS, SkeletonFormat, get_format
from posrft.body.ik import BONE_SCALE_MODES, IKResult, JointPrior, inverse_kinematics
from posrft.data import limits
from posrft.data.prior import single_thread
from posrft.data.skeleton import rest_joints
from posrft.files import atomic_write_bytes

_J = {n: i for i, n in enumerate(SMPL24_JOINTS)}
HINGES: dict[int, tuple[float, float, float]] = {
    _J["left_knee"]: (1.0, 0.0, 0.0),
    _J["right_knee"]: (1.0, 0.0, 0.0),
    _J["left_elbow"]: (0.0, -1.0, 0.0),
    _J["right_elbow"]: (0.0, 1.0, 0.0),
}
LIMIT_WEIGHT = 1.0
NEUTRAL_WEIGHT = 0.002
_CHILDREN = [[c for c, p in enumerate(SMPL24_PARENTS) if p == j] for j in range(24)]


@lru_cache(maxsize=4)
def _boxes(dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    box = limits.limits_rad(dtype)
    lo, hi = box[..., 0], box[..., 1]
    half = ((hi - lo) / 2).clamp_min(1e-3)
    half[0] = float("inf")  # the global orientation is free
    return lo, hi, half


def anatomical_prior(limit_weight: float = LIMIT_WEIGHT,
                     neutral_weight: float = NEUTRAL_WEIGHT) -> JointPrior:  # fmt: skip
    """The per-joint prior of the module docstring: ``(B, 24, 3, 3) -> (B, 24, 6)``."""

    def prior(rotmats: Tensor) -> Tensor:
        c = limits.coords_from_rotmat(rotmats)
        lo, hi, half = (t.to(c) for t in _boxes(c.dtype))
        out = limit_weight * (torch.relu(lo - c) + torch.relu(c - hi))
        out[:, 0] = 0.0
        return torch.cat([out, neutral_weight * c / half], -1)

    return prior


def fit_smpl(
    joints: Tensor | np.ndarray,
    fmt: str | SkeletonFormat = "smpl24",
    *,
    confidence: Tensor | np.ndarray | None = None,
    bone_scale: str = "per_bone",
    iterations: int = 20,
    limit_weight: float = LIMIT_WEIGHT,
    neutral_weight: float = NEUTRAL_WEIGHT,
    **kw,
) -> IKResult:
    """IK of joints ``(B, J, 3)`` in ``fmt`` on the stand-in skeleton with the anatomical prior
    and hinges (module docstring); other keywords go to :func:`inverse_kinematics`."""
    conf = None if confidence is None else torch.as_tensor(np.asarray(confidence))
    with single_thread():
        return inverse_kinematics(
            torch.as_tensor(np.asarray(joints)), fmt, rest_joints=rest_joints(torch.float64),
            confidence=conf, bone_scale=bone_scale,
            prior=anatomical_prior(limit_weight, neutral_weight), hinges=HINGES,
            iterations=iterations, **kw,
        )  # fmt: skip


def rotation_errors(est: Tensor, true: Tensor) -> dict[str, Tensor]:
    """Per-joint errors in degrees of local rotations ``est`` vs ``true`` (B, 24, 3, 3).

    Returns ``full`` (geodesic), ``swing`` and ``twist`` (about the rest bone to the single
    child; 0 for other joints) and ``observable`` (module docstring; NaN for leaves), each
    (B, 24).
    """
    est, true = est.double(), true.double()
    full = roma.rotmat_geodesic_distance(est, true).rad2deg()
    rel = true.transpose(-1, -2) @ est
    rest = rest_joints(torch.float64)
    swing, twist = full.clone(), torch.zeros_like(full)
    observable = full.clone()
    for j in range(24):
        kids = _CHILDREN[j]
        if not kids:
            observable[:, j] = float("nan")
        elif len(kids) == 1:
            axis = rest[kids[0]] - rest[j]
            axis = axis / axis.norm()
            c = limits.swing_twist(rel[:, j], axis)
            tw = (c * axis).sum(-1)
            twist[:, j] = tw.abs().rad2deg()
            swing[:, j] = (c - tw[:, None] * axis).norm(dim=-1).rad2deg()
            observable[:, j] = swing[:, j]
    return {"full": full, "swing": swing, "twist": twist, "observable": observable}


# ----------------------------------------------------------------------------- files


def _read_joints(path: Path, fmt: SkeletonFormat) -> tuple[np.ndarray, np.ndarray | None]:
    from posrft.data.loaders.common import (
        DatasetFormatError,
        check_array,
        load_npy,
        npz_get,
        open_npz,
    )

    if path.suffix == ".npz":
        with open_npz(path) as data:
            raw = npz_get(data, path, "joints")
            conf = npz_get(data, path, "confidence") if "confidence" in data else None
    elif path.suffix == ".npy":
        raw, conf = load_npy(path), None
    else:
        raise ValueError(f"{path}: expected a .npy array or an .npz archive with key 'joints'")
    joints = np.asarray(raw)
    if joints.ndim == 2:
        joints = joints[None]
    key = "joints" if path.suffix == ".npz" else None
    if joints.ndim != 3 or joints.shape[1:] != (fmt.num_joints, 3):
        raise DatasetFormatError(
            path, f"expected joints shaped (N, {fmt.num_joints}, 3) for format {fmt.name!r}, "
            f"got {joints.shape}", key=key,
        )  # fmt: skip
    joints = check_array(joints, path, key, (None, fmt.num_joints, 3), dtype=np.float64)
    if conf is not None:
        conf = check_array(conf, path, "confidence", (joints.shape[0], fmt.num_joints),
                           dtype=np.float64)  # fmt: skip
    return joints, conf


def ik_file(
    src: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str,
    *,
    bone_scale: str = "per_bone",
    iterations: int = 20,
) -> dict:
    """``posrft data ik``: IK of a joints file into an ``.npz`` (module docstring).

    Returns a summary: ``n``, ``format``, residual mean / median / max in mm, ``poses_per_s``,
    ``within_limits`` (fraction of poses inside the joint limits, 1 degree slack).
    """
    if bone_scale not in BONE_SCALE_MODES:
        raise ValueError(f"bone_scale must be one of {BONE_SCALE_MODES}, got {bone_scale!r}")
    f = get_format(fmt)
    src, out = Path(src), Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"{out}: the output is an .npz archive; name it *.npz")
    joints, conf = _read_joints(src, f)
    t0 = time.perf_counter()
    res = fit_smpl(joints, f, confidence=conf, bone_scale=bone_scale, iterations=iterations)
    dt = time.perf_counter() - t0
    pose = roma.rotmat_to_rotvec(res.rotmats).reshape(-1, 72)
    buf = io.BytesIO()
    np.savez(
        buf, pose6d=res.pose6d.numpy(), pose=pose.numpy(), transl=res.transl.numpy(),
        bone_scale=res.bone_scale.numpy(), smpl_joints=res.joints.numpy(),
        fitted=res.fitted.numpy(), residual=res.residual.numpy(), mpjpe=res.mpjpe.numpy(),
    )  # fmt: skip
    atomic_write_bytes(out, buf.getvalue())
    mm = res.mpjpe.double() * 1000
    n = int(mm.numel())
    return {
        "n": n, "format": f.name, "bone_scale": bone_scale, "out": str(out),
        "residual_mm_mean": float(mm.nanmean()) if n else float("nan"),
        "residual_mm_median": float(mm.nanmedian()) if n else float("nan"),
        "residual_mm_max": float(mm.max()) if n else float("nan"),
        "poses_per_s": n / dt if dt > 0 else float("inf"),
        "within_limits": float(limits.within_limits(pose, tol_deg=1.0).float().mean()) if n else 1.0,
    }  # fmt: skip
