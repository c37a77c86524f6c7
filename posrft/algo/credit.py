"""Credit of each joint rotation: reward-to-go along the kinematic tree, or a counterfactual.

**Per-joint credit** (:func:`joint_credit`), for pose rewards that sum over joints.

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

**Counterfactual credit** (:func:`counterfactual_poses`, :func:`counterfactual_credit`), for any
pose reward: ``C_k = R(θ) − R(θ_{-k}, μ_k)``, the reward minus the reward of the same sample with
rotation ``k`` at its mean.
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


def counterfactual_poses(pose: Tensor, mean: Tensor, rot_dim: int = 6) -> Tensor:
    """Each sampled pose with one rotation put back at the mean, for counterfactual credit.

    ``pose`` ``(N, K, D)`` samples of ``N`` Gaussians with means ``mean`` ``(N, D)``, ``D = R ·
    rot_dim``. Returns ``(N, K·R, D)``: row ``k·R + r`` is sample ``k`` with rotation ``r``'s
    ``rot_dim`` dimensions replaced by the mean's.
    """
    n, k, d = pose.shape
    if mean.shape != (n, d) or d % rot_dim:
        raise ValueError(f"pose {tuple(pose.shape)} and mean {tuple(mean.shape)} must be (N, K, D) "
                         f"and (N, D) with D a multiple of {rot_dim}")
    r = d // rot_dim
    out = pose[:, :, None].expand(n, k, r, d).contiguous().view(n, k, r, r, rot_dim)
    idx = torch.arange(r)
    out[:, :, idx, idx] = mean.reshape(n, 1, r, rot_dim).expand(n, k, r, rot_dim).to(out.dtype)
    return out.view(n, k * r, d)


def counterfactual_credit(total: Tensor, counterfactual: Tensor) -> Tensor:
    """Credit ``(M, R)`` of each rotation: the reward minus the reward with that rotation at its mean,

        C_k = R(θ) − R(θ_{-k}, μ_k).

    ``total`` ``(M,)`` the reward of each sample, ``counterfactual`` ``(M, R)`` of its rows from
    :func:`counterfactual_poses`. ``R(θ_{-k}, μ_k)`` does not depend on ``θ_k``'s noise, which is
    drawn independently of the other rotations', so it is a valid baseline for ``θ_k``'s score
    function and the estimator stays unbiased (a counterfactual baseline, as COMA's for agents).
    It removes what the *other* rotations' noise did to the reward, which per-joint credit
    keeps (a knee is credited with its subtree's terms, and those move with the hip's and the
    root's noise too). It needs no decomposition over joints, so it works for any pose reward,
    and costs one extra reward evaluation per rotation and sample. NaN propagates (a row with no
    reward has no credit).
    """
    if counterfactual.dim() != 2 or counterfactual.shape[0] != total.shape[0]:
        raise ValueError(f"counterfactual rewards {tuple(counterfactual.shape)} must be (M, R) for "
                         f"{total.shape[0]} samples")
    return total[:, None] - counterfactual
