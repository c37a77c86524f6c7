"""Atomic file writes (floor 1): a reader sees the old file or the new one, never half of one.

Every file posrft writes outside an atomic folder (checkpoints and model folders are written
into a temporary sibling folder and renamed) goes through these functions."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling, fsync it, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_image(path: str | os.PathLike, image: Any, **save_kwargs: Any) -> Path:
    """Encode a PIL ``image`` in the format its suffix names (``.png``, ``.gif``, ...; PIL's
    ``save_kwargs`` such as ``save_all``/``append_images``) and write it atomically."""
    import io

    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r} (e.g. .png, .gif)")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_figure(path: str | os.PathLike, figure: Any, **savefig_kwargs: Any) -> Path:
    """Render a matplotlib ``figure`` in the format its suffix names and write it atomically."""
    import io

    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    return atomic_write_bytes(path, buffer.getvalue())
