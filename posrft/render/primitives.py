"""Gaussian primitives of a skeleton: fixed layout from the bone list, skinned to the joints.

A format with ``J`` joints and bones ``(a_k, b_k)`` gets ``N = J + sum_k n_k`` primitives: one
per joint, then ``n_k`` interior samples on bone ``k`` at ``t = i / (n_k + 1)``, ``i = 1..n_k``.
Each primitive ``p`` has fixed endpoint joints ``(a_p, b_p)`` and blend ``t_p`` (joints use
``a = b``, ``t = 0``) and is skinned by linear blending (the geometry follows the skeleton):

    mu_p = (1 - t_p) X[a_p] + t_p X[b_p]

Covariances (scales set from bone lengths; ``L_k = |v_k|`` with ``v_k = X[b_k] - X[a_k]``,
``Lbar`` = mean bone length of that skeleton in that frame, ``P_k = v_k v_k^T / (L_k^2 + eps^2)``
the projector on the bone direction):

    joint:        Sigma = (s_joint Lbar)^2 I                                     (isotropic)
    bone sample:  Sigma = across_k^2 (I - P_k) + along_k^2 P_k
                  across_k = s_across min(Lbar, L_k)
                  along_k  = max(s_along L_k / (n_k + 1), 1.25 across_k)

so a bone sample's long axis is its bone (``s_along`` times the sample spacing, never shorter
than 1.25x its width: anisotropic even on short bones) and it is thin across the bone, thinner
still on short bones (hand tips).  All of it is (piecewise) differentiable in the joints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from posrft.body.formats import SkeletonFormat

_EPS_LEN = 1e-4  # metres; keeps P_k finite (and its gradient bounded) for a zero-length bone


@dataclass(frozen=True)
class PrimitiveLayout:
    """Fixed primitive geometry of one format (all tensors ``(N,)``)."""

    joint_a: torch.Tensor  # long
    joint_b: torch.Tensor  # long
    t: torch.Tensor  # float64 blend parameter in [0, 1)
    bone: torch.Tensor  # long, bone index, -1 for joint primitives
    samples: torch.Tensor  # long, samples on that primitive's bone (0 for joints)
    num_joints: int
    bones: tuple[tuple[int, int], ...]

    @property
    def num_primitives(self) -> int:
        return int(self.t.numel())

    @property
    def is_joint(self) -> torch.Tensor:
        return self.bone < 0


def samples_per_bone_counts(
    fmt: SkeletonFormat,
    samples_per_bone: int | str = 10,
    density: float = 40.0,
    reference_joints: torch.Tensor | None = None,
) -> list[int]:
    """Samples on each bone: a constant, or ``"length"``: ``max(1, round(density * L_k))``.

    ``"length"`` needs ``reference_joints (J, 3)`` in metres (e.g. a rest pose of the format)
    because the layout, and therefore the learnable per-primitive features, must not change
    from clip to clip.  ``density`` is in samples per metre.
    """
    if isinstance(samples_per_bone, str):
        if samples_per_bone != "length":
            raise ValueError(
                f"samples_per_bone must be an int >= 0 or 'length', got {samples_per_bone!r}"
            )
        if reference_joints is None:
            raise ValueError(
                "samples_per_bone='length' needs reference_joints (J, 3) in metres to fix the "
                "bone lengths of the layout"
            )
        if density <= 0:
            raise ValueError(f"density must be > 0 samples per metre, got {density}")
        ref = torch.as_tensor(reference_joints, dtype=torch.float64)
        fmt.check_joints(ref, "reference_joints")
        if ref.ndim != 2 or not torch.isfinite(ref).all():
            raise ValueError("reference_joints must be one finite pose shaped (J, 3)")
        return [max(1, round(density * float((ref[b] - ref[a]).norm()))) for a, b in fmt.bones]
    if int(samples_per_bone) != samples_per_bone or samples_per_bone < 0:
        raise ValueError(
            f"samples_per_bone must be an int >= 0 or 'length', got {samples_per_bone!r}"
        )
    return [int(samples_per_bone)] * len(fmt.bones)


def build_layout(fmt: SkeletonFormat, counts: Sequence[int]) -> PrimitiveLayout:
    """The primitive layout for ``fmt`` with ``counts[k]`` samples on bone ``k``."""
    if len(counts) != len(fmt.bones):
        raise ValueError(
            f"counts has {len(counts)} entries, expected one per bone ({len(fmt.bones)})"
        )
    J = fmt.num_joints
    a = list(range(J))
    b = list(range(J))
    t = [0.0] * J
    bone = [-1] * J
    samples = [0] * J
    for k, ((ja, jb), n) in enumerate(zip(fmt.bones, counts)):
        for i in range(1, n + 1):
            a.append(ja)
            b.append(jb)
            t.append(i / (n + 1))
            bone.append(k)
            samples.append(n)
    long = torch.long
    return PrimitiveLayout(
        joint_a=torch.tensor(a, dtype=long),
        joint_b=torch.tensor(b, dtype=long),
        t=torch.tensor(t, dtype=torch.float64),
        bone=torch.tensor(bone, dtype=long),
        samples=torch.tensor(samples, dtype=long),
        num_joints=J,
        bones=tuple(fmt.bones),
    )


def mean_bone_length(joints: torch.Tensor, bones: Sequence[tuple[int, int]], default: float = 0.25):
    """``Lbar``: mean bone length ``(...,)`` of joints ``(..., J, 3)`` (``default`` if no bones)."""
    if not bones:
        return joints.new_full(joints.shape[:-2], default)
    ia = torch.tensor([a for a, _ in bones], device=joints.device)
    ib = torch.tensor([b for _, b in bones], device=joints.device)
    v = joints[..., ib, :] - joints[..., ia, :]
    return torch.sqrt((v * v).sum(-1) + _EPS_LEN**2).mean(-1)


def skin(
    joints: torch.Tensor, layout: PrimitiveLayout, s_joint, s_along, s_across
) -> tuple[torch.Tensor, torch.Tensor]:
    """Primitive means ``(..., N, 3)`` and covariances ``(..., N, 3, 3)`` of joints ``(..., J, 3)``.

    ``s_joint``, ``s_along``, ``s_across`` are scalars or 0-d tensors (learnable scale ratios).
    """
    dt = joints.dtype
    t = layout.t.to(dt)[:, None]
    xa = joints[..., layout.joint_a, :]
    xb = joints[..., layout.joint_b, :]
    means = xa + t * (xb - xa)

    lbar = mean_bone_length(joints, layout.bones)[..., None, None, None]  # (..., 1, 1, 1)
    eye = torch.eye(3, dtype=dt, device=joints.device)
    v = xb - xa  # zero for joint primitives
    sq = (v * v).sum(-1)[..., None, None] + _EPS_LEN**2
    proj = v.unsqueeze(-1) * v.unsqueeze(-2) / sq
    length = torch.sqrt(sq)
    n1 = (layout.samples.to(dt) + 1.0)[:, None, None]  # (N, 1, 1)
    across = s_across * torch.minimum(lbar, length)
    along = torch.maximum(s_along * length / n1, 1.25 * across)
    cov_bone = across**2 * (eye - proj) + along**2 * proj
    cov_joint = (s_joint * lbar) ** 2 * eye
    is_joint = layout.is_joint[:, None, None]
    cov = torch.where(is_joint, cov_joint.expand_as(cov_bone), cov_bone)
    return means, cov
