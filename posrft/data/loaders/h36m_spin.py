"""Human3.6M preprocessed the SPIN way (``h36m_train.npz``, ``h36m_valid_protocol{1,2}.npz``).

Keys written by SPIN's ``datasets/preprocess/h36m_train.py`` and read by its
``datasets/base_dataset.py`` (N crops):

==============  ===================================================================================
``imgname``     ``(N,)`` image paths relative to the Human3.6M image folder.
``center``      ``(N, 2)`` bounding-box centre, pixels.
``scale``       ``(N,)`` box size / 200 px.
``part``        ``(N, 24, 3)`` 2D keypoints in SPIN's 24-joint order (x, y pixels, visibility).
``S``           ``(N, 24, 4)`` 3D joints (x, y, z metres, camera frame, pelvis-centred for the
                H3.6M crops) + confidence (1 where the dataset provides the joint).
``pose``        optional ``(N, 72)`` SMPL axis-angle (e.g. MoSh fits); ``shape`` ``(N, 10)`` betas.
``has_smpl``    optional ``(N,)``; when ``pose`` is present and this is absent every row has SMPL.
``gender``      optional ``(N,)`` ``'m'``/``'f'``.
==============  ===================================================================================

SPIN's 24 joints (``constants.JOINT_NAMES[25:]``) are listed in :data:`SPIN24_JOINTS`; the 17
Human3.6M joints occupy the slots :data:`SPIN24_TO_H36M17` (in the order of the ``h36m17``
skeleton format), the others have confidence 0 in H3.6M files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posrft.body.formats import H36M17
from posrft.data.loaders.common import (
    DatasetFormatError,
    PathLike,
    check_array,
    normalize_gender,
    npz_get,
    open_npz,
)

SPIN24_JOINTS: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck_lsp", "head_top_lsp", "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m",
    "head_h36m", "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)  # fmt: skip

# SPIN-24 slot of each h36m17 joint, by position in the standard Human3.6M 17-joint order
# (pelvis, R hip/knee/ankle, L hip/knee/ankle, spine, thorax, neck-nose, head top, L shoulder/
# elbow/wrist, R shoulder/elbow/wrist), following SPIN's h36m_train.py (global_idx) and the
# pairing of H36M_TO_J17 with J24_TO_J17 in its constants: thorax -> 'Neck (LSP)', neck-nose ->
# 'Jaw (H36M)', head top -> 'Head (H36M)'.
_H36M17_AS_SPIN = (
    "pelvis_mpii", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "spine_h36m", "neck_lsp", "jaw_h36m", "head_h36m", "left_shoulder",
    "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)  # fmt: skip
assert len(_H36M17_AS_SPIN) == H36M17.num_joints
SPIN24_TO_H36M17: tuple[int, ...] = tuple(SPIN24_JOINTS.index(n) for n in _H36M17_AS_SPIN)


@dataclass(eq=False)
class SpinH36M:
    """A SPIN-style Human3.6M file.

    Attributes:
        path: the ``.npz``.
        imgname: N image paths.
        center: ``(N, 2)`` float32 pixels; ``scale``: ``(N,)`` float32 (box size / 200 px).
        keypoints2d: ``(N, 24, 3)`` float32 SPIN-24 order: x, y (pixels), visibility.
        joints3d: ``(N, 24, 3)`` float32 metres; ``joints3d_conf``: ``(N, 24)`` float32.
        poses: ``(N, 72)`` float32 SMPL axis-angle or ``None``; ``betas``: ``(N, 10)`` or None.
        has_smpl: ``(N,)`` bool (all False without ``pose``).
        gender: N of ``"male"``/``"female"``, or ``None``.
    """

    path: Path
    imgname: list[str]
    center: np.ndarray
    scale: np.ndarray
    keypoints2d: np.ndarray
    joints3d: np.ndarray
    joints3d_conf: np.ndarray
    poses: np.ndarray | None
    betas: np.ndarray | None
    has_smpl: np.ndarray
    gender: list[str] | None

    def __len__(self) -> int:
        return len(self.imgname)

    def joints_h36m17(self) -> np.ndarray:
        """``(N, 17, 3)`` 3D joints in the ``h36m17`` format's order."""
        return self.joints3d[:, list(SPIN24_TO_H36M17)]


def load_h36m_spin(path: PathLike, *, require_3d: bool = True) -> SpinH36M:
    """Load a SPIN-style Human3.6M ``.npz`` (keys in the module doc).

    Args:
        require_3d: if False a file without ``S`` loads with zero joints and zero confidence.
    Raises:
        DatasetFormatError: a missing key (lists the keys present) or a wrong shape (names it).
    """
    path = Path(path)
    with open_npz(path) as data:
        names = np.asarray(npz_get(data, path, "imgname"))
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DatasetFormatError(
                path, f"expected (N,) strings, got {names.dtype} {names.shape}", key="imgname"
            )
        n = names.shape[0]
        imgname = [x.decode() if isinstance(x, bytes) else str(x) for x in names.tolist()]
        center = check_array(npz_get(data, path, "center"), path, "center", (n, 2))
        scale = check_array(npz_get(data, path, "scale"), path, "scale", (n,))
        part = check_array(npz_get(data, path, "part"), path, "part", (n, 24, 3))
        if "S" in data or require_3d:
            s = check_array(npz_get(data, path, "S"), path, "S", (n, 24, 4))
        else:
            s = np.zeros((n, 24, 4), dtype=np.float32)
        poses = betas = None
        has_smpl = np.zeros(n, dtype=bool)
        if "pose" in data:
            poses = check_array(npz_get(data, path, "pose"), path, "pose", (n, 72))
            betas = check_array(npz_get(data, path, "shape"), path, "shape", (n, 10))
            has_smpl = np.ones(n, dtype=bool)
            if "has_smpl" in data:
                flags = check_array(npz_get(data, path, "has_smpl"), path, "has_smpl", (n,))
                has_smpl = flags.astype(bool)
        gender = None
        if "gender" in data:
            g = np.asarray(npz_get(data, path, "gender"))
            if g.shape != (n,):
                raise DatasetFormatError(
                    path, f"expected shape ({n},), got {g.shape}", key="gender"
                )
            gender = [normalize_gender(x, path, f"gender[{i}]") for i, x in enumerate(g)]
    return SpinH36M(
        path=path,
        imgname=imgname,
        center=center,
        scale=scale,
        keypoints2d=part,
        joints3d=np.ascontiguousarray(s[..., :3]),
        joints3d_conf=np.ascontiguousarray(s[..., 3]),
        poses=poses,
        betas=betas,
        has_smpl=has_smpl,
        gender=gender,
    )
