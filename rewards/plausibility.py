"""R_plaus: a penalty for anatomically impossible poses (0 for a plausible pose, < 0 otherwise).

Each joint rotation is decomposed into anatomical coordinates and compared with the joint-limit
boxes of :mod:`posrft.data.limits` (the same limits the pose prior samples within):
``v_{j,a} = limit_violation(pose)`` in radians per joint ``j`` and axis ``a`` (0 inside the box;
the global orientation is free). With a dead zone ``tol`` (default 0.5°, as
:func:`posrft.data.limits.within_limits` uses):

    r = −scale · Σ_{j,a} max(v_{j,a} − tol, 0)  −  penetration_weight · Σ_pairs max(d, 0)

The optional second term (off by default) adds the self-penetration depth in metres of the
capsule body of :func:`posrft.data.plausibility.penetration` on the pose's joints.
E.g. a knee bent 30° backwards (limit: 5° hyperextension) scores about −0.43.

The policy's 6D pose covers the first ``J ≤ 24`` joints; the missing hand joints are the
identity (always within limits). ``None`` poses give ``None``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import roma
import torch
from torch import Tensor

from posrft.data.limits import NUM_JOINTS, limit_violation
from posrft.data.plausibility import penetration
from rewards.body_batch import pose6d_to_rotmat_batched, posed_joints
from rewards.columns import gather_pose_inputs, scatter
from rewards.registry import register_reward


class PlausibilityReward:
    """Factory for the plausibility penalty (module docstring).

    Args:
        scale: reward per radian of limit violation.
        tol_deg: violations up to this many degrees per coordinate are free.
        penetration_weight: reward per metre of capsule penetration (0 = not computed).
        overlap: the capsule overlap tolerance of :func:`posrft.data.plausibility.penetration`.
        body_model_dir: SMPL folder for the rest skeleton (only used for penetration).
    """

    def __init__(
        self,
        scale: float = 1.0,
        tol_deg: float = 0.5,
        penetration_weight: float = 0.0,
        overlap: float = 0.6,
        body_model_dir: str | None = None,
    ) -> None:
        if scale < 0 or tol_deg < 0 or penetration_weight < 0:
            raise ValueError(
                "reward 'plausibility': scale, tol_deg and penetration_weight must be >= 0, got "
                f"{scale}, {tol_deg}, {penetration_weight}"
            )
        self.scale, self.tol = scale, math.radians(tol_deg)
        self.penetration_weight, self.overlap = penetration_weight, overlap
        self.body_model_dir = None if body_model_dir is None else str(body_model_dir)
        self.__name__ = "plausibility"

    def penalty(self, pose6d: Tensor) -> Tensor:
        """``r`` of the module docstring for poses ``(V, J*6)`` -> ``(V,)`` (<= 0)."""
        rotmats = pose6d_to_rotmat_batched(pose6d, NUM_JOINTS)  # (V, 24, 3, 3), hands identity
        axis_angle = roma.rotmat_to_rotvec(rotmats)
        excess = (limit_violation(axis_angle) - self.tol).clamp(min=0.0)
        r = 0.0 - self.scale * excess.sum(dim=(1, 2))  # +0.0, not -0.0, for plausible poses
        if self.penetration_weight > 0:
            joints = posed_joints(pose6d, self.body_model_dir)
            depth = penetration(joints, self.overlap).clamp(min=0.0).sum(1)
            r = r - self.penetration_weight * depth
        return r

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Any = None,
        poses: Sequence[Tensor | None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        n, rows, pose6d, _ = gather_pose_inputs(self.__name__, poses, completions, columns)
        if not rows:
            return [None] * n
        return scatter(n, rows, self.penalty(pose6d))


register_reward("plausibility", target="pose")(PlausibilityReward)

__all__ = ["PlausibilityReward"]
