"""Policy poses → SMPL joints: the one place rewards, metrics and logs turn a 6D pose into 3D.

A policy pose is ``(B, J*6)`` 6D rotations for the first ``J ≤ 24`` SMPL joints (global
orientation first; by default J = 22, so the two hand joints are missing). Missing trailing
joints are the identity, betas are zero and there is no translation, so the pelvis sits at its
rest position: the joints are those of the neutral body in that pose.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from posrft.body.fk import JointFK
from posrft.body.formats import SMPL24_PARENTS
from posrft.body.rotations import identity_pose6d
from posrft.body.standin import standin_rest_joints
from posrft.config import body_models_dir

NUM_SMPL_JOINTS = 24


def pad_pose6d(pose6d: Tensor, num_joints: int = NUM_SMPL_JOINTS) -> Tensor:
    """``(B, J*6)`` → ``(B, num_joints*6)`` with identity rotations for the missing joints."""
    if pose6d.dim() != 2 or pose6d.shape[1] % 6:
        raise ValueError(f"pose6d must be (B, J*6), got {tuple(pose6d.shape)}")
    j = pose6d.shape[1] // 6
    if j > num_joints:
        raise ValueError(f"pose6d has {j} joints, more than {num_joints}")
    if j == num_joints:
        return pose6d
    pad = identity_pose6d(num_joints - j, pose6d.shape[0], dtype=pose6d.dtype).to(pose6d.device)
    return torch.cat([pose6d, pad], dim=1)


class PoseToJoints(torch.nn.Module):
    """``(B, J*6)`` policy poses → ``(B, 24, 3)`` SMPL joints in metres (differentiable).

    Rest joints come from the user's SMPL model when ``body_model_dir`` (or
    ``$POSRFT_BODY_MODELS``) is set, else from the offline stand-in.
    """

    def __init__(self, body_model_dir: str | os.PathLike | None = None):
        super().__init__()
        folder = body_models_dir(body_model_dir)
        if folder is None:
            rest = torch.as_tensor(standin_rest_joints(), dtype=torch.float32)
        else:
            from posrft.body.model import BodyModel  # loads the user's configured file only

            rest = BodyModel("smpl", model_dir=folder).rest_joints()[0].detach().float()
        self.fk = JointFK(SMPL24_PARENTS, rest)

    def forward(self, pose6d: Tensor) -> Tensor:
        return self.fk.from_pose6d(pad_pose6d(pose6d))


@functools.lru_cache(maxsize=4)
def pose_to_joints(body_model_dir: str | None = None) -> PoseToJoints:
    """A shared :class:`PoseToJoints` per body-model folder (built once per process)."""
    return PoseToJoints(body_model_dir)
