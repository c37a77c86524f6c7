"""Loaders for pose datasets the user keeps locally (nothing is ever downloaded).

One module per on-disk format; each returns dataclasses of float32 numpy arrays with documented
shapes and units, and reports a malformed file as :class:`DatasetFormatError` naming the file and
the line (text formats) or key (npz / pickle / json).

========================  =======================================================================
AMASS ``.npz``            :func:`load_amass`, :func:`iter_amass` -> :class:`AmassSequence`
PoseScript JSON + AMASS   :func:`load_posescript` -> :class:`PoseScriptRecord`
3DPW ``.pkl``             :func:`load_3dpw`, :func:`iter_3dpw` -> :class:`ThreeDPWSequence`
H3.6M (SPIN ``.npz``)     :func:`load_h36m_spin` -> :class:`SpinH36M`
NTU ``.skeleton``         :func:`load_ntu_skeleton`, :func:`iter_ntu` -> :class:`NTUSkeleton`
HumanML3D ``.npy/.txt``   :func:`load_humanml3d`, :func:`iter_humanml3d` -> :class:`HumanML3DRecord`
========================  =======================================================================
"""

from posrft.data.loaders.amass import (
    AmassSequence,
    amass_files,
    iter_amass,
    load_amass,
    resample_indices,
)
from posrft.data.loaders.common import DatasetFormatError, smpl_pose_from_body
from posrft.data.loaders.h36m_spin import SPIN24_JOINTS, SPIN24_TO_H36M17, SpinH36M, load_h36m_spin
from posrft.data.loaders.humanml3d import (
    HumanML3DCaption,
    HumanML3DRecord,
    humanml3d_ids,
    iter_humanml3d,
    load_humanml3d,
    load_humanml3d_joints,
    load_humanml3d_texts,
)
from posrft.data.loaders.ntu import (
    NTUSampleName,
    NTUSkeleton,
    iter_ntu,
    load_ntu_skeleton,
    parse_ntu_name,
)
from posrft.data.loaders.posescript import (
    PoseScriptRecord,
    load_posescript,
    load_posescript_captions,
    load_posescript_index,
    load_posescript_split,
    normalize_global_orient,
)
from posrft.data.loaders.threedpw import (
    ThreeDPWActor,
    ThreeDPWSequence,
    iter_3dpw,
    load_3dpw,
    to_camera_frame,
)

__all__ = [
    "AmassSequence", "DatasetFormatError", "HumanML3DCaption", "HumanML3DRecord",
    "NTUSampleName", "NTUSkeleton", "PoseScriptRecord", "SPIN24_JOINTS", "SPIN24_TO_H36M17",
    "SpinH36M", "ThreeDPWActor", "ThreeDPWSequence", "amass_files", "humanml3d_ids",
    "iter_3dpw", "iter_amass", "iter_humanml3d", "iter_ntu", "load_3dpw", "load_amass",
    "load_h36m_spin", "load_humanml3d", "load_humanml3d_joints", "load_humanml3d_texts",
    "load_ntu_skeleton", "load_posescript", "load_posescript_captions", "load_posescript_index",
    "load_posescript_split", "normalize_global_orient", "parse_ntu_name", "resample_indices",
    "smpl_pose_from_body", "to_camera_frame",
]  # fmt: skip
