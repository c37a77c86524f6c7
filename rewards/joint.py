"""R_joint: how close the pose's 3D joints are to the ground truth (the paper's joint reward).

For a sampled pose ``p`` (6D rotations, :mod:`posrft.body.pose`) the joints are
``J(p) = FK(p)`` on the body's rest skeleton (24 SMPL joints, zero betas, no translation:
the offline stand-in by default, the user's SMPL when ``body_model_dir`` or
``$POSRFT_BODY_MODELS`` is set — use the body the dataset's ``gt_joints`` were made with).
With ``e = MPJPE(J(p), J_gt)`` in metres (:func:`posrft.eval.metrics.mpjpe`, over the joint
subset ``joints``, default all 24, after the alignment ``align``):

* ``kind="inverse"`` (the paper):  ``r = min(1 / (e + eps), cap)``, in ``(0, cap]``;
  defaults ``eps = 0.01`` m and ``cap = 50`` (reached at e ≤ 1 cm);
* ``kind="exp"``:                  ``r = exp(-e / tau)``, in ``(0, 1]``; default ``tau = 0.1`` m.

Two kinds are sums over joints, ``r = Σ_j r_j`` with ``r_j`` a function of joint ``j``'s own
error ``e_j`` (``J`` joints in the subset):

* ``kind="mean_exp"``:  ``r_j = exp(-e_j / tau) / J``  (so ``r`` in ``(0, 1]``);
* ``kind="neg_mean"``:  ``r_j = -e_j / (tau · J)``     (``r = -MPJPE / tau``).

With ``per_joint=True`` (these kinds only) the reward returns
:class:`~rewards.api.PerJointRewards` (terms of joints outside the subset are 0), which lets the
learner credit each rotation with the joints it moves (``per_joint_credit``). The decomposition
is exact for ``align="pelvis"``/``"none"``; with ``"procrustes"`` the alignment couples all
joints, so crediting by subtree is an approximation.

Alignments: ``"pelvis"`` (default; each skeleton relative to its pelvis), ``"procrustes"``
(similarity transform of J(p) onto J_gt: ignores global rotation and scale) or ``"none"``.

Registered names (recipes list them under ``rewards:``; every kwarg can be overridden)::

    {"func": "joint"}                      # inverse, pelvis-aligned: the paper's R_joint
    {"func": "joint_exp", "kwargs": {"tau": 0.05}}
    {"func": "joint_pa"}                   # inverse, Procrustes-aligned
    {"func": "joint", "kwargs": {"kind": "exp", "align": "none", "joints": [0, 1, 2]}}

A completion without a pose (``poses[i] is None``) or without ground truth
(``gt_joints[i] is None``) gets ``None``. The whole batch is one FK call.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from posrft.body.pose import pose_to_joints
from posrft.eval.metrics import ALIGNMENTS, joint_errors, mpjpe
from rewards.api import PerJointRewards
from rewards.body_batch import posed_joints
from rewards.columns import gather_pose_inputs, scatter, stack_column
from rewards.registry import register_reward

KINDS = ("inverse", "exp", "mean_exp", "neg_mean")
ADDITIVE_KINDS = ("mean_exp", "neg_mean")
NUM_JOINTS = 24


class JointReward:
    """Factory for the joint reward (module docstring); built once with the recipe's kwargs.

    Args:
        kind: ``"inverse"`` (``min(1/(e+eps), cap)``), ``"exp"`` (``exp(-e/tau)``), or the
            additive ``"mean_exp"`` / ``"neg_mean"`` (module docstring).
        align: ``"pelvis"``, ``"procrustes"`` or ``"none"``.
        eps, cap: of the inverse kind (metres, reward units); ``cap=None`` = uncapped.
        tau: of the exp kind (metres).
        joints: joint indices (SMPL order) the error averages over; ``None`` = all 24.
        per_joint: return :class:`~rewards.api.PerJointRewards` (additive kinds only).
        column: the dataset column with the ground-truth joints ``(24, 3)`` in metres.
        body_model_dir: SMPL folder for the rest skeleton (default: stand-in / env).
        reward_name: the name used in error messages (set by the registered variants).
    """

    def __init__(
        self,
        kind: str = "inverse",
        align: str = "pelvis",
        eps: float = 0.01,
        cap: float | None = 50.0,
        tau: float = 0.1,
        joints: Sequence[int] | None = None,
        column: str = "gt_joints",
        body_model_dir: str | None = None,
        per_joint: bool = False,
        *,
        reward_name: str = "joint",
    ) -> None:
        self.name = self.__name__ = reward_name
        if kind not in KINDS:
            raise ValueError(f"reward {self.name!r}: kind must be one of {KINDS}, got {kind!r}")
        if align not in ALIGNMENTS:
            raise ValueError(
                f"reward {self.name!r}: align must be one of {ALIGNMENTS}, got {align!r}"
            )
        if not eps > 0 or not tau > 0 or (cap is not None and not cap > 0):
            raise ValueError(
                f"reward {self.name!r}: eps, tau and cap must be positive, got eps={eps}, "
                f"tau={tau}, cap={cap}"
            )
        if joints is not None:
            joints = [int(j) for j in joints]
            if not joints or min(joints) < 0 or max(joints) >= NUM_JOINTS:
                raise ValueError(
                    f"reward {self.name!r}: joints must be a non-empty list of SMPL joint "
                    f"indices in [0, {NUM_JOINTS}), got {joints}"
                )
        if per_joint and kind not in ADDITIVE_KINDS:
            raise ValueError(f"reward {self.name!r}: per_joint needs a kind that is a sum over "
                             f"joints, one of {ADDITIVE_KINDS}; got kind={kind!r}")
        self.kind, self.align, self.eps, self.cap, self.tau = kind, align, eps, cap, tau
        self.per_joint = bool(per_joint)
        self.joints, self.column = joints, column
        self.body_model_dir = None if body_model_dir is None else str(body_model_dir)
        pose_to_joints(self.body_model_dir)  # load (and check) the body once, now

    def score(self, errors: Tensor) -> Tensor:
        """Reward of MPJPE values ``(V,)`` in metres (the scalar kinds)."""
        if self.kind == "exp":
            return torch.exp(-errors / self.tau)
        r = 1.0 / (errors + self.eps)
        return r if self.cap is None else r.clamp(max=self.cap)

    def joint_terms(self, errors: Tensor) -> Tensor:
        """Per-joint terms ``(V, 24)`` of the additive kinds from per-joint errors ``(V, 24)``
        (metres); joints outside the subset get 0."""
        keep = torch.zeros(NUM_JOINTS, dtype=errors.dtype, device=errors.device)
        keep[self.joints if self.joints is not None else slice(None)] = 1.0
        count = keep.sum()
        if self.kind == "mean_exp":
            return torch.exp(-errors / self.tau) * keep / count
        return -errors / self.tau * keep / count

    def errors(self, pose6d: Tensor, gt_joints: Tensor) -> Tensor:
        """MPJPE ``(V,)`` metres of poses ``(V, J*6)`` against joints ``(V, 24, 3)``."""
        pred = posed_joints(pose6d, self.body_model_dir)
        return mpjpe(pred, gt_joints, self.align, self.joints)

    def per_joint_errors(self, pose6d: Tensor, gt_joints: Tensor) -> Tensor:
        """Errors ``(V, 24)`` metres after the alignment (fitted on the subset, as for the
        scalar kinds); joints outside the subset get 0."""
        errs = joint_errors(posed_joints(pose6d, self.body_model_dir), gt_joints, self.align, self.joints)
        if self.joints is None:
            return errs
        out = errs.new_zeros(errs.shape[0], NUM_JOINTS)
        out[:, self.joints] = errs
        return out

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Any = None,
        poses: Sequence[Tensor | None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        n, rows, pose6d, cols = gather_pose_inputs(self.name, poses, completions, columns, [self.column])
        if not rows:
            return PerJointRewards(np.full((n, NUM_JOINTS), np.nan)) if self.per_joint else [None] * n
        gt = stack_column(self.name, self.column, cols[self.column], rows, (NUM_JOINTS, 3))
        if self.kind not in ADDITIVE_KINDS:
            return scatter(n, rows, self.score(self.errors(pose6d, gt)))
        terms = self.joint_terms(self.per_joint_errors(pose6d, gt))
        if not self.per_joint:
            return scatter(n, rows, terms.sum(1))
        values = np.full((n, NUM_JOINTS), np.nan)
        values[rows] = terms.double().numpy()
        return PerJointRewards(values)


def _variant(name: str, **fixed: Any):
    def factory(**kwargs: Any) -> JointReward:
        return JointReward(**{**fixed, **kwargs}, reward_name=name)

    factory.__name__ = name
    # the class's own parameters, so that a recipe's misspelt kwarg is named before building
    sig = inspect.signature(JointReward)
    factory.__signature__ = sig.replace(parameters=[p for n, p in sig.parameters.items()
                                                    if n not in ("reward_name", *fixed)])  # fmt: skip
    factory.__doc__ = f"``{name}``: :class:`JointReward` with defaults {fixed or 'as documented'}."
    return factory


register_reward("joint", target="pose", factory=True)(_variant("joint"))
register_reward("joint_exp", target="pose", factory=True)(_variant("joint_exp", kind="exp"))
register_reward("joint_pa", target="pose", factory=True)(_variant("joint_pa", align="procrustes"))

__all__ = ["JointReward", "KINDS"]
