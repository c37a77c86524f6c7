"""Training logs: accelerate trackers, a rich console table, jsonl files and pose pictures.

Rank 0 writes everything. Per logging step the metrics go to the trackers (TensorBoard by
default) and to ``OUTPUT_DIR/metrics.jsonl``; completions go to ``completions.jsonl``; every
``pose_grid_steps`` a PNG of sampled vs ground-truth poses goes to ``OUTPUT_DIR/poses/``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from posrft.files import atomic_write_bytes, atomic_write_text

_console = Console(stderr=True)

#: Metrics shown in the console table, in order (others still go to the trackers and jsonl).
CONSOLE_KEYS = (
    "reward/text", "reward/pose", "adv/zero_std_groups", "pose/valid_frac", "pose/sigma",
    "loss/text", "loss/pose", "loss/sft_text", "loss/sft_pose", "kl/text", "kl/pose",
    "clip/text_high", "clip/pose_high", "time/step", "throughput/samples_per_s",
)  # fmt: skip


class TrainLogger:
    def __init__(self, accelerator: Accelerator, output_dir: str, run_name: str, config: dict[str, Any],
                 total_steps: int | None = None):  # fmt: skip
        self.acc = accelerator
        self.dir = Path(output_dir)
        self.main = accelerator.is_main_process
        self.progress: Progress | None = None
        if self.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            # the effective config (recipe + overrides + defaults), readable without a tracker
            atomic_write_text(self.dir / "config.json", json.dumps(config, indent=2, default=str) + "\n")
            if total_steps:
                self.progress = Progress(
                    TextColumn(f"[bold]{run_name}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=_console,
                )  # fmt: skip
                self._task = self.progress.add_task(run_name, total=total_steps)
                self.progress.start()
        if accelerator.log_with:
            flat = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str))
                    for k, v in config.items()}  # fmt: skip
            accelerator.init_trackers(run_name, config=flat)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.main:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        if self.acc.log_with:
            self.acc.log(clean, step=step)
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        shown = [k for k in CONSOLE_KEYS if k in clean]
        shown += sorted(k for k in clean if k.startswith("rewards/") and k.endswith("/mean"))
        # Metric/value pairs, two per row, so the table fits an 80-column terminal or log.
        table = Table(title=f"step {step}", show_header=False, box=None, padding=(0, 1))
        for _ in range(2):
            table.add_column(style="cyan", no_wrap=True)
            table.add_column(justify="right", no_wrap=True)
        cells = [(k.replace("/mean", ""), f"{clean[k]:.4g}") for k in shown]
        for i in range(0, len(cells), 2):
            row = [x for pair in cells[i : i + 2] for x in pair]
            table.add_row(*(row + [""] * (4 - len(row))))
        _console.print(table)

    def truncate(self, step: int) -> None:
        """Drop log lines of steps after ``step`` (a resumed run redoes them), atomically."""
        for name in ("metrics.jsonl", "completions.jsonl"):
            path = self.dir / name
            if not path.is_file():
                continue
            kept = [line for line in path.read_text().splitlines(keepends=True)
                    if (k := _step_of(line)) is not None and k <= step]
            atomic_write_text(path, "".join(kept))

    def advance(self, step: int) -> None:
        """Move the progress bar to ``step`` (rank 0)."""
        if self.progress is not None:
            self.progress.update(self._task, completed=step)

    def log_completions(self, step: int, rows: Sequence[dict[str, Any]]) -> None:
        if not self.main or not rows:
            return
        with open(self.dir / "completions.jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps({"step": step, **r}, default=_jsonable) + "\n")

    def log_pose_grid(self, step: int, pred_joints: torch.Tensor, gt_joints: torch.Tensor,
                      captions: Sequence[str]) -> Path | None:  # fmt: skip
        """PNG of predicted vs ground-truth joints ``(n, 24, 3)`` (rank 0)."""
        if not self.main or len(pred_joints) == 0:
            return None
        from posrft.render import render_pose_grid

        image = render_pose_grid({"sampled": pred_joints, "ground truth": gt_joints},
                                 captions=list(captions), size=128)  # fmt: skip
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return atomic_write_bytes(self.dir / "poses" / f"step_{step:06d}.png", buffer.getvalue())

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.acc.log_with:
            self.acc.end_training()


def _step_of(line: str) -> int | None:
    """The ``step`` of one jsonl line; None for a line torn by a crash (it is dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
