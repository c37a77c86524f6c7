"""Resumable checkpoints: ``accelerate.save_state`` written atomically, plus a JSON trainer state.

Layout: ``OUTPUT_DIR/checkpoint-STEP/`` holds what ``save_state`` writes (model and optimizer —
DeepSpeed's own layout under DeepSpeed —, RNG states) and ``trainer_state.json`` (step, data-
sampler position, LR schedule). Every rank writes into a hidden temporary folder first; rank 0
renames it into place only after all ranks finished, so a crash mid-save never leaves a
checkpoint that looks complete. A save that fails (a full disk, a file-size limit) removes the
temporary folder and raises :class:`CheckpointWriteError` saying why and how much space is left.

Loading never unpickles code (:mod:`posrft.train.safe_load`). ``latest`` skips a checkpoint
whose ``trainer_state.json`` is unreadable (e.g. truncated) and takes the newest sound one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from posrft.train.safe_load import scan_checkpoint, weights_only_loads

TRAINER_STATE = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_TMP = re.compile(r"^\.checkpoint-(\d+)\.tmp$")
log = logging.getLogger("posrft.train")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file."""


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed; the partial folder was removed. ``errno`` as in OSError."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir`` (``trainer_state.json`` present), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _CKPT.match(p.name)) and (p / TRAINER_STATE).is_file()]  # fmt: skip
    return [p for _, p in sorted(found)]


def read_trainer_state(ckpt: str | os.PathLike) -> dict[str, Any]:
    """``trainer_state.json`` of ``ckpt``, checked: a JSON object with an integer ``step``."""
    path = Path(ckpt) / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{str(path)!r} not found (not a complete posrft checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(path)!r} is not valid JSON (truncated or corrupt: {err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise CheckpointError(f"{str(path)!r} has no non-negative integer 'step'")
    if not isinstance(state.get("sampler", {}), dict):
        raise CheckpointError(f"{str(path)!r}: 'sampler' must be a mapping")
    return state


def resolve_checkpoint(value: str | None, output_dir: str) -> Path | None:
    """``resume_from_checkpoint``: ``None``, ``"latest"`` (the newest checkpoint under
    ``output_dir`` whose trainer state reads back, or ``None`` if there is none yet) or a folder,
    which must hold a complete checkpoint."""
    if value is None:
        return None
    if value == "latest":
        ckpts = list_checkpoints(output_dir)
        for ckpt in reversed(ckpts):
            try:
                read_trainer_state(ckpt)
                return ckpt
            except CheckpointError as err:
                log.warning("resume_from_checkpoint=latest: skipping %s: %s", ckpt.name, err)
        if ckpts:
            raise CheckpointError(f"resume_from_checkpoint=latest: none of the {len(ckpts)} "
                                  f"checkpoints under {output_dir!r} has a readable {TRAINER_STATE}")  # fmt: skip
        return None
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={value!r}: no such folder")
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint={value!r}: {path / TRAINER_STATE} not found (not a complete "
            "posrft checkpoint)"
        )
    read_trainer_state(path)
    return path


def remove_partial_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.checkpoint-*.tmp`` folders a killed save left behind (rank 0, at start-up)."""
    root = Path(output_dir)
    removed = [p for p in root.iterdir() if _TMP.match(p.name) and p.is_dir()] if root.is_dir() else []
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    if removed:
        log.warning("removed %d partial checkpoint folder(s) left by an interrupted save: %s",
                    len(removed), ", ".join(p.name for p in removed))  # fmt: skip
    return removed


def save_checkpoint(
    accelerator: Accelerator, output_dir: str, step: int, state: dict[str, Any], total_limit: int | None
) -> Path:
    """Collective: every rank calls it. Returns the final folder."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
    except Exception as err:  # noqa: BLE001 - every write failure: clean up, then say why
        _failed(tmp, step, err)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            body = json.dumps(dict(state, step=step), indent=2, default=str)
            with open(tmp / TRAINER_STATE, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
        except Exception as err:  # noqa: BLE001
            _failed(tmp, step, err)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit is not None and total_limit >= 1:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _failed(tmp: Path, step: int, err: BaseException) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        free = shutil.disk_usage(tmp.parent).free
        space = f"; {free / 2**20:.0f} MiB free on that disk now"
    except OSError:
        space = ""
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        cause = "the disk is full"
    elif code == errno.EFBIG:
        cause = "a file exceeded the size limit (ulimit -f)"
    elif isinstance(err, OSError):
        cause = os.strerror(code) if code else str(err)
    elif "unexpected pos" in str(err) or "file write failed" in str(err):
        cause = "a write failed part-way (is the disk full?)"
    else:
        cause = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    raise CheckpointWriteError(
        code or errno.EIO,
        f"could not write checkpoint-{step} under {str(tmp.parent)!r}: {cause}{space}. The partial "
        "checkpoint was removed; the previous checkpoints are intact",
    ) from err


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore model/optimizer/RNG (collective) without unpickling code; return the trainer state."""
    state = read_trainer_state(path)
    scan_checkpoint(path)
    with weights_only_loads():
        accelerator.load_state(str(path))
    return state
