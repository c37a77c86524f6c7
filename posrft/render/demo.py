"""Plausible synthetic SMPL-24 joint clips for demos, benchmarks and tests of the renderer.

A hand-set rest skeleton close to the SMPL neutral template (metres, y up, facing +z, T-pose)
is posed by forward kinematics ``G_j = G_parent(j) R_j``,
``X_j = X_parent(j) + G_parent(j) (X^rest_j - X^rest_parent(j))``, with per-joint rotations from
``roma`` Euler angles.  Motions: ``walk``, ``wave``, ``squat``, ``jacks``.  This is a toy for
pictures and timing: the body model proper lives in :mod:`posrft.body`.
"""

from __future__ import annotations

import math

import roma
import torch

from posrft.body.formats import SMPL24_PARENTS
from posrft.files import atomic_save_image

REST_SMPL24 = torch.tensor(
    [
        [0.00, -0.22, 0.03], [0.07, -0.31, 0.02], [-0.07, -0.31, 0.02], [0.00, -0.11, 0.00],
        [0.10, -0.68, 0.04], [-0.10, -0.68, 0.03], [0.01, 0.03, 0.03], [0.09, -1.07, -0.02],
        [-0.09, -1.07, -0.02], [0.00, 0.09, 0.03], [0.11, -1.13, 0.10], [-0.12, -1.13, 0.10],
        [0.00, 0.30, -0.01], [0.08, 0.21, 0.00], [-0.08, 0.21, 0.00], [0.01, 0.38, 0.05],
        [0.17, 0.25, -0.02], [-0.17, 0.24, -0.01], [0.43, 0.23, -0.04], [-0.43, 0.22, -0.04],
        [0.68, 0.24, -0.04], [-0.68, 0.24, -0.04], [0.77, 0.23, -0.06], [-0.77, 0.23, -0.05],
    ],
    dtype=torch.float64,
)  # fmt: skip

MOTIONS = ("walk", "wave", "squat", "jacks")
_L_HIP, _R_HIP, _L_KNEE, _R_KNEE, _SPINE1 = 1, 2, 4, 5, 3
_L_SHO, _R_SHO, _L_ELB, _R_ELB = 16, 17, 18, 19


def forward_kinematics(euler: torch.Tensor, trans: torch.Tensor | None = None) -> torch.Tensor:
    """Joints ``(..., 24, 3)`` from per-joint XYZ Euler angles ``(..., 24, 3)`` (radians)."""
    rot = roma.euler_to_rotmat("XYZ", euler.to(torch.float64))
    rest = REST_SMPL24
    glob = [rot[..., 0, :, :]]
    pos = [rest[0].expand(*euler.shape[:-2], 3)]
    for j in range(1, 24):
        p = SMPL24_PARENTS[j]
        off = (glob[p] @ (rest[j] - rest[p]).unsqueeze(-1)).squeeze(-1)
        pos.append(pos[p] + off)
        glob.append(glob[p] @ rot[..., j, :, :])
    joints = torch.stack(pos, dim=-2)
    if trans is not None:
        joints = joints + trans.to(joints.dtype).unsqueeze(-2)
    return joints


def _arms_down(euler: torch.Tensor) -> None:
    euler[..., _L_SHO, 2] -= 1.25
    euler[..., _R_SHO, 2] += 1.25


def demo_smpl_clip(motion: str = "walk", frames: int = 48, cycles: float = 1.0) -> torch.Tensor:
    """A ``(frames, 24, 3)`` float32 SMPL joint clip of a simple periodic motion."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown demo motion {motion!r}; choose from {MOTIONS}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    phase = 2 * math.pi * cycles * torch.arange(frames, dtype=torch.float64) / max(frames, 1)
    s, c = torch.sin(phase), torch.cos(phase)
    e = torch.zeros(frames, 24, 3, dtype=torch.float64)
    trans = torch.zeros(frames, 3, dtype=torch.float64)
    _arms_down(e)
    if motion == "walk":
        e[:, _L_HIP, 0], e[:, _R_HIP, 0] = -0.5 * s, 0.5 * s
        e[:, _L_KNEE, 0], e[:, _R_KNEE, 0] = 0.8 * s.clamp(min=0), 0.8 * (-s).clamp(min=0)
        e[:, _L_SHO, 0], e[:, _R_SHO, 0] = 0.4 * s, -0.4 * s
        e[:, _L_ELB, 1], e[:, _R_ELB, 1] = -0.3, 0.3
        trans[:, 2] = 0.6 * torch.arange(frames) / max(frames, 1)
    elif motion == "wave":
        e[:, _R_SHO, 2] = -1.1
        e[:, _R_ELB, 2] = -0.6 + 0.5 * s
        e[:, _SPINE1, 2] = 0.05 * s
    elif motion == "squat":
        d = 0.5 * (1 - c)
        e[:, _L_HIP, 0] = e[:, _R_HIP, 0] = -1.3 * d
        e[:, _L_KNEE, 0] = e[:, _R_KNEE, 0] = 2.0 * d
        e[:, 7, 0] = e[:, 8, 0] = -0.7 * d
        e[:, _SPINE1, 0] = 0.4 * d
        e[:, _L_SHO, 1], e[:, _R_SHO, 1] = -1.2 * d, 1.2 * d
        trans[:, 1] = -0.35 * d
    else:  # jacks
        d = 0.5 * (1 - c)
        e[:, _L_SHO, 2] += 2.4 * d
        e[:, _R_SHO, 2] -= 2.4 * d
        e[:, _L_HIP, 2], e[:, _R_HIP, 2] = 0.35 * d, -0.35 * d
        trans[:, 1] = 0.08 * torch.sin(2 * phase).abs()
    return forward_kinematics(e, trans).float()


def demo_smpl_poses(n: int, seed: int = 0, jitter: float = 0.0) -> torch.Tensor:
    """``(n, 24, 3)`` float32 random but plausible SMPL joint poses (deterministic per seed).

    ``jitter > 0`` adds that much Gaussian noise (radians) to every joint angle, e.g. to fake a
    prediction of the ``jitter = 0`` poses.
    """
    gen = torch.Generator().manual_seed(seed)
    e = 0.2 * torch.randn(n, 24, 3, generator=gen, dtype=torch.float64)
    e[:, 0] = 0.0
    e[:, 0, 1] = 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    for knee in (_L_KNEE, _R_KNEE, 7, 8):
        e[:, knee, 0] = e[:, knee, 0].abs() * 2.0
    for hip in (_L_HIP, _R_HIP):
        e[:, hip, 0] = -(e[:, hip, 0].abs() * 2.5)
    e[:, _L_ELB, 1] = -e[:, _L_ELB, 1].abs() * 4.0  # forearm bends forward
    e[:, _R_ELB, 1] = e[:, _R_ELB, 1].abs() * 4.0
    _arms_down(e)
    e[:, _L_SHO, 2] += 1.2 * torch.rand(n, generator=gen, dtype=torch.float64)
    e[:, _R_SHO, 2] -= 1.2 * torch.rand(n, generator=gen, dtype=torch.float64)
    if jitter > 0:
        noise_gen = torch.Generator().manual_seed(seed + 1)
        e = e + jitter * torch.randn(e.shape, generator=noise_gen, dtype=e.dtype)
    return forward_kinematics(e).float()


def write_demo_grid(path: str = "docs/render_grid.png", n: int = 4, seed: int = 3):
    """The docs picture: ``n`` random poses, a jittered "prediction" next to the "ground truth",
    captioned with their MPJPE.  ``python -c "from posrft.render.demo import write_demo_grid;
    write_demo_grid()"`` from the repository root regenerates ``docs/render_grid.png``."""
    from posrft.render.pictures import render_pose_grid

    gt = demo_smpl_poses(n, seed)
    pred = demo_smpl_poses(n, seed, jitter=0.08)
    mpjpe = ((pred - pred[:, :1]) - (gt - gt[:, :1])).norm(dim=-1).mean(-1) * 1000.0
    captions = [f"pose {i}: root-aligned MPJPE {e:.0f} mm" for i, e in enumerate(mpjpe.tolist())]
    grid = render_pose_grid({"prediction": pred, "ground truth": gt}, captions, size=160, cols=2)
    atomic_save_image(path, grid, optimize=True)
    return grid
