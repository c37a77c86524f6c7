"""NTU RGB+D / NTU RGB+D 120 Kinect v2 ``.skeleton`` text files -> ``ntu25`` joint arrays.

Line format (``read_skeleton_file.m`` of the dataset authors; whitespace-separated):

1. frame count ``T``
2. per frame: body count ``B`` (may be 0), then per body
   a. 10 body-info values: bodyID clipedEdges handLeftConfidence handLeftState
      handRightConfidence handRightState isRestricted leanX leanY trackingState
   b. joint count (25)
   c. 25 joint lines of 12 values: x y z (metres, camera space) depthX depthY (depth-map
      pixels) colorX colorY (RGB pixels) orientationW X Y Z (quaternion) trackingState
      (0 not tracked, 1 inferred, 2 tracked)

Body slots follow ``ntu_gendata.py`` (ST-GCN / MS-G3D): the ``b``-th body listed in a frame fills
slot ``b``; a frame listing no body leaves every slot empty (zeros). Of all slots, the
``max_bodies`` (2) with the largest motion energy are kept, in decreasing energy (ties: lower
slot first). The energy of a slot is ``std(x) + std(y) + std(z)`` over all joints of the frames
where the slot holds a body. ntu_gendata caps Kinect slots at 4 before ranking; here every slot
competes (identical whenever a frame lists at most 4 bodies).

File names ``SsssCcccPpppRrrrAaaa.skeleton`` give setup, camera, performer, replication and the
1-based action class; ``label`` is the 0-based class (``action - 1``). Which samples have
missing skeletons is the user's list (pass the names to ``skip`` of :func:`iter_ntu`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from posrft.data.loaders.common import DatasetFormatError, PathLike

NTU_JOINTS = 25
NTU_FPS = 30.0
BODY_INFO_VALUES = 10
JOINT_VALUES = 12
_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass(frozen=True)
class NTUSampleName:
    """Fields of ``SsssCcccPpppRrrrAaaa``: all 1-based as written; ``label = action - 1``."""

    name: str
    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        return self.action - 1


def parse_ntu_name(path: PathLike) -> NTUSampleName:
    """Parse ``SsssCcccPpppRrrrAaaa`` from a name such as ``S001C002P003R002A013.skeleton``."""
    stem = Path(path).name.split(".")[0]
    m = _NAME.fullmatch(stem)
    if m is None:
        raise DatasetFormatError(
            path,
            f"file name {stem!r} does not match SsssCcccPpppRrrrAaaa (e.g. S001C001P001R001A001)",
        )
    s, c, p, r, a = (int(g) for g in m.groups())
    return NTUSampleName(stem, s, c, p, r, a)


@dataclass(eq=False)
class NTUSkeleton:
    """A parsed ``.skeleton`` file: ``M <= max_bodies`` bodies, ``T`` frames, format ``ntu25``.

    Absent (body, frame) entries are zero and ``present`` is False there.

    Attributes:
        path: the source file; ``sample``: fields of its name.
        joints: ``(M, T, 25, 3)`` float32 metres, Kinect camera space.
        color_xy: ``(M, T, 25, 2)`` float32 RGB-frame pixels; ``depth_xy`` likewise, depth map.
        orientation: ``(M, T, 25, 4)`` float32 joint quaternions (w, x, y, z).
        tracking_state: ``(M, T, 25)`` int8 (0 not tracked, 1 inferred, 2 tracked).
        present: ``(M, T)`` bool; ``body_ids``: ``(M, T)`` int64 Kinect tracking ids (0 absent).
        bodies_per_frame: ``(T,)`` int64 body count written in each frame.
        slots: ``(M,)`` int64 original slot of each kept body.
        energy: ``(M,)`` float64 motion energy of each kept body.
    """

    path: Path
    sample: NTUSampleName | None
    joints: np.ndarray
    color_xy: np.ndarray
    depth_xy: np.ndarray
    orientation: np.ndarray
    tracking_state: np.ndarray
    present: np.ndarray
    body_ids: np.ndarray
    bodies_per_frame: np.ndarray
    slots: np.ndarray
    energy: np.ndarray
    skeleton_format: str = "ntu25"
    fps: float = NTU_FPS

    @property
    def num_bodies(self) -> int:
        return int(self.joints.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.joints.shape[1])


class _Lines:
    """Cursor over non-empty lines keeping 1-based line numbers for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.i = 0

    def next(self, what: str) -> tuple[int, list[str]]:
        while self.i < len(self.lines) and not self.lines[self.i].strip():
            self.i += 1
        if self.i >= len(self.lines):
            raise DatasetFormatError(
                self.path, f"unexpected end of file, expected {what}", line=len(self.lines) + 1
            )
        self.i += 1
        return self.i, self.lines[self.i - 1].split()

    def count(self, what: str, allowed: Iterable[int] | None = None) -> int:
        line, tok = self.next(what)
        if len(tok) != 1:
            raise DatasetFormatError(
                self.path, f"expected one {what}, got {len(tok)} values", line=line
            )
        try:
            value = int(tok[0])
        except ValueError:
            raise DatasetFormatError(
                self.path, f"expected an integer {what}, got {tok[0]!r}", line=line
            ) from None
        if value < 0 or (allowed is not None and value not in allowed):
            raise DatasetFormatError(self.path, f"invalid {what} {value}", line=line)
        return value

    def floats(self, n: int, what: str) -> tuple[int, list[str]]:
        line, tok = self.next(what)
        if len(tok) != n:
            raise DatasetFormatError(self.path, f"expected {n} {what}, got {len(tok)}", line=line)
        return line, tok


def _to_float(path: Path, line: int, tok: list[str], what: str) -> np.ndarray:
    try:
        return np.array(tok, dtype=np.float64)
    except ValueError:
        raise DatasetFormatError(
            path, f"non-numeric {what}: {' '.join(tok)!r}", line=line
        ) from None


def _line_of(cur: _Lines, first: int, k: int) -> int:
    """1-based line number of the ``k``-th non-empty line from line ``first`` on."""
    n = first - 1
    while True:
        if cur.lines[n].strip():
            if k == 0:
                return n + 1
            k -= 1
        n += 1


def _slot_energy(xyz: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``sum_c std(X[present][..., c])`` per slot; 0 for a slot that never holds a body."""
    out = np.zeros(xyz.shape[0])
    for s in range(xyz.shape[0]):
        frames = xyz[s, present[s]]
        if len(frames):
            out[s] = sum(frames[..., c].std() for c in range(3))
    return out


def load_ntu_skeleton(path: PathLike, max_bodies: int = 2) -> NTUSkeleton:
    """Parse one ``.skeleton`` file (see the module doc for the format and body selection).

    Raises:
        DatasetFormatError: truncated file, a line with the wrong number of values, a non-number,
            or a joint count other than 25 -- each naming the file and the 1-based line.
    """
    if max_bodies < 1:
        raise ValueError(f"max_bodies must be >= 1, got {max_bodies}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    sample = parse_ntu_name(path) if _NAME.fullmatch(path.name.split(".")[0]) else None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, f"not a text file ({exc})") from None
    cur = _Lines(path, text)

    num_frames = cur.count("frame count")
    frames: list[list[tuple[int, np.ndarray]]] = []
    for _ in range(num_frames):
        bodies = []
        for _ in range(cur.count("body count")):
            line, info = cur.floats(BODY_INFO_VALUES, "body-info values")
            try:
                body_id = int(info[0])
            except ValueError:
                raise DatasetFormatError(
                    path, f"expected an integer bodyID, got {info[0]!r}", line=line
                ) from None
            _to_float(path, line, info[1:], "body-info values")  # validated, not kept
            cur.count("joint count", allowed=(NTU_JOINTS,))
            first = cur.i + 1
            tokens: list[str] = []
            for _ in range(NTU_JOINTS):
                tokens += cur.floats(JOINT_VALUES, "joint values")[1]
            try:  # one conversion per body; on failure find the offending line
                values = np.array(tokens, dtype=np.float64).reshape(NTU_JOINTS, JOINT_VALUES)
            except ValueError:
                for k in range(NTU_JOINTS):
                    row = tokens[k * JOINT_VALUES : (k + 1) * JOINT_VALUES]
                    _to_float(path, _line_of(cur, first, k), row, "joint values")
                raise
            bodies.append((body_id, values))
        frames.append(bodies)

    counts = np.array([len(b) for b in frames], dtype=np.int64)
    slots = int(counts.max(initial=0))
    raw = np.zeros((slots, num_frames, NTU_JOINTS, JOINT_VALUES))
    present = np.zeros((slots, num_frames), dtype=bool)
    ids = np.zeros((slots, num_frames), dtype=np.int64)
    for t, bodies in enumerate(frames):
        for s, (body_id, values) in enumerate(bodies):
            raw[s, t], present[s, t], ids[s, t] = values, True, body_id

    energy = _slot_energy(raw[..., :3], present)
    keep = np.argsort(-energy, kind="stable")[:max_bodies]
    raw, present, ids = raw[keep], present[keep], ids[keep]
    return NTUSkeleton(
        path=path,
        sample=sample,
        joints=raw[..., 0:3].astype(np.float32),
        depth_xy=raw[..., 3:5].astype(np.float32),
        color_xy=raw[..., 5:7].astype(np.float32),
        orientation=raw[..., 7:11].astype(np.float32),
        tracking_state=raw[..., 11].astype(np.int8),
        present=present,
        body_ids=ids,
        bodies_per_frame=counts,
        slots=keep.astype(np.int64),
        energy=energy[keep],
    )


def iter_ntu(
    folder: PathLike, skip: Iterable[str] = (), max_bodies: int = 2
) -> Iterator[NTUSkeleton]:
    """Yield every ``*.skeleton`` of ``folder`` in sorted order, except sample names in ``skip``.

    ``skip`` holds names with or without the ``.skeleton`` suffix (e.g. the lines of
    ``NTU_RGBD_samples_with_missing_skeletons.txt``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"NTU skeleton folder {str(folder)!r} does not exist")
    skipped = {s.strip().removesuffix(".skeleton") for s in skip if s.strip()}
    for path in sorted(folder.glob("*.skeleton")):
        if path.name.removesuffix(".skeleton") not in skipped:
            yield load_ntu_skeleton(path, max_bodies=max_bodies)
