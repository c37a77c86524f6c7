"""R_reproj: do the pose's joints, seen through the sample's camera, land on its 2D keypoints?

The predicted pose has no translation (the policy outputs rotations only), so its joints
``J(p)`` (:mod:`posrft.body.pose`) are placed with their pelvis on the ground-truth pelvis:
``X = J(p) − J(p)_root + J_gt,root`` (world frame; equivalently, at the ground-truth pelvis
position in the camera frame). They are projected with the sample's pinhole camera
(:class:`posrft.render.camera.Camera`, OpenCV convention: ``X_c = R X + t``,
``u = fx x_c / z_c + cx``, ``v = fy y_c / z_c + cy``) and compared with ``keypoints_2d``:

    e = 1/|vis| Σ_{j ∈ vis} min(‖uv_j − kp_j‖ / max(W, H), 1)
    r = exp(−e / tau)                                          (default tau = 0.05)

i.e. the mean keypoint distance as a fraction of the image size (a joint at or behind the
camera, ``z_c ≤ min_depth``, counts as the maximum error 1). Keypoints with NaN coordinates
are invisible and skipped; a sample with no visible keypoint, no pose, or ``None`` in any of
the columns gets ``None``.

``kind="neg_mean"`` is a sum over joints, ``r = Σ_j r_j`` with ``r_j = −e_j / (tau · |vis|)``
for a visible joint ``j`` (``e_j`` its clamped distance above) and 0 otherwise, so ``r = −e/tau``.
Joint ``j``'s placed position depends only on the rotations of its ancestors (the pelvis is
pinned to the ground truth), so with ``per_joint=True`` the reward returns
:class:`~rewards.api.PerJointRewards` and ``per_joint_credit`` can credit each rotation with the
keypoints it moves, exactly. The ``exp`` kind couples all joints through the exponential and is
credited to every rotation.

Columns (names configurable): ``camera`` (dict ``fx, fy, cx, cy, width, height, R`` (3, 3)
world-to-camera, ``t`` (3,)), ``keypoints_2d`` (24, 2) pixels, ``gt_joints`` (24, 3) metres
(for the pelvis position).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

import numpy as np

from posrft.body.pose import pose_to_joints
from posrft.render.camera import Camera
from rewards.api import PerJointRewards
from rewards.body_batch import posed_joints
from rewards.columns import RewardInputError, gather_pose_inputs, scatter, stack_column
from rewards.registry import register_reward

NUM_JOINTS = 24
KINDS = ("exp", "neg_mean")
INTRINSICS = ("fx", "fy", "cx", "cy", "width", "height")


def _cameras(
    reward: str, name: str, cams: Sequence[Any], rows: Sequence[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(K (V, 6) intrinsics, R (V, 3, 3), t (V, 3))`` from per-sample camera dicts."""
    intr, rots, trans = [], [], []
    for i in rows:
        cam = cams[i]
        if not isinstance(cam, dict):
            raise RewardInputError(
                f"reward {reward!r}: column {name!r}, sample {i}: expected a dict with keys "
                f"{', '.join(INTRINSICS)}, R, t; got {type(cam).__name__}"
            )
        missing = [k for k in (*INTRINSICS, "R", "t") if k not in cam]
        if missing:
            raise RewardInputError(
                f"reward {reward!r}: column {name!r}, sample {i} lacks {missing} "
                f"(has {sorted(cam)})"
            )
        intr.append([float(cam[k]) for k in INTRINSICS])
        rots.append(cam["R"])
        trans.append(cam["t"])
    k = torch.tensor(intr, dtype=torch.float64).reshape(len(rows), len(INTRINSICS))
    bad = ~((k[:, 4:] > 0).all(1) & torch.isfinite(k).all(1))
    if bool(bad.any()):
        i = rows[int(bad.nonzero()[0, 0])]
        raise RewardInputError(
            f"reward {reward!r}: column {name!r}, sample {i}: non-finite intrinsics or image "
            "size <= 0"
        )
    pos = list(range(len(rows)))
    r = stack_column(reward, f"{name}.R", rots, pos, (3, 3))
    t = stack_column(reward, f"{name}.t", trans, pos, (3,))
    return k, r, t


def project_grouped(points: Tensor, k: Tensor, rot: Tensor, trans: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels ``(V, J, 2)`` and depths ``(V, J)`` of world points ``(V, J, 3)``, one
    :class:`Camera` per group of samples sharing intrinsics."""
    uv = points.new_zeros(*points.shape[:-1], 2)
    depth = points.new_zeros(points.shape[:-1])
    keys, group = torch.unique(k, dim=0, return_inverse=True)
    for g, key in enumerate(keys.tolist()):
        idx = (group == g).nonzero()[:, 0]
        fx, fy, cx, cy, w, h = key
        cam = Camera(rot[idx], trans[idx], fx, fy, cx, cy, int(w), int(h))
        uv[idx], depth[idx] = cam.project(points[idx])
    return uv, depth


class ReprojectionReward:
    """Factory for the reprojection reward (module docstring).

    Args:
        tau: error scale (fraction of the image size).
        kind: ``"exp"`` (``exp(−e/tau)``) or the additive ``"neg_mean"`` (``−e/tau``).
        per_joint: return :class:`~rewards.api.PerJointRewards` (``neg_mean`` only).
        min_depth: joints closer than this (metres, camera z) count as maximal error.
        keypoints_column, camera_column, joints_column: dataset column names.
        body_model_dir: SMPL folder for the rest skeleton (default: stand-in / env).
    """

    def __init__(
        self,
        tau: float = 0.05,
        min_depth: float = 1e-3,
        kind: str = "exp",
        per_joint: bool = False,
        keypoints_column: str = "keypoints_2d",
        camera_column: str = "camera",
        joints_column: str = "gt_joints",
        body_model_dir: str | None = None,
    ) -> None:
        if not tau > 0 or not min_depth > 0:
            raise ValueError(
                f"reward 'reprojection': tau and min_depth must be positive, got {tau}, {min_depth}"
            )
        if kind not in KINDS:
            raise ValueError(f"reward 'reprojection': kind must be one of {KINDS}, got {kind!r}")
        if per_joint and kind != "neg_mean":
            raise ValueError("reward 'reprojection': per_joint needs kind='neg_mean' (a sum over "
                             f"joints), got kind={kind!r}")
        self.tau, self.min_depth, self.kind, self.per_joint = tau, min_depth, kind, bool(per_joint)
        self.kp_col, self.cam_col, self.joints_col = keypoints_column, camera_column, joints_column
        self.body_model_dir = None if body_model_dir is None else str(body_model_dir)
        pose_to_joints(self.body_model_dir)  # load (and check) the body once, now
        self.__name__ = "reprojection"

    def joint_errors(
        self,
        pose6d: Tensor,
        gt_joints: Tensor,
        keypoints: Tensor,
        k: Tensor,
        rot: Tensor,
        trans: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Clamped keypoint errors ``(V, 24)`` as a fraction of the image size (0 where
        invisible) and the visible mask ``(V, 24)``."""
        pred = posed_joints(pose6d, self.body_model_dir).double()
        placed = pred - pred[:, :1] + gt_joints[:, :1].double()
        uv, depth = project_grouped(placed, k, rot.double(), trans.double())
        size = k[:, 4:6].amax(1, keepdim=True)  # max(W, H)
        err = ((uv - keypoints.double()).norm(dim=-1) / size).clamp(max=1.0)
        err = torch.where(depth > self.min_depth, err, torch.ones_like(err))
        visible = torch.isfinite(keypoints).all(-1)
        return torch.where(visible, err, torch.zeros_like(err)), visible

    def errors(
        self,
        pose6d: Tensor,
        gt_joints: Tensor,
        keypoints: Tensor,
        k: Tensor,
        rot: Tensor,
        trans: Tensor,
    ) -> Tensor:
        """Normalised mean keypoint error ``(V,)`` (NaN where no keypoint is visible)."""
        err, visible = self.joint_errors(pose6d, gt_joints, keypoints, k, rot, trans)
        return err.sum(1) / visible.sum(1)  # 0/0 = NaN: no visible keypoint

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Any = None,
        poses: Sequence[Tensor | None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        name = self.__name__
        needed = (self.kp_col, self.cam_col, self.joints_col)
        n, rows, pose6d, cols = gather_pose_inputs(name, poses, completions, columns, needed)
        if not rows:
            return PerJointRewards(np.full((n, NUM_JOINTS), np.nan)) if self.per_joint else [None] * n
        gt = stack_column(name, self.joints_col, cols[self.joints_col], rows, (NUM_JOINTS, 3))
        kp = stack_column(name, self.kp_col, cols[self.kp_col], rows, (NUM_JOINTS, 2),
                          allow_nonfinite=True)  # fmt: skip
        cams = _cameras(name, self.cam_col, cols[self.cam_col], rows)
        err, visible = self.joint_errors(pose6d, gt, kp, *cams)
        if self.per_joint:
            values = np.full((n, NUM_JOINTS), np.nan)
            values[rows] = (-err / (self.tau * visible.sum(1, keepdim=True))).numpy()  # 0/0 = NaN: no keypoint
            return PerJointRewards(values)
        mean = err.sum(1) / visible.sum(1)  # 0/0 = NaN: no visible keypoint
        reward = torch.exp(-mean / self.tau) if self.kind == "exp" else -mean / self.tau
        out = scatter(n, rows, reward)
        return [None if v is None or v != v else v for v in out]


register_reward("reprojection", target="pose")(ReprojectionReward)

__all__ = ["KINDS", "ReprojectionReward", "project_grouped"]
