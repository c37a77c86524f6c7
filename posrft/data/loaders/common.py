"""Shared helpers of the dataset loaders: the format error, npz/npy/json readers, shape checks.

Every loader reports a malformed file as :class:`DatasetFormatError` (a ``ValueError``) whose
message starts with the file path and the place inside it, then says what was expected::

    /x/S001C001P001R001A001.skeleton line 5: expected 10 body-info values, got 7
    /x/seq.npz key 'poses': missing; keys present: ['betas', 'trans']

Binary containers are opened without pickle (``np.load(..., allow_pickle=False)``); the only
pickle format (3DPW) is handled in :mod:`posrft.data.loaders.threedpw`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

PathLike = str | os.PathLike

#: Axis-angle values of SMPL's global orientation + 21 body joints (SMPL joints 0..21).
SMPL_BODY_AA_DIMS = 66
#: Axis-angle values of a full SMPL pose: 24 joints x 3.
SMPL_AA_DIMS = 72


class DatasetFormatError(ValueError):
    """A dataset file does not match its documented format.

    Attributes:
        path: the offending file.
        line: 1-based line number (text formats) or ``None``.
        key: the key/field (npz, pickle, json) or ``None``.
    """

    def __init__(
        self, path: PathLike, message: str, *, line: int | None = None, key: str | None = None
    ) -> None:
        where = ""
        if line is not None:
            where += f" line {line}"
        if key is not None:
            where += f" key {key!r}"
        super().__init__(f"{os.fspath(path)}{where}: {message}")
        self.path = Path(path)
        self.message = message
        self.line = line
        self.key = key

    def __reduce__(self):
        # Rebuild with the keyword arguments so the error survives DataLoader/Ray workers.
        return (_rebuild_format_error, (self.path, self.message, self.line, self.key))


def _rebuild_format_error(
    path: Path, message: str, line: int | None, key: str | None
) -> DatasetFormatError:
    return DatasetFormatError(path, message, line=line, key=key)


def missing_key_error(path: PathLike, key: str, present: Sequence[str]) -> DatasetFormatError:
    return DatasetFormatError(
        path, f"missing; keys present: {sorted(str(k) for k in present)}", key=key
    )


def open_npz(path: PathLike) -> np.lib.npyio.NpzFile:
    """Open an ``.npz`` archive without pickle; a non-archive raises :class:`DatasetFormatError`.

    Use as a context manager; arrays are read lazily per key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetFormatError(path, f"not a readable .npz archive ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DatasetFormatError(
            path, "expected an .npz archive (np.savez), got a single .npy array"
        )
    return data


def npz_get(data: Mapping[str, Any], path: PathLike, key: str) -> np.ndarray:
    """``data[key]`` with a missing key or a pickled (object) array reported against the file."""
    if key not in data:
        raise missing_key_error(path, key, list(data.keys()))
    try:
        return np.asarray(data[key])
    except ValueError as exc:  # object arrays refuse to load with allow_pickle=False
        raise DatasetFormatError(
            path, f"cannot be read without pickle ({exc})", key=key
        ) from None


def load_npy(path: PathLike) -> np.ndarray:
    """Load one ``.npy`` array without pickle; bad data raises :class:`DatasetFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetFormatError(path, f"not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise DatasetFormatError(path, "expected a single .npy array, got an .npz archive")
    return arr


def read_json(path: PathLike) -> Any:
    """Parse a JSON file; a syntax error names the file and the line/column of the error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(
            path, f"invalid JSON at column {exc.colno}: {exc.msg}", line=exc.lineno
        ) from None


def check_array(
    arr: Any,
    path: PathLike,
    key: str | None,
    shape: Sequence[int | None],
    *,
    dtype: type = np.float32,
) -> np.ndarray:
    """Return ``arr`` as ``dtype`` after checking its shape; ``None`` in ``shape`` matches any size.

    A non-numeric array or a shape mismatch raises :class:`DatasetFormatError` naming ``key``
    (``None`` for a file that holds a single array).
    """
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        raise DatasetFormatError(path, f"expected a numeric array, got dtype {a.dtype}", key=key)
    want = tuple(shape)
    if a.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, a.shape)):
        shown = "(" + ", ".join("N" if w is None else str(w) for w in want) + ")"
        raise DatasetFormatError(path, f"expected shape {shown}, got {a.shape}", key=key)
    return a.astype(dtype, copy=False)


def smpl_pose_from_body(body_aa: np.ndarray) -> np.ndarray:
    """SMPL-24 axis-angle ``(..., 72)`` from the first 66 values (global orient + 21 body joints).

    SMPL joints 22/23 (``left_hand``/``right_hand``) have no counterpart in SMPL-H/SMPL-X, whose
    hands are articulated by finger joints instead; they are set to zero (identity rotation),
    the usual choice when driving SMPL from AMASS.
    """
    body = np.asarray(body_aa, dtype=np.float32)[..., :SMPL_BODY_AA_DIMS]
    hands = np.zeros(body.shape[:-1] + (SMPL_AA_DIMS - SMPL_BODY_AA_DIMS,), dtype=np.float32)
    return np.concatenate([body, hands], axis=-1)


_GENDERS = {
    "male": "male", "m": "male", "female": "female", "f": "female", "neutral": "neutral",
    "n": "neutral",
}  # fmt: skip


def normalize_gender(value: Any, path: PathLike, key: str) -> str:
    """Map ``'male'/'m'/b'female'/...`` (str, bytes or a 0-d array of them) to a canonical name."""
    v = np.asarray(value)
    if v.ndim != 0:
        raise DatasetFormatError(
            path, f"expected a single gender string, got shape {v.shape}", key=key
        )
    item = v.item()
    if isinstance(item, bytes):
        item = item.decode("latin1")
    name = _GENDERS.get(str(item).strip().lower())
    if name is None:
        raise DatasetFormatError(
            path, f"expected one of male/female/neutral (or m/f/n), got {item!r}", key=key
        )
    return name
