"""HumanML3D joint motions (``new_joints/<id>.npy``) with their captions (``texts/<id>.txt``).

* ``new_joints/<id>.npy``: ``(T, 22, 3)`` float joint positions in metres, SMPL-22 joint order
  (skeleton format ``smpl22``), y up, 20 fps.
* ``texts/<id>.txt``: one caption per line, ``caption#tokens#start#end``; ``tokens`` are
  space-separated ``word/POS`` pairs; ``start``/``end`` are seconds. ``0#0`` (or ``nan``, read as
  0 as in the text-to-motion loaders) means the caption describes the whole clip; otherwise it
  describes frames ``int(start * 20) : int(end * 20)``.
* ``train.txt`` / ``val.txt`` / ``test.txt`` (optional): one id per line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from posrft.data.loaders.common import DatasetFormatError, PathLike, check_array, load_npy

HUMANML3D_FPS = 20.0
HUMANML3D_JOINTS = 22


@dataclass(frozen=True)
class HumanML3DCaption:
    """One caption line: text, POS-tagged tokens, and the described span in seconds."""

    text: str
    tokens: tuple[str, ...]
    start: float
    end: float

    @property
    def whole_clip(self) -> bool:
        return self.start == 0.0 and self.end == 0.0

    def frame_slice(self, fps: float = HUMANML3D_FPS) -> slice:
        """Frames described: everything for ``whole_clip``, else ``int(start*fps):int(end*fps)``."""
        if self.whole_clip:
            return slice(None)
        return slice(int(self.start * fps), int(self.end * fps))


@dataclass(eq=False)
class HumanML3DRecord:
    """A motion and its captions.

    Attributes:
        motion_id: file stem, e.g. ``"000021"`` or ``"M000021"`` (mirrored).
        joints: ``(T, 22, 3)`` float32 metres, ``smpl22`` order.
        captions: the caption lines of ``texts/<id>.txt``.
        fps: 20.
    """

    motion_id: str
    joints: np.ndarray
    captions: list[HumanML3DCaption]
    fps: float = HUMANML3D_FPS
    skeleton_format: str = "smpl22"

    def segment(self, caption: HumanML3DCaption) -> np.ndarray:
        """The ``(T', 22, 3)`` frames that ``caption`` describes."""
        return self.joints[caption.frame_slice(self.fps)]


def _seconds(path: Path, line: int, value: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise DatasetFormatError(
            path, f"expected a number of seconds for {what}, got {value!r}", line=line
        ) from None
    return 0.0 if math.isnan(x) else x


def load_humanml3d_texts(path: PathLike) -> list[HumanML3DCaption]:
    """Parse a ``texts/<id>.txt`` file (blank lines are skipped).

    Raises:
        DatasetFormatError: a line without the four ``#``-separated fields, or a non-numeric
            start/end, naming the file and the 1-based line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, f"not a UTF-8 text file ({exc})") from None
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.strip().rsplit("#", 3)
        if len(parts) != 4:
            raise DatasetFormatError(
                path,
                f"expected 4 '#'-separated fields caption#tokens#start#end, got {len(parts)}",
                line=n,
            )
        text, tokens, start, end = parts
        out.append(
            HumanML3DCaption(
                text=text,
                tokens=tuple(tokens.split()),
                start=_seconds(path, n, start, "start"),
                end=_seconds(path, n, end, "end"),
            )
        )
    return out


def load_humanml3d_joints(path: PathLike) -> np.ndarray:
    """Load ``new_joints/<id>.npy`` as ``(T, 22, 3)`` float32 (checked shape, T >= 1)."""
    arr = check_array(load_npy(path), path, None, (None, HUMANML3D_JOINTS, 3))
    if arr.shape[0] == 0:
        raise DatasetFormatError(path, "expected at least one frame, got 0")
    return arr


def humanml3d_ids(
    root: PathLike, split: str | None = None, joints_dir: str = "new_joints"
) -> list[str]:
    """Ids of ``<root>/<split>.txt`` (file order), or of every ``<joints_dir>/*.npy`` (sorted)."""
    root = Path(root)
    if split is None:
        folder = root / joints_dir
        if not folder.is_dir():
            raise FileNotFoundError(f"HumanML3D joints folder {str(folder)!r} does not exist")
        return sorted(p.stem for p in folder.glob("*.npy"))
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"HumanML3D split file {str(split_file)!r} does not exist")
    return [s.strip() for s in split_file.read_text(encoding="utf-8").splitlines() if s.strip()]


def load_humanml3d(
    root: PathLike, motion_id: str, *, joints_dir: str = "new_joints", texts_dir: str = "texts"
) -> HumanML3DRecord:
    """Load motion ``motion_id`` (joints and captions) from a HumanML3D folder."""
    root = Path(root)
    joints = load_humanml3d_joints(root / joints_dir / f"{motion_id}.npy")
    captions = load_humanml3d_texts(root / texts_dir / f"{motion_id}.txt")
    return HumanML3DRecord(motion_id, joints, captions)


def iter_humanml3d(
    root: PathLike,
    split: str | None = None,
    *,
    joints_dir: str = "new_joints",
    texts_dir: str = "texts",
) -> Iterator[HumanML3DRecord]:
    """Yield :func:`load_humanml3d` for every id of ``split`` (or every motion file)."""
    for motion_id in humanml3d_ids(root, split, joints_dir):
        yield load_humanml3d(root, motion_id, joints_dir=joints_dir, texts_dir=texts_dir)
