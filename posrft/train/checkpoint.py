"""Resumable checkpoints: ``accelerate.save_state`` written atomically, plus a JSON trainer state.

Layout: ``OUTPUT_DIR/checkpoint-STEP/`` holds what ``save_state`` writes (model and optimizer —
DeepSpeed's own layout under DeepSpeed —, scheduler, RNG states) and ``trainer_state.json``
(step, model version, data-sampler position, config). Every rank writes into a hidden temporary
folder first; rank 0 renames it into place only after all ranks finished, so a crash mid-save
never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

TRAINER_STATE = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _CKPT.match(p.name)) and (p / TRAINER_STATE).is_file()]  # fmt: skip
    return [p for _, p in sorted(found)]


def resolve_checkpoint(value: str | None, output_dir: str) -> Path | None:
    """``resume_from_checkpoint``: ``None``, ``"latest"`` (newest under ``output_dir`` or
    ``None`` if there is none yet) or a folder, which must hold a complete checkpoint."""
    if value is None:
        return None
    if value == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    path = Path(value)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint={value!r}: {path / TRAINER_STATE} not found (not a complete "
            "posrft checkpoint)"
        )
    return path


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
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(dict(state, step=step), indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore model/optimizer/scheduler/RNG (collective) and return the trainer state."""
    accelerator.load_state(str(path))
    return json.loads((path / TRAINER_STATE).read_text())
