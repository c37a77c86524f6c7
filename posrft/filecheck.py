"""Cheap integrity checks of files before anything heavy reads them (floor 1: stdlib only).

A truncated ``model.safetensors`` makes the safetensors library say "incomplete metadata" with
no file name, a truncated ``trainer_state.json`` a bare ``JSONDecodeError``. These functions
read only headers and sizes and raise :class:`FileCheckError` naming the file and what is wrong.

safetensors layout: 8 bytes little-endian ``N``, ``N`` bytes of JSON header mapping tensor name
-> ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows),
then the data; the file is exactly ``8 + N + max(end)`` bytes long.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit


class FileCheckError(ValueError):
    """A file is missing, truncated or malformed; the message names it."""


def check_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """Check ``path``'s header and length; return the header (tensor name -> info)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FileCheckError(f"{str(path)!r} is truncated ({size} bytes; a safetensors file "
                                     "starts with an 8-byte header length)")  # fmt: skip
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise FileCheckError(f"{str(path)!r} is truncated or not a safetensors file (header "
                                     f"length {n} bytes, file {size} bytes)")  # fmt: skip
            raw = f.read(n)
    except FileNotFoundError:
        raise FileCheckError(f"{str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise FileCheckError(f"{str(path)!r} is a folder, not a safetensors file") from None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FileCheckError(f"{str(path)!r} has a corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise FileCheckError(f"{str(path)!r} has a corrupt safetensors header (not a mapping)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = info["data_offsets"]
            end = max(end, int(stop))
        except (TypeError, KeyError, ValueError):
            raise FileCheckError(f"{str(path)!r}: tensor {name!r} has no valid data_offsets") from None
        if begin > stop:
            raise FileCheckError(f"{str(path)!r}: tensor {name!r} has offsets {begin} > {stop}")
    expected = 8 + n + end
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise FileCheckError(f"{str(path)!r} is {what}: {size} bytes, its header describes {expected} "
                             "(an interrupted copy or download?)")  # fmt: skip
    return header


def check_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse ``path`` as JSON, with an error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileCheckError(f"{what} {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FileCheckError(f"{what} {str(path)!r} is not valid JSON (truncated or corrupt?): {err}") from None
