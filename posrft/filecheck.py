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


def image_columns(features: dict[str, Any]) -> list[str]:
    """Columns of a ``datasets`` feature spec (``dataset_info.json``) that hold images, alone or
    in lists."""
    def holds_image(spec: Any) -> bool:
        if isinstance(spec, dict):
            return spec.get("_type") == "Image" or holds_image(spec.get("feature"))
        if isinstance(spec, list):
            return any(holds_image(s) for s in spec)
        return False

    return [name for name, spec in features.items() if holds_image(spec)]


def check_image_cells(arrow_files: list[Path], column: str, where: str) -> int:
    """Verify every encoded image of ``column`` in ``arrow_files`` (``save_to_disk`` Arrow
    streams) without decoding pixels (PIL's ``verify``: header and chunk checksums). Raises
    :class:`FileCheckError` naming ``where``, the row, the column and the image's own path.
    Returns the number of images checked."""
    import io

    import pyarrow as pa
    from PIL import Image

    row = checked = 0
    for file in arrow_files:
        with pa.memory_map(str(file)) as source:
            for batch in pa.ipc.open_stream(source):
                for cell in batch.column(batch.schema.get_field_index(column)).to_pylist():
                    items = cell if isinstance(cell, list) else [cell]
                    for k, item in enumerate(items):
                        data = item.get("bytes") if isinstance(item, dict) else None
                        path = item.get("path") if isinstance(item, dict) else None
                        try:
                            if data is None and path:
                                data = Path(path).read_bytes()
                            if data is None:
                                raise ValueError("no image bytes and no path")
                            with Image.open(io.BytesIO(data)) as im:
                                im.verify()
                        except Exception as err:  # noqa: BLE001 - PIL raises many kinds
                            src = f" ({path})" if path else ""
                            raise FileCheckError(
                                f"{where} row {row}, column {column!r}, image {k}{src}: not a readable "
                                f"image ({type(err).__name__}: {err})"
                            ) from None
                        checked += 1
                    row += 1
    return checked
