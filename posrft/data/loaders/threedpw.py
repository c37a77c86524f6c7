"""3DPW sequence files (``sequenceFiles/{train,validation,test}/<sequence>.pkl``).

Each file is a Python-2 pickle of a dict (keys as in the 3DPW readme and as read by SPIN's
``pw3d.py`` and VIBE's ``threedpw_utils.py``); per-actor fields are lists with one entry per
actor (one or two actors):

=================  ==============================================================================
``sequence``       sequence name (str).
``genders``        ``['m' | 'f', ...]`` (the readme calls it ``gender``; both are accepted).
``betas``          per actor ``(10,)`` SMPL shape (longer vectors are cut to 10, as SPIN does).
``poses``          per actor ``(N, 72)`` SMPL axis-angle in the world frame, image-aligned.
``trans``          per actor ``(N, 3)`` root translation, metres, world frame.
``jointPositions`` per actor ``(N, 72)`` = 24 SMPL joints x 3, metres, world frame.
``poses2d``        per actor ``(N, 3, 18)`` OpenPose/COCO-18 2D keypoints (x, y, confidence) in
                   pixels (``poses2D`` also accepted).
``cam_poses``      ``(N, 4, 4)`` world-to-camera extrinsics per image frame.
``cam_intrinsics`` ``(3, 3)`` K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].
``campose_valid``  per actor ``(N,)`` whether the camera pose of that frame is aligned.
``img_frame_ids``  ``(N,)`` ids of the image frames (the 60 Hz -> 30 Hz index array).
=================  ==============================================================================

Security: these files are pickles, and unpickling runs code chosen by whoever wrote the file.
:func:`load_3dpw` unpickles only the path it is given (the user's configured 3DPW folder) with
``pickle.load(f, encoding="latin1")``; never point it at files from an untrusted source.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import roma
import torch

from posrft.data.loaders.common import (
    DatasetFormatError,
    PathLike,
    check_array,
    missing_key_error,
    normalize_gender,
)

THREEDPW_FPS = 30.0
SPLITS = ("train", "validation", "test")


@dataclass(eq=False)
class ThreeDPWActor:
    """One actor of a 3DPW sequence (N image frames).

    Attributes:
        poses: ``(N, 72)`` float32 SMPL axis-angle, world frame: global_orient(3) + body_pose(69).
        trans: ``(N, 3)`` float32 metres, world frame.
        betas: ``(10,)`` float32 SMPL shape.
        gender: ``"male"`` or ``"female"``.
        joints3d: ``(N, 24, 3)`` float32 SMPL joints, metres, world frame.
        keypoints2d: ``(N, 18, 3)`` float32 COCO-18 keypoints: x, y (pixels), confidence.
        campose_valid: ``(N,)`` bool.
    """

    poses: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    gender: str
    joints3d: np.ndarray
    keypoints2d: np.ndarray
    campose_valid: np.ndarray


@dataclass(eq=False)
class ThreeDPWSequence:
    """A 3DPW sequence.

    Attributes:
        path: the ``.pkl`` file.
        name: sequence name, e.g. ``"downtown_walking_00"``.
        actors: one :class:`ThreeDPWActor` per person.
        cam_intrinsics: ``(3, 3)`` float32.
        cam_poses: ``(N, 4, 4)`` float32 world-to-camera extrinsics ``[R | t]``.
        img_frame_ids: ``(N,)`` int64.
        fps: 30 (image frame rate).
    """

    path: Path
    name: str
    actors: list[ThreeDPWActor]
    cam_intrinsics: np.ndarray
    cam_poses: np.ndarray
    img_frame_ids: np.ndarray
    fps: float = THREEDPW_FPS

    @property
    def num_frames(self) -> int:
        return int(self.cam_poses.shape[0])

    def image_names(self) -> list[str]:
        """``imageFiles/<name>/image_%05d.jpg`` for every frame (the 3DPW image layout)."""
        return [f"imageFiles/{self.name}/image_{i:05d}.jpg" for i in range(self.num_frames)]


def _get(data: dict, path: Path, *keys: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    raise missing_key_error(path, " or ".join(keys), list(data.keys()))


def _per_actor(path: Path, key: str, value: Any, count: int | None) -> list:
    if not isinstance(value, (list, tuple)) and not (
        isinstance(value, np.ndarray) and value.dtype == object
    ):
        # Some tools save single-actor fields as a stacked array; accept (A, ...) arrays too.
        value = list(np.asarray(value))
    value = list(value)
    if count is not None and len(value) != count:
        raise DatasetFormatError(
            path, f"expected one entry per actor ({count}), got {len(value)}", key=key
        )
    return value


def load_3dpw(path: PathLike) -> ThreeDPWSequence:
    """Unpickle one 3DPW sequence file (trusted input only, see the module doc) and check it.

    Raises:
        DatasetFormatError: not a pickle of a dict, a missing key (lists the keys present), a
            per-actor list of the wrong length, or an array of the wrong shape (names the key
            and actor, e.g. ``key 'poses[1]'``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        try:
            data = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as exc:
            raise DatasetFormatError(path, f"not a readable pickle ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(path, f"expected a pickled dict, got {type(data).__name__}")

    cam_poses = check_array(_get(data, path, "cam_poses"), path, "cam_poses", (None, 4, 4))
    n = cam_poses.shape[0]
    intr = check_array(_get(data, path, "cam_intrinsics"), path, "cam_intrinsics", (3, 3))
    frame_ids = check_array(
        _get(data, path, "img_frame_ids"), path, "img_frame_ids", (n,), dtype=np.int64
    )
    name = _get(data, path, "sequence")
    name = name.decode("latin1") if isinstance(name, bytes) else str(name)

    poses = _per_actor(path, "poses", _get(data, path, "poses"), None)
    a = len(poses)
    if a == 0:
        raise DatasetFormatError(
            path, "expected at least one actor, got an empty list", key="poses"
        )
    fields = {
        key: _per_actor(path, key, _get(data, path, *names), a)
        for key, names in {
            "trans": ("trans",), "betas": ("betas",), "genders": ("genders", "gender"),
            "jointPositions": ("jointPositions",), "poses2d": ("poses2d", "poses2D"),
            "campose_valid": ("campose_valid",),
        }.items()
    }  # fmt: skip

    actors = []
    for i in range(a):
        betas = np.asarray(fields["betas"][i]).reshape(-1)
        if betas.size < 10:
            raise DatasetFormatError(
                path, f"expected at least 10 shape values, got {betas.size}", key=f"betas[{i}]"
            )
        kp = check_array(fields["poses2d"][i], path, f"poses2d[{i}]", (n, 3, 18))
        joints = check_array(fields["jointPositions"][i], path, f"jointPositions[{i}]", (n, 72))
        valid = np.asarray(fields["campose_valid"][i]).reshape(-1)
        if valid.shape != (n,):
            raise DatasetFormatError(
                path, f"expected {n} flags (one per frame), got {valid.shape}",
                key=f"campose_valid[{i}]",
            )  # fmt: skip
        actors.append(
            ThreeDPWActor(
                poses=check_array(poses[i], path, f"poses[{i}]", (n, 72)),
                trans=check_array(fields["trans"][i], path, f"trans[{i}]", (n, 3)),
                betas=check_array(betas[:10], path, f"betas[{i}]", (10,)),
                gender=normalize_gender(fields["genders"][i], path, f"genders[{i}]"),
                joints3d=joints.reshape(n, 24, 3),
                keypoints2d=np.ascontiguousarray(kp.transpose(0, 2, 1)),
                campose_valid=valid.astype(bool),
            )
        )
    return ThreeDPWSequence(path, name, actors, intr, cam_poses, frame_ids)


def iter_3dpw(root: PathLike, split: str = "test") -> Iterator[ThreeDPWSequence]:
    """Yield every sequence of ``<root>/sequenceFiles/<split>/*.pkl`` in sorted order."""
    if split not in SPLITS:
        raise ValueError(f"3DPW split must be one of {SPLITS}, got {split!r}")
    folder = Path(root) / "sequenceFiles" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"3DPW split folder {str(folder)!r} does not exist")
    for path in sorted(folder.glob("*.pkl")):
        yield load_3dpw(path)


def to_camera_frame(
    actor: ThreeDPWActor, cam_poses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Express an actor's global orientation and 3D joints in each frame's camera frame.

    With the extrinsics ``[R_c | t_c]`` of frame ``i``:

        R_global' = R_c @ R_global          (as SPIN/VIBE do before evaluation)
        X' = R_c @ X + t_c                  for every joint X

    Body pose (joints 1..23) is relative and unchanged. ``trans`` is not converted: the camera
    rotation acts about the origin while SMPL rotates about the pelvis, so the camera-frame
    translation needs the body model's rest pelvis (use the joints instead).

    Returns:
        ``poses_cam (N, 72)`` and ``joints_cam (N, 24, 3)``, float32.
    """
    cam = torch.as_tensor(np.asarray(cam_poses), dtype=torch.float64)
    rc, tc = cam[:, :3, :3], cam[:, :3, 3]
    poses = torch.as_tensor(actor.poses, dtype=torch.float64).clone()
    rg = roma.rotvec_to_rotmat(poses[:, :3])
    poses[:, :3] = roma.rotmat_to_rotvec(rc @ rg)
    x = torch.as_tensor(actor.joints3d, dtype=torch.float64)
    joints = torch.einsum("nij,nkj->nki", rc, x) + tc[:, None, :]
    return poses.numpy().astype(np.float32), joints.numpy().astype(np.float32)
