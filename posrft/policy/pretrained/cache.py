"""Convert-once cache for the pretrained bases: ``$POSRFT_CACHE/pretrained/<name>/``.

A folder is built into a temporary sibling and renamed into place
(:func:`posrft.policy.checkpoint.atomic_directory`), under an exclusive file lock so that
concurrent processes (test workers, learner ranks) convert once and the others wait and reuse
it. ``source.json`` in the folder records the file it came from (path, size, mtime) and the
converter version; a change of either rebuilds it.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from posrft.config import cache_dir
from posrft.policy.checkpoint import atomic_directory

STAMP = "source.json"


def pretrained_cache() -> Path:
    """``$POSRFT_CACHE/pretrained`` (created)."""
    root = cache_dir() / "pretrained"
    root.mkdir(parents=True, exist_ok=True)
    return root


def source_stamp(source: Path, version: int) -> dict:
    """What identifies a conversion: the source file and the converter version."""
    st = source.stat()
    return {"source": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "converter_version": version}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_folder(name: str, stamp: dict, build: Callable[[Path], None]) -> Path:
    """The cache folder ``name``, built by ``build(tmp_folder)`` unless a folder with the same
    ``stamp`` is already there."""
    root = pretrained_cache()
    folder = root / name

    def fresh() -> bool:
        try:
            return json.loads((folder / STAMP).read_text()) == stamp
        except (OSError, ValueError):
            return False

    if fresh():
        return folder
    with _locked(root / f".{name}.lock"):
        if fresh():  # another process built it while this one waited
            return folder
        with atomic_directory(folder) as tmp:
            build(tmp)
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return folder
