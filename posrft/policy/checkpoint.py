"""Atomic checkpoint folders and safetensors helpers for small modules."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temp folder next to ``path``; on success it replaces ``path``.

    The temp folder lives in the same parent so the final step is a rename on one filesystem. An
    existing ``path`` is first renamed aside and deleted only after the new folder is in place,
    so a crash at any point leaves either the old or the new checkpoint, never a half-written
    one (at worst plus a ``.name.old-*``/``.name.tmp-*`` sibling). On an exception the temp
    folder is removed and ``path`` is untouched.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a folder")
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists (overwrite=False)")
    final.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp) so the folder gets the usual umask permissions, not 0700.
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_module(module: nn.Module, path: str | os.PathLike) -> None:
    """Write ``module.state_dict()`` as safetensors (contiguous CPU copies)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def load_module(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a safetensors state dict into ``module`` strictly; errors name the file and keys.
    Keys in ``module.optional_state_keys`` may be absent from the file; they keep the module's
    own values (the defaults of a freshly built module)."""
    state = load_file(str(path))
    own = module.state_dict()
    optional = set(getattr(module, "optional_state_keys", ()))
    missing, unexpected = sorted(set(own) - set(state) - optional), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: state dict mismatch: missing {missing}, unexpected {unexpected}")
    state = {**{k: own[k] for k in optional & set(own) if k not in state}, **state}
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the module expects "
                f"{tuple(own[key].shape)} (was it saved with another num_joints/hidden size?)"
            )
    module.load_state_dict(state, strict=True)
