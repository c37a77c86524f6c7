"""Rotation representations used across posrft: thin, shape-checked wrappers over ``roma``.

Every conversion is delegated to ``roma``; this module only fixes the conventions and validates
shapes so that a wrong tensor fails here with a readable message instead of deep inside a
reshape.

Conventions
-----------
- Rotation matrices act on column vectors: ``x' = R @ x``. Shape ``(..., 3, 3)``.
- Axis-angle (rotation vector): ``theta * axis``, shape ``(..., 3)``, as in SMPL poses.
- Quaternions: unit quaternions in **XYZW** order (``roma``'s convention; scalar last),
  shape ``(..., 4)``. ``q`` and ``-q`` are the same rotation.
- 6D (Zhou et al., "On the Continuity of Rotation Representations", CVPR 2019): the first two
  columns of ``R``, flattened row-major over the 3x2 block::

      rot6d = R[..., :, :2].reshape(..., 6) = [R00, R01, R10, R11, R20, R21]

  and back by Gram-Schmidt on those two columns (``roma.special_gramschmidt``), which maps any
  non-degenerate 6-vector to a proper rotation (orthonormal, det +1).

Whole-body poses are flat per sample, joint-major: an SMPL pose of ``J`` joints is
``(..., J*3)`` in axis-angle or ``(..., J*6)`` in 6D, joint ``j`` at ``[j*k:(j+1)*k]``.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_rotmat",
    "rotmat_to_axis_angle",
    "quat_to_rotmat",
    "rotmat_to_quat",
    "rot6d_to_rotmat",
    "rotmat_to_rot6d",
    "pose6d_to_rotmat",
    "rotmat_to_pose6d",
    "pose6d_to_axis_angle",
    "axis_angle_to_pose6d",
    "axis_angle_pose_to_rotmat",
    "rotmat_to_axis_angle_pose",
    "identity_pose6d",
]


def _check(x: Tensor, trailing: tuple[int, ...], name: str, what: str) -> None:
    """Raise a clear error unless ``x`` is a floating tensor ending in ``trailing``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor ({what}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor ({what}), got {x.dtype}")
    k = len(trailing)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != trailing:
        dims = ", ".join(str(d) for d in trailing)
        raise ValueError(f"{name}: expected shape (..., {dims}) ({what}), got {tuple(x.shape)}")


def _joints_in(x: Tensor, per_joint: int, name: str, num_joints: int | None) -> int:
    """Number of joints in a flat ``(..., J*per_joint)`` pose, checked against ``num_joints``."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError(f"{name}: expected a floating-point tensor of shape (..., J*{per_joint})")
    n = x.shape[-1]
    if n % per_joint != 0:
        raise ValueError(
            f"{name}: last dimension {n} is not a multiple of {per_joint} "
            f"(expected (..., J*{per_joint}))"
        )
    j = n // per_joint
    if num_joints is not None and j != num_joints:
        raise ValueError(
            f"{name}: expected {num_joints} joints (last dim {num_joints * per_joint}), "
            f"got {j} (last dim {n})"
        )
    return j


# ----------------------------------------------------------------------------- single rotations


def axis_angle_to_rotmat(axis_angle: Tensor) -> Tensor:
    """Rodrigues: ``(..., 3)`` rotation vectors -> ``(..., 3, 3)`` matrices (``roma``)."""
    _check(axis_angle, (3,), "axis_angle", "rotation vectors")
    return roma.rotvec_to_rotmat(axis_angle)


def rotmat_to_axis_angle(rotmat: Tensor) -> Tensor:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 3)`` rotation vectors, angle in [0, pi]."""
    _check(rotmat, (3, 3), "rotmat", "rotation matrices")
    return roma.rotmat_to_rotvec(rotmat)


def quat_to_rotmat(quat: Tensor) -> Tensor:
    """``(..., 4)`` unit quaternions, **XYZW** (scalar last) -> ``(..., 3, 3)``.

    The input is not re-normalised (as in ``roma.unitquat_to_rotmat``); pass unit quaternions.
    """
    _check(quat, (4,), "quat", "unit quaternions, XYZW")
    return roma.unitquat_to_rotmat(quat)


def rotmat_to_quat(rotmat: Tensor) -> Tensor:
    """``(..., 3, 3)`` -> ``(..., 4)`` unit quaternions, **XYZW** (scalar last)."""
    _check(rotmat, (3, 3), "rotmat", "rotation matrices")
    return roma.rotmat_to_unitquat(rotmat)


def rot6d_to_rotmat(rot6d: Tensor) -> Tensor:
    """``(..., 6)`` 6D -> ``(..., 3, 3)`` by Gram-Schmidt on the two stored columns.

    ``rot6d`` is read as the 3x2 block ``[[a0, b0], [a1, b1], [a2, b2]]`` (row-major), so column
    ``a`` gives ``R[:, 0] = a / |a|`` and ``b`` (minus its ``a`` component) gives ``R[:, 1]``;
    ``R[:, 2] = R[:, 0] x R[:, 1]``. Degenerate inputs (``a`` = 0 or ``b`` parallel to ``a``)
    give NaN, as in ``roma``.
    """
    _check(rot6d, (6,), "rot6d", "6D rotations")
    return roma.special_gramschmidt(rot6d.reshape(*rot6d.shape[:-1], 3, 2))


def rotmat_to_rot6d(rotmat: Tensor) -> Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: ``R[..., :, :2]`` flattened row-major."""
    _check(rotmat, (3, 3), "rotmat", "rotation matrices")
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


# ----------------------------------------------------------------------------- whole poses


def pose6d_to_rotmat(pose6d: Tensor, num_joints: int | None = None) -> Tensor:
    """Flat 6D pose ``(..., J*6)`` -> per-joint matrices ``(..., J, 3, 3)``."""
    j = _joints_in(pose6d, 6, "pose6d", num_joints)
    return rot6d_to_rotmat(pose6d.reshape(*pose6d.shape[:-1], j, 6))


def rotmat_to_pose6d(rotmats: Tensor) -> Tensor:
    """Per-joint matrices ``(..., J, 3, 3)`` -> flat 6D pose ``(..., J*6)``."""
    _check(rotmats, (3, 3), "rotmats", "per-joint rotation matrices (..., J, 3, 3)")
    if rotmats.ndim < 3:
        raise ValueError(f"rotmats: expected (..., J, 3, 3), got {tuple(rotmats.shape)}")
    return rotmat_to_rot6d(rotmats).reshape(*rotmats.shape[:-3], rotmats.shape[-3] * 6)


def axis_angle_pose_to_rotmat(pose: Tensor, num_joints: int | None = None) -> Tensor:
    """Flat axis-angle pose ``(..., J*3)`` (SMPL layout) -> ``(..., J, 3, 3)``."""
    j = _joints_in(pose, 3, "pose", num_joints)
    return roma.rotvec_to_rotmat(pose.reshape(*pose.shape[:-1], j, 3))


def rotmat_to_axis_angle_pose(rotmats: Tensor) -> Tensor:
    """``(..., J, 3, 3)`` -> flat axis-angle pose ``(..., J*3)``."""
    _check(rotmats, (3, 3), "rotmats", "per-joint rotation matrices (..., J, 3, 3)")
    if rotmats.ndim < 3:
        raise ValueError(f"rotmats: expected (..., J, 3, 3), got {tuple(rotmats.shape)}")
    return roma.rotmat_to_rotvec(rotmats).reshape(*rotmats.shape[:-3], rotmats.shape[-3] * 3)


def pose6d_to_axis_angle(pose6d: Tensor, num_joints: int | None = None) -> Tensor:
    """Flat 6D pose ``(..., J*6)`` -> flat axis-angle pose ``(..., J*3)``."""
    return rotmat_to_axis_angle_pose(pose6d_to_rotmat(pose6d, num_joints))


def axis_angle_to_pose6d(pose: Tensor, num_joints: int | None = None) -> Tensor:
    """Flat axis-angle pose ``(..., J*3)`` -> flat 6D pose ``(..., J*6)``."""
    return rotmat_to_pose6d(axis_angle_pose_to_rotmat(pose, num_joints))


def identity_pose6d(num_joints: int, *batch: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The rest pose in 6D: ``(*batch, J*6)`` made of ``[1, 0, 0, 1, 0, 0]`` per joint."""
    one = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=dtype)
    return one.repeat(num_joints).expand(*batch, num_joints * 6).clone()
