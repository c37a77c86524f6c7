"""Per-joint credit: reward-to-go along the kinematic tree for pose rewards that sum over joints.

A pose is a list of joint rotations θ_k (6D each) sampled independently,
``θ_k ~ N(μ_k, σ_k²)``. Joint ``j``'s position depends only on the rotations of its strict
ancestors, ``anc(j)``. For a reward that is a sum over joints, ``R = Σ_j r_j`` with ``r_j`` a
function of joint ``j``'s position only, the terms of joints that rotation ``k`` does not move
are independent of ``θ_k``'s noise, so they contribute nothing but variance to its policy
gradient. Crediting ``θ_k`` with only the joints it moves,

    C_k = Σ_{j : k ∈ anc(j)} r_j  +  R_scalar ,

gives an unbiased estimator with less variance (the tree analogue of reward-to-go in time);
``R_scalar`` is the sum of the pose rewards that do not decompose, credited to every rotation.
The root (global orientation) moves every joint but itself, so it is credited with everything.
A rotation that moves no joint (a foot, the head) is credited with ``R_scalar`` only: joint
positions carry no information about it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from posrft.body.formats import SMPL24_PARENTS


def moved_joints(parents: Sequence[int], num_rotations: int) -> Tensor:
    """``M`` ``(num_rotations, len(parents))`` float: ``M[k, j] = 1`` when rotation ``k`` moves
    joint ``j``, i.e. ``k`` is a strict ancestor of ``j`` (parents[root] = -1)."""
    num_joints = len(parents)
    if not 1 <= num_rotations <= num_joints:
        raise ValueError(f"num_rotations must be in [1, {num_joints}], got {num_rotations}")
    m = torch.zeros(num_rotations, num_joints)
    for j in range(num_joints):
        k = parents[j]
        while k >= 0:
            if k < num_rotations:
                m[k, j] = 1.0
            k = parents[k]
    return m


def joint_credit(per_joint: Tensor | None, scalar: Tensor | None, num_rotations: int,
                 parents: Sequence[int] = SMPL24_PARENTS) -> Tensor:
    """Credit ``(N, num_rotations)`` of each rotation (module docstring).

    ``per_joint``: ``(N, J)`` summed terms of the decomposable pose rewards (NaN rows: none
    applies); ``scalar``: ``(N,)`` the other pose rewards (NaN: none applies). A row is NaN only
    where neither applies. Rows follow the rotation order of the pose vector (global orientation
    first, then SMPL joints 1, 2, ...).
    """
    if per_joint is None and scalar is None:
        raise ValueError("joint_credit needs per-joint or scalar rewards")
    n = (per_joint if per_joint is not None else scalar).shape[0]
    out = torch.zeros(n, num_rotations, dtype=torch.float64)
    present = torch.zeros(n, dtype=torch.bool)
    if per_joint is not None:
        if per_joint.shape[1] != len(parents):
            raise ValueError(f"per-joint rewards have {per_joint.shape[1]} joints, the tree {len(parents)}")
        ok = ~torch.isnan(per_joint).any(1)
        terms = torch.where(ok[:, None], per_joint.double(), torch.zeros_like(per_joint, dtype=torch.float64))
        out += terms @ moved_joints(parents, num_rotations).double().T
        present |= ok
    if scalar is not None:
        ok = ~torch.isnan(scalar)
        out += torch.where(ok, scalar.double(), torch.zeros_like(scalar, dtype=torch.float64))[:, None]
        present |= ok
    return torch.where(present[:, None], out, torch.full_like(out, float("nan")))
