"""Joint positions of SMPL poses for the data layer: the stand-in body with zero betas.

``pose_joints(pose)`` is FK (:func:`posrft.body.fk.fk_from_axis_angle`) of axis-angle poses
``(B, 72)`` on the rest joints of the offline stand-in body (:func:`standin_rest_joints`,
zero betas, about 1.7 m tall), with no translation: the pelvis stays at its rest position, the
origin, and the global orientation rotates the body about it. Every dataset's ``gt_joints`` is
this function of its ``gt_pose``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from posrft.body.fk import fk_from_axis_angle
from posrft.body.formats import SMPL24_PARENTS
from posrft.body.standin import standin_rest_joints


@lru_cache(maxsize=1)
def _rest() -> torch.Tensor:
    return torch.as_tensor(standin_rest_joints(), dtype=torch.float64)


def rest_joints(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(24, 3) rest joints of the stand-in body (zero betas), pelvis at the origin."""
    return _rest().to(dtype)


def pose_joints(pose: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Posed joints (B, 24, 3) in metres of axis-angle poses (B, 72) (or (B, 24, 3))."""
    p = torch.as_tensor(pose)
    if not p.is_floating_point():
        p = p.float()
    if p.shape[-2:] == (24, 3):
        p = p.reshape(*p.shape[:-2], 72)
    if p.ndim != 2 or p.shape[-1] != 72:
        raise ValueError(f"pose shaped {tuple(p.shape)}: expected axis-angle (B, 72)")
    return fk_from_axis_angle(p, rest_joints(p.dtype), SMPL24_PARENTS)
