"""Floor 1: the body layer.

- :mod:`~posrft.body.rotations` — rotation conventions (axis-angle, XYZW quats, 6D) via roma.
- :mod:`~posrft.body.fk` — fast joints-only forward kinematics (level-by-level, batch-innermost).
- :mod:`~posrft.body.ik` — inverse kinematics: joints of any SMPL-mappable format -> rotations.
- :mod:`~posrft.body.model` — :class:`BodyModel` over smplx (SMPL / SMPL-H / SMPL-X).
- :mod:`~posrft.body.standin` — the offline SMPL-format stand-in (not the licensed SMPL).
- :mod:`~posrft.body.formats` — skeleton-format registry (joint names, bones, SMPL maps).
"""

from posrft.body.fk import (
    JointFK,
    build_schedule,
    fk_from_axis_angle,
    fk_from_pose6d,
    fk_joints,
    validate_parents,
)
from posrft.body.formats import (
    SMPL24_JOINTS,
    SMPL24_PARENTS,
    SkeletonFormat,
    custom_format,
    get_format,
    list_formats,
    register_format,
)
from posrft.body.ik import IKResult, inverse_kinematics, joint_shape_dirs
from posrft.body.model import (
    MODEL_FILES,
    NUM_BODY_JOINTS,
    BodyModel,
    BodyOutput,
    resolve_model_file,
)
from posrft.body.rotations import (
    axis_angle_pose_to_rotmat,
    axis_angle_to_pose6d,
    axis_angle_to_rotmat,
    identity_pose6d,
    pose6d_to_axis_angle,
    pose6d_to_rotmat,
    quat_to_rotmat,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_axis_angle_pose,
    rotmat_to_pose6d,
    rotmat_to_quat,
    rotmat_to_rot6d,
)
from posrft.body.standin import ensure_standin, standin_rest_joints

__all__ = [
    "BodyModel",
    "BodyOutput",
    "IKResult",
    "JointFK",
    "MODEL_FILES",
    "NUM_BODY_JOINTS",
    "SMPL24_JOINTS",
    "SMPL24_PARENTS",
    "SkeletonFormat",
    "axis_angle_pose_to_rotmat",
    "axis_angle_to_pose6d",
    "axis_angle_to_rotmat",
    "build_schedule",
    "custom_format",
    "ensure_standin",
    "fk_from_axis_angle",
    "fk_from_pose6d",
    "fk_joints",
    "get_format",
    "identity_pose6d",
    "inverse_kinematics",
    "joint_shape_dirs",
    "list_formats",
    "pose6d_to_axis_angle",
    "pose6d_to_rotmat",
    "quat_to_rotmat",
    "register_format",
    "resolve_model_file",
    "rot6d_to_rotmat",
    "rotmat_to_axis_angle",
    "rotmat_to_axis_angle_pose",
    "rotmat_to_pose6d",
    "rotmat_to_quat",
    "rotmat_to_rot6d",
    "standin_rest_joints",
    "validate_parents",
]
