"""PoseScript (text descriptions of AMASS poses) -> records of (data_id, captions, SMPL-24 pose).

Files of a PoseScript release folder (``posescript_release/``), as read by ``text2pose``:

* ``ids_2_dataset_sequence_and_frame_index_100k.json``: ``{"<data_id>": ["AMASS",
  "<npz path relative to the AMASS SMPL-H root>", <frame index>]}``.
* ``{train,val,test}_ids_100k.json``: a list of integer data ids.
* ``posescript_human_6293.json`` / ``posescript_auto_100k.json``: ``{"<data_id>": caption}``
  where ``caption`` is a string or a list of strings.

Poses come from the AMASS ``poses`` array, frame ``frame index`` of that file (the source frame
rate; no resampling). As in ``text2pose.utils.get_pose_data_from_file`` the global orientation
is normalised by default: with ``R = Rz(c) Ry(b) Rx(a)`` (extrinsic x-y-z Euler angles) the
rotation about AMASS's vertical axis ``z`` is dropped, ``R' = Ry(b) Rx(a)``.

As in ``text2pose.data.load_posescript`` an id of the split that has no caption in the chosen
caption files is left out, and captions of several files are concatenated per id.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import roma
import torch

from posrft.data.loaders.common import (
    DatasetFormatError,
    PathLike,
    check_array,
    npz_get,
    open_npz,
    SMPL_BODY_AA_DIMS,
    read_json,
    smpl_pose_from_body,
)

CaptionSet = Literal["human", "auto", "both"]
_CAPTION_GLOBS = {"human": ["posescript_human_*.json"], "auto": ["posescript_auto_*.json"]}
_CAPTION_GLOBS["both"] = _CAPTION_GLOBS["human"] + _CAPTION_GLOBS["auto"]


@dataclass(eq=False)
class PoseScriptRecord:
    """One described pose.

    Attributes:
        data_id: PoseScript id.
        captions: every caption of this id (file order, then order within the file).
        pose: ``(72,)`` float32 SMPL-24 axis-angle: global_orient(3) + body_pose(69), hands zero.
        dataset: source dataset named in the mapping file (``"AMASS"``).
        sequence: AMASS npz path relative to the AMASS root.
        frame_index: frame of that sequence (source frame rate).
    """

    data_id: int
    captions: list[str]
    pose: np.ndarray
    dataset: str
    sequence: str
    frame_index: int


def normalize_global_orient(global_orient: np.ndarray) -> np.ndarray:
    """Drop the rotation about the vertical (z) axis: ``Rz(c) Ry(b) Rx(a) -> Ry(b) Rx(a)``.

    Args:
        global_orient: ``(..., 3)`` axis-angle.
    Returns:
        ``(..., 3)`` float32 axis-angle. Computed in float64 with roma's extrinsic ``"xyz"``
        Euler convention (the same decomposition as text2pose's ``rotvec_to_eulerangles``).
    """
    aa = torch.as_tensor(np.asarray(global_orient), dtype=torch.float64)
    euler = roma.rotmat_to_euler("xyz", roma.rotvec_to_rotmat(aa))
    euler[..., 2] = 0.0
    out = roma.rotmat_to_rotvec(roma.euler_to_rotmat("xyz", euler, dtype=torch.float64))
    return out.numpy().astype(np.float32)


def _find_one(folder: Path, pattern: str, what: str) -> Path:
    hits = sorted(folder.glob(pattern))
    if len(hits) != 1:
        found = [h.name for h in hits] or "none"
        raise FileNotFoundError(
            f"{folder}: expected exactly one {what} file matching {pattern!r}, found {found}; "
            "pass its path explicitly"
        )
    return hits[0]


def load_posescript_captions(files: Sequence[PathLike]) -> dict[int, list[str]]:
    """Merge caption files ``{"<data_id>": str | [str, ...]}`` into ``{data_id: [captions]}``."""
    captions: dict[int, list[str]] = defaultdict(list)
    for f in files:
        data = read_json(f)
        if not isinstance(data, dict):
            raise DatasetFormatError(
                f, f"expected a JSON object {{data_id: caption}}, got {type(data).__name__}"
            )
        for key, value in data.items():
            try:
                data_id = int(key)
            except ValueError:
                raise DatasetFormatError(f, "expected an integer data id as key", key=key) from None
            texts = value if isinstance(value, list) else [value]
            if not texts or not all(isinstance(t, str) for t in texts):
                raise DatasetFormatError(
                    f,
                    f"expected a caption string or a non-empty list of strings, got {value!r:.80}",
                    key=key,
                )
            captions[data_id].extend(texts)
    return dict(captions)


def load_posescript_split(path: PathLike) -> list[int]:
    """A split file: a JSON list of integer data ids."""
    ids = read_json(path)
    if not isinstance(ids, list):
        raise DatasetFormatError(
            path, f"expected a JSON list of integer ids, got {type(ids).__name__}"
        )
    for i, v in enumerate(ids):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DatasetFormatError(path, f"expected an integer data id, got {v!r}", key=f"[{i}]")
    return ids


def load_posescript_index(path: PathLike) -> dict[int, tuple[str, str, int]]:
    """The mapping ``{"<data_id>": [dataset, relative_npz_path, frame_index]}``."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetFormatError(path, f"expected a JSON object, got {type(data).__name__}")
    out: dict[int, tuple[str, str, int]] = {}
    for key, v in data.items():
        ok = (
            isinstance(v, list) and len(v) == 3 and isinstance(v[0], str)
            and isinstance(v[1], str) and isinstance(v[2], int) and not isinstance(v[2], bool)
        )  # fmt: skip
        if not ok:
            raise DatasetFormatError(
                path, f"expected [dataset, npz_path, frame_index], got {v!r:.120}", key=key
            )
        try:
            out[int(key)] = (v[0], v[1], v[2])
        except ValueError:
            raise DatasetFormatError(path, "expected an integer data id as key", key=key) from None
    return out


def load_posescript(
    posescript_dir: PathLike,
    amass_dir: PathLike,
    split: str | None = "train",
    captions: CaptionSet | Sequence[PathLike] = "human",
    *,
    normalize_orient: bool = True,
    index_file: PathLike | None = None,
    split_file: PathLike | None = None,
) -> list[PoseScriptRecord]:
    """Load PoseScript records of one split, poses read from the user's AMASS SMPL-H folder.

    Args:
        posescript_dir: the release folder (mapping, split and caption JSON files).
        amass_dir: the AMASS root that the mapping's relative npz paths start from.
        split: ``"train"``/``"val"``/``"test"`` (file ``<split>_ids*.json``), or ``None`` for
            every id that has a caption.
        captions: ``"human"``, ``"auto"``, ``"both"`` (files found by name) or explicit paths.
        normalize_orient: drop the yaw of the global orientation (see module doc).
        index_file, split_file: explicit paths overriding the name search.

    Returns:
        Records in split-file order (sorted ids when ``split`` is None).

    Raises:
        DatasetFormatError: malformed JSON (file + line), a wrong entry (file + key), an id of
            the split missing from the mapping, a non-AMASS source, a frame index outside the
            sequence (npz file + key ``poses``).
    """
    root = Path(posescript_dir)
    if index_file is not None:
        index_path = Path(index_file)
    else:
        index_path = _find_one(root, "ids_2_dataset_sequence_and_frame_index*.json", "pose-index")
    if isinstance(captions, str):
        if captions not in _CAPTION_GLOBS:
            raise ValueError(
                f"captions must be 'human', 'auto', 'both' or a list of files, got {captions!r}"
            )
        kinds = ["human", "auto"] if captions == "both" else [captions]
        caption_files = [_find_one(root, _CAPTION_GLOBS[k][0], f"{k} caption") for k in kinds]
    else:
        caption_files = [Path(c) for c in captions]
    texts = load_posescript_captions(caption_files)
    if split_file is not None or split is not None:
        sp = (
            Path(split_file)
            if split_file
            else _find_one(root, f"{split}_ids*.json", f"{split!r} split")
        )
        ids = [i for i in load_posescript_split(sp) if i in texts]
    else:
        ids = sorted(texts)
    index = load_posescript_index(index_path)

    by_file: dict[str, list[int]] = defaultdict(list)
    for data_id in ids:
        if data_id not in index:
            raise DatasetFormatError(
                index_path, "data id of the split has no pose entry", key=str(data_id)
            )
        dataset, rel, _ = index[data_id]
        if dataset != "AMASS":
            raise DatasetFormatError(
                index_path,
                f"only AMASS sources are supported, got dataset {dataset!r}",
                key=str(data_id),
            )
        by_file[rel].append(data_id)

    poses: dict[int, np.ndarray] = {}
    amass_root = Path(amass_dir)
    # One pass per sequence file: many poses share a file, and AMASS does not fit in memory.
    for rel, data_ids in by_file.items():
        npz_path = amass_root / rel
        with open_npz(npz_path) as data:
            seq = np.asarray(npz_get(data, npz_path, "poses"))
        if seq.ndim != 2 or seq.shape[1] < SMPL_BODY_AA_DIMS:
            raise DatasetFormatError(
                npz_path, f"expected shape (N, >=66) axis-angle poses, got {seq.shape}", key="poses"
            )
        seq = check_array(seq, npz_path, "poses", (None, seq.shape[1]))
        for data_id in data_ids:
            frame = index[data_id][2]
            if not 0 <= frame < seq.shape[0]:
                raise DatasetFormatError(
                    npz_path,
                    f"frame index {frame} of data id {data_id} is outside [0, {seq.shape[0]})",
                    key="poses",
                )
            poses[data_id] = smpl_pose_from_body(seq[frame])

    records = []
    for data_id in ids:
        pose = poses[data_id]
        if normalize_orient:
            pose = pose.copy()
            pose[:3] = normalize_global_orient(pose[:3])
        dataset, rel, frame = index[data_id]
        records.append(PoseScriptRecord(data_id, list(texts[data_id]), pose, dataset, rel, frame))
    return records
