"""Floor 3 data layer: an offline pose prior, a PoseScript-style captioner and synthetic datasets.

- :mod:`~posrft.data.limits` -- anatomical joint coordinates and limits (also for rewards).
- :mod:`~posrft.data.plausibility` -- self-penetration (capsules), ground contact, balance.
- :mod:`~posrft.data.keyposes` / :mod:`~posrft.data.keyposes_motion` / :mod:`~posrft.data.prior`
  -- key-pose libraries (postures; motion phases, sports stances, transitions) and sampler;
  :mod:`~posrft.data.coverage` -- how well the prior covers held-out motion.
- :mod:`~posrft.data.posecodes` / :mod:`~posrft.data.posecode_defs` /
  :mod:`~posrft.data.caption_select` / :mod:`~posrft.data.captioner` -- checkable captions.
- :mod:`~posrft.data.ik` / :mod:`~posrft.data.from_joints` -- SMPL inverse kinematics with the
  joint limits; rows from joint-only data.
- :mod:`~posrft.data.synth` / :mod:`~posrft.data.views` / :mod:`~posrft.data.show` --
  text->pose and image->pose ``DatasetDict`` builders, pictures, sample grids.
- :mod:`~posrft.data.loaders` -- readers of real datasets (AMASS, 3DPW, PoseScript, ...).
"""

from posrft.data.captioner import (
    Caption,
    Clause,
    caption_clip,
    caption_from_codes,
    caption_pose,
    caption_poses,
)
from posrft.data.ik import fit_smpl, rotation_errors
from posrft.data.limits import (
    anatomical_coords,
    describe_violations,
    limit_violation,
    mirror_pose,
    pose_from_coords,
    within_limits,
)
from posrft.data.plausibility import balanced, penetration, self_penetrating, support_heights
from posrft.data.posecodes import Relation, estimate_floor, extract
from posrft.data.prior import PoseSamples, coverage_stats, sample_poses
from posrft.data.skeleton import pose_joints, rest_joints
from posrft.data.synth import (
    POSE_TOKEN,
    build_image2pose,
    build_text2pose,
    load_dataset_dir,
    save_dataset,
    split_sizes,
    synth_dataset,
)

__all__ = [
    "POSE_TOKEN",
    "Caption",
    "Clause",
    "PoseSamples",
    "Relation",
    "anatomical_coords",
    "balanced",
    "build_image2pose",
    "build_text2pose",
    "caption_clip",
    "caption_from_codes",
    "caption_pose",
    "caption_poses",
    "coverage_stats",
    "describe_violations",
    "estimate_floor",
    "extract",
    "fit_smpl",
    "limit_violation",
    "load_dataset_dir",
    "mirror_pose",
    "penetration",
    "pose_from_coords",
    "pose_joints",
    "rest_joints",
    "rotation_errors",
    "sample_poses",
    "save_dataset",
    "self_penetrating",
    "show_dataset",
    "split_sizes",
    "support_heights",
    "synth_dataset",
    "within_limits",
]


def show_dataset(*args, **kwargs):
    """See :func:`posrft.data.show.show_dataset` (imported lazily: it pulls in the renderer)."""
    from posrft.data.show import show_dataset as _show

    return _show(*args, **kwargs)
