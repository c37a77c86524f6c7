"""Rows from joint-only data: inverse kinematics, then text->pose, image->pose or action rows.

Human3.6M, NTU RGB+D, HumanML3D and most motion capture give joint positions, not SMPL
rotations; the retrieval model and the rewards need rotations. :func:`fit_frames` turns the
frames of any registered format (metres, y up) into SMPL poses with :func:`posrft.data.ik.fit_smpl`
(per-bone scale), and the builders put them in the synthetic datasets' schema
(:mod:`posrft.data.synth`):

* ``gt_pose`` / ``gt_pose_6d``: the fitted rotations with the heading removed (the body faces
  +z, as text->pose rows do) -- hands identity; ``gt_joints``: their FK on the stand-in (pelvis
  at the origin);
* ``ground``: the floor in the frame of ``gt_joints``, estimated once per clip
  (:func:`posecodes.estimate_floor` of the fitted joints, then carried into each frame's
  frame: ``pelvis + (floor - pelvis_world) / s`` with ``s`` the frame's bone scale);
* ``caption``: given per frame (e.g. HumanML3D's or PoseScript's), else the captioner's, with
  that floor (so a frame in flight says so);
* ``key_pose``: the source label per frame (e.g. the action), ``pose_id``: the frame index;
* ``ik_residual_mm`` (float32) and ``ik_ok`` (bool, residual <= ``max_residual_mm``): a frame
  the IK could not fit is kept, flagged and counted, not dropped.

Splits are consecutive by clip (a clip's frames never straddle two splits).
:func:`action_rows_with_smpl` adds per-frame SMPL rotations to an action-clip dataset.

Where the loaders' joints come from (:mod:`posrft.data.loaders`):

=====================  ==========================================================================
Human3.6M (SPIN)       :func:`frames_from_h36m_spin`: ``h36m17`` joints turned y-up, confidences
NTU RGB+D              :func:`posrft.data.actions.clips_from_ntu`: ``ntu25`` clips, y up
HumanML3D              ``HumanML3DRecord.joints``: ``smpl22`` frames, already y up
=====================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import roma
import torch
from datasets import DatasetDict, Features, Value
from datasets import Sequence as Seq

from posrft.body.formats import get_format
from posrft.body.rotations import axis_angle_to_pose6d, rotmat_to_axis_angle_pose
from posrft.data import posecodes as pc
from posrft.data.captioner import caption_poses
from posrft.data.ik import fit_smpl
from posrft.data.loaders.h36m_spin import SPIN24_TO_H36M17, SpinH36M
from posrft.data.prior import single_thread
from posrft.data.skeleton import pose_joints
from posrft.data.synth import (
    IMAGE2POSE_FEATURES,
    TEXT2POSE_FEATURES,
    add_pictures,
    add_text_prompts,
    split_rows,
)

MAX_RESIDUAL_MM = 30.0
_EXTRA = {"ik_residual_mm": Value("float32"), "ik_ok": Value("bool")}
TEXT2POSE_IK_FEATURES = Features({**TEXT2POSE_FEATURES, **_EXTRA})
IMAGE2POSE_IK_FEATURES = Features({**IMAGE2POSE_FEATURES, **_EXTRA})


@dataclass
class FittedFrames:
    """SMPL fits of joint frames: ``pose`` (N, 72) axis-angle facing +z, ``joints`` (N, 24, 3)
    their stand-in FK, ``ground`` (N,) the clip floor in that frame, ``residual_mm`` (N,)."""

    pose: np.ndarray
    joints: np.ndarray
    ground: np.ndarray
    residual_mm: np.ndarray


def _face_forward(rotmats: torch.Tensor) -> torch.Tensor:
    """Turn each body about the vertical so its pelvis faces +z (:func:`posecodes.heading`)."""
    x = pose_joints(rotmat_to_axis_angle_pose(rotmats).double())
    psi = torch.from_numpy(pc.heading(x.numpy()))
    turn = roma.rotvec_to_rotmat(-psi[:, None] * torch.tensor([0.0, 1.0, 0.0], dtype=psi.dtype))
    out = rotmats.clone()
    out[:, 0] = turn.to(rotmats) @ rotmats[:, 0]
    return out


def frames_from_h36m_spin(spin: SpinH36M) -> tuple[np.ndarray, np.ndarray]:
    """``h36m17`` joints (N, 17, 3) with y up and their confidences (N, 17) of a SPIN file.

    SPIN's ``S`` is in the camera frame (x right, y down, z forward); a half turn about x
    makes y point up (the heading does not matter: the rows remove it).
    """
    joints = spin.joints_h36m17().astype(np.float64) * np.array([1.0, -1.0, -1.0])
    conf = spin.joints3d_conf[:, list(SPIN24_TO_H36M17)].astype(np.float64)
    return joints, conf


def fit_frames(joints: np.ndarray, fmt: str, clip_ids: Sequence[int] | None = None, *,
               confidence: np.ndarray | None = None) -> FittedFrames:  # fmt: skip
    """IK of frames (N, J, 3) of ``fmt``; ``clip_ids`` (N,) groups frames into clips for
    the floor (default: one clip per frame, i.e. each frame's lowest support point)."""
    f = get_format(fmt)
    j = np.asarray(joints, dtype=np.float64)
    f.check_joints(j, "frames")
    n = len(j)
    clips = np.arange(n) if clip_ids is None else np.asarray(clip_ids)
    if clips.shape != (n,):
        raise ValueError(f"clip_ids: expected {n} entries (one per frame), got {clips.shape}")
    res = fit_smpl(j, f, confidence=confidence)
    rot = res.rotmats.double()
    rot[:, 22:] = torch.eye(3, dtype=rot.dtype)  # hands: no joint below them, identity
    with single_thread():
        pose = rotmat_to_axis_angle_pose(_face_forward(rot)).float()
        canon = pose_joints(pose.double()).numpy()
    world = res.joints.double().numpy()
    scale = res.bone_scale[:, 1:].double().median(1).values.numpy()
    ground = np.empty(n)
    for c in np.unique(clips):
        sel = clips == c
        floor = pc.estimate_floor(world[sel]) if sel.sum() > 1 else pc.lowest_support(world[sel])[0]
        ground[sel] = canon[sel, 0, 1] + (floor - world[sel, 0, 1]) / scale[sel]
    return FittedFrames(pose.numpy(), canon, ground, res.mpjpe.double().numpy() * 1000.0)


def _rows(fit: FittedFrames, captions, labels, seed: int, max_residual_mm: float) -> dict:
    n = len(fit.pose)
    if captions is None:
        captions = [c.text for c in caption_poses(fit.joints, seed, ground=fit.ground)]
    elif len(captions) != n:
        raise ValueError(f"captions: expected {n} (one per frame), got {len(captions)}")
    labels = [""] * n if labels is None else [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"labels: expected {n} (one per frame), got {len(labels)}")
    return {
        "caption": [str(c) for c in captions],
        "gt_pose": fit.pose.tolist(),
        "gt_pose_6d": axis_angle_to_pose6d(torch.from_numpy(fit.pose[:, :66])).numpy().tolist(),
        "gt_joints": fit.joints.astype(np.float32).tolist(),
        "pose_id": list(range(n)),
        "key_pose": labels,
        "ground": fit.ground.astype(np.float32).tolist(),
        "ik_residual_mm": fit.residual_mm.astype(np.float32).tolist(),
        "ik_ok": (fit.residual_mm <= max_residual_mm).tolist(),
    }


def _sizes(clips: np.ndarray, splits: Sequence[float]) -> tuple[int, int, int]:
    """Frame counts of consecutive splits that end on clip boundaries."""
    if len(splits) != 3 or any(x < 0 for x in splits) or abs(sum(splits) - 1) > 1e-6:
        raise ValueError(f"splits: expected 3 fractions summing to 1, got {list(splits)}")
    bounds = np.flatnonzero(np.diff(clips)) + 1  # first frame of every clip after the first
    starts = np.concatenate([[0], bounds, [len(clips)]])
    n = len(clips)

    def cut(frac):
        return int(starts[np.abs(starts - frac * n).argmin()])

    a = cut(splits[0])
    b = max(cut(splits[0] + splits[1]), a)
    return a, b - a, n - b


def text2pose_from_joints(
    joints: np.ndarray, fmt: str, *, clip_ids: Sequence[int] | None = None,
    captions: Sequence[str] | None = None, labels: Sequence[str] | None = None,
    confidence: np.ndarray | None = None, seed: int = 0,
    splits: Sequence[float] = (0.8, 0.1, 0.1), max_residual_mm: float = MAX_RESIDUAL_MM,
) -> DatasetDict:
    """A text->pose ``DatasetDict`` from joint frames (module docstring)."""
    clips = np.arange(len(joints)) if clip_ids is None else np.asarray(clip_ids)
    fit = fit_frames(joints, fmt, clips, confidence=confidence)
    rows = add_text_prompts(_rows(fit, captions, labels, seed, max_residual_mm), seed)
    return split_rows(rows, TEXT2POSE_IK_FEATURES, _sizes(clips, splits))


def image2pose_from_joints(
    joints: np.ndarray, fmt: str, *, clip_ids: Sequence[int] | None = None,
    captions: Sequence[str] | None = None, labels: Sequence[str] | None = None,
    confidence: np.ndarray | None = None, seed: int = 0,
    splits: Sequence[float] = (0.8, 0.1, 0.1), max_residual_mm: float = MAX_RESIDUAL_MM,
    image_size: int = 56, style: str = "mesh",
) -> DatasetDict:
    """An image->pose ``DatasetDict``: the fitted bodies rendered like the synthetic ones
    (:func:`posrft.data.synth.add_pictures`), heading and viewpoint from the camera draw."""
    clips = np.arange(len(joints)) if clip_ids is None else np.asarray(clip_ids)
    fit = fit_frames(joints, fmt, clips, confidence=confidence)
    rows = _rows(fit, captions, labels, seed, max_residual_mm)
    add_pictures(rows, torch.from_numpy(fit.joints).float(), seed, image_size, style)
    return split_rows(rows, IMAGE2POSE_IK_FEATURES, _sizes(clips, splits))


def action_rows_with_smpl(dd: DatasetDict) -> DatasetDict:
    """An action-clip ``DatasetDict`` (:mod:`posrft.data.actions`, any format with an SMPL map)
    with per-frame SMPL rotations added: ``smpl_pose_6d`` (T, 132) facing as in the clip and
    ``ik_residual_mm`` (T,)."""
    out = {}
    for split, ds in dd.items():
        six, res = [], []
        for row in ds.with_format("numpy"):
            clip = np.stack(row["joints"]) if row["joints"].dtype == object else row["joints"]
            fit = fit_smpl(clip, str(row["format"]))
            six.append(fit.pose6d[:, :132].numpy().tolist())
            res.append((fit.mpjpe * 1000).numpy().tolist())
        features = ds.features.copy()
        features["smpl_pose_6d"] = Seq(Seq(Value("float32"), length=132))
        features["ik_residual_mm"] = Seq(Value("float32"))
        out[split] = ds.add_column("smpl_pose_6d", six).add_column("ik_residual_mm", res)
        out[split] = out[split].cast(features)
    return DatasetDict(out)
