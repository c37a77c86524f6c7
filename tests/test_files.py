"""Atomic writes: all-or-nothing replacement, normal permissions, no temporaries left behind."""

import json
import os
import stat

import pytest

from posrft import files
from posrft.files import atomic_write_json, atomic_write_text


def test_replaces_content_with_umask_permissions_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "t.md", "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.md"]
