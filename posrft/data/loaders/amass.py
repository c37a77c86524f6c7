"""AMASS motion files (``.npz``, SMPL-H "G" or SMPL-X "N" releases) -> SMPL-24 axis-angle.

On-disk keys (AMASS release layout):

============================  =================================================================
``poses``                     ``(N, 156)`` SMPL-H: global orient 3 | body 63 | left hand 45 |
                              right hand 45; or ``(N, 165)`` SMPL-X: global 3 | body 63 | jaw 3
                              | left eye 3 | right eye 3 | left hand 45 | right hand 45.
                              ``(N, 72)`` (plain SMPL, written by some tools) is also accepted.
``trans``                     ``(N, 3)`` root translation, metres, AMASS world frame (z up).
``betas``                     ``(B,)`` shape coefficients of the *source* model (B = 16 in both
                              releases; SMPL-H/SMPL-X shape spaces, not SMPL's).
``gender``                    0-d string: ``male``/``female``/``neutral``.
``mocap_framerate``           SMPL-H release; ``mocap_frame_rate`` in the SMPL-X release (Hz).
============================  =================================================================

Conversion: SMPL joints 0..21 share their definition with SMPL-H/SMPL-X body joints, so the first
66 values are copied; SMPL joints 22/23 (hands) are set to zero (see
:func:`~posrft.data.loaders.common.smpl_pose_from_body`). Subsampling keeps, for each output time
``k / target_fps``, the nearest source frame (:func:`resample_indices`).

Folders: :func:`iter_amass` walks a tree in sorted path order and skips the per-subject
``shape.npz`` files (betas only, no motion).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from posrft.data.loaders.common import (
    DatasetFormatError,
    PathLike,
    check_array,
    missing_key_error,
    normalize_gender,
    npz_get,
    open_npz,
    smpl_pose_from_body,
)

_SOURCE_MODELS = {156: "smplh", 165: "smplx", 72: "smpl"}
_FPS_KEYS = ("mocap_framerate", "mocap_frame_rate")


@dataclass(eq=False)
class AmassSequence:
    """One AMASS sequence converted to SMPL-24.

    Attributes:
        path: the source ``.npz``.
        poses: ``(N, 72)`` float32 axis-angle (radians): global_orient(3) + body_pose(69);
            joints 22/23 (hands) are zero unless the file is plain SMPL.
        trans: ``(N, 3)`` float32 metres, AMASS world frame (z up).
        betas: ``(B,)`` float32 shape coefficients of ``source_model`` (usually B = 16).
        gender: ``"male"``, ``"female"`` or ``"neutral"``.
        fps: frame rate of the returned frames (the target rate when subsampled).
        source_fps: frame rate stored in the file.
        source_model: ``"smplh"``, ``"smplx"`` or ``"smpl"`` (from the pose width).
        frame_indices: ``(N,)`` int64 source frame of every returned frame.
    """

    path: Path
    poses: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    gender: str
    fps: float
    source_fps: float
    source_model: str
    frame_indices: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])


def resample_indices(num_frames: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Indices of the source frames kept when resampling from ``source_fps`` to ``target_fps``.

    Output frame ``k`` is at time ``k / target_fps``; its source frame is the nearest one,
    ``floor(k * r + 1/2)`` with ``r = source_fps / target_fps``, for ``k = 0 .. floor((N-1)/r)``
    (the last output time does not pass the last source frame). For an integer ``r`` this is
    ``range(0, N, r)``. Upsampling (``target_fps > source_fps``) is refused.
    """
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(
            f"frame rates must be positive, got source {source_fps}, target {target_fps}"
        )
    if target_fps > source_fps * (1 + 1e-9):
        raise ValueError(
            f"target_fps {target_fps} exceeds the source frame rate {source_fps}; "
            "only subsampling is supported"
        )
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    ratio = source_fps / target_fps
    count = int(np.floor((num_frames - 1) / ratio + 1e-9)) + 1
    idx = np.floor(np.arange(count) * ratio + 0.5).astype(np.int64)
    return np.minimum(idx, num_frames - 1)


def _read_fps(data, path: Path) -> float:
    for key in _FPS_KEYS:
        if key in data:
            fps = np.asarray(npz_get(data, path, key))
            if fps.size != 1 or fps.dtype.kind not in "biuf" or not float(fps.reshape(())) > 0:
                raise DatasetFormatError(
                    path, f"expected one positive number, got {fps!r}", key=key
                )
            return float(fps.reshape(()))
    raise missing_key_error(path, " or ".join(_FPS_KEYS), list(data.keys()))


def load_amass(path: PathLike, target_fps: float | None = None) -> AmassSequence:
    """Load one AMASS ``.npz`` as SMPL-24 axis-angle, optionally subsampled to ``target_fps``.

    Raises:
        DatasetFormatError: a key is missing (the message lists the keys present), has the wrong
            shape (``poses`` must be ``(N, 156)``, ``(N, 165)`` or ``(N, 72)``; ``trans``
            ``(N, 3)`` with the same N; ``betas`` 1-D), or an unknown gender.
        ValueError: ``target_fps`` above the file's frame rate.
    """
    path = Path(path)
    with open_npz(path) as data:
        poses_raw = np.asarray(npz_get(data, path, "poses"))
        if poses_raw.ndim != 2 or poses_raw.shape[1] not in _SOURCE_MODELS:
            raise DatasetFormatError(
                path,
                f"expected shape (N, 156) (SMPL-H), (N, 165) (SMPL-X) or (N, 72) (SMPL), "
                f"got {poses_raw.shape}",
                key="poses",
            )
        poses_raw = check_array(poses_raw, path, "poses", (None, poses_raw.shape[1]))
        n = poses_raw.shape[0]
        trans = check_array(npz_get(data, path, "trans"), path, "trans", (n, 3))
        betas = check_array(npz_get(data, path, "betas"), path, "betas", (None,))
        gender = normalize_gender(npz_get(data, path, "gender"), path, "gender")
        source_fps = _read_fps(data, path)

    source_model = _SOURCE_MODELS[poses_raw.shape[1]]
    poses = poses_raw if source_model == "smpl" else smpl_pose_from_body(poses_raw)
    if target_fps is None:
        idx = np.arange(n, dtype=np.int64)
        fps = source_fps
    else:
        idx = resample_indices(n, source_fps, float(target_fps))
        fps = float(target_fps)
    return AmassSequence(
        path=path,
        poses=np.ascontiguousarray(poses[idx]),
        trans=np.ascontiguousarray(trans[idx]),
        betas=betas,
        gender=gender,
        fps=fps,
        source_fps=source_fps,
        source_model=source_model,
        frame_indices=idx,
    )


def amass_files(root: PathLike) -> list[Path]:
    """All motion ``.npz`` files under ``root`` in sorted order, without ``shape.npz`` files."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AMASS folder {str(root)!r} does not exist")
    return sorted(p for p in root.rglob("*.npz") if p.name != "shape.npz")


def iter_amass(root: PathLike, target_fps: float | None = None) -> Iterator[AmassSequence]:
    """Yield :func:`load_amass` for every motion file under ``root`` (see :func:`amass_files`)."""
    for path in amass_files(root):
        yield load_amass(path, target_fps=target_fps)
