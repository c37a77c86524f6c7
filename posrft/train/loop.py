"""The optimisation loop every posrft learner shares (SFT, HyGRPO, the SkeletonLLM stages).

A learner builds its model, hands it to :class:`Learner`, and then only says *what* a
micro-batch's loss is; the loop owns *how* it is optimised:

* accelerate + DeepSpeed set-up; ``prepare`` receives the model and the optimizer only;
* gradient accumulation over ``gradient_accumulation_steps`` micro-batches, then one optimizer
  step with the gradient clipped to ``max_grad_norm`` (DeepSpeed clips inside ``engine.step``
  from its config; every other backend through ``accelerator.clip_grad_norm_``);
* the LR schedule stepped exactly once per optimizer step by the loop itself. (accelerate's
  ``prepare`` would wrap it so that it advances ``num_processes`` times per step while the
  schedule's length stays the same: with 2 ranks a linear decay reached 0 at half the run.)
  Its state travels in the checkpoint's ``trainer_state.json``;
* resume (model, optimizer, RNG, data position, schedule, logs trimmed to the checkpoint's step),
  periodic checkpoints and the final export.

One *step* is what the learner counts in ``max_steps`` and logs: one optimizer step for SFT and
the skeleton stages, one rollout iteration (``steps_per_generation × num_iterations`` optimizer
steps) for HyGRPO.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from accelerate import Accelerator

from posrft.train.accelerator import gathered_parameters, make_scheduler
from posrft.train.checkpoint import (load_checkpoint, remove_partial_checkpoints, resolve_checkpoint,
                                     save_checkpoint)  # fmt: skip
from posrft.train.config import BaseTrainConfig
from posrft.train.logging import TrainLogger
from posrft.train.phases import phase, set_phase


class Learner:
    """Optimise ``model`` under ``accelerator`` as ``cfg`` says.

    Args:
        cfg: the trainer config (optimiser, schedule, clipping, checkpoint and log settings).
        accelerator: from :func:`posrft.train.accelerator.make_accelerator`.
        model: the module to train; only parameters with ``requires_grad`` are optimised.
        run_name: tracker run name and progress-bar label.
        total_steps: learner steps in the run (``max_steps`` or what epochs give).
        optimizer_steps_per_step: optimizer steps inside one learner step (HyGRPO: several per
            rollout batch); sizes the LR schedule.
        param_groups: AdamW parameter groups (each with its own ``lr``); default: every
            trainable parameter at ``cfg.learning_rate``.
    """

    def __init__(self, cfg: BaseTrainConfig, accelerator: Accelerator, model: torch.nn.Module, *,
                 run_name: str, total_steps: int, optimizer_steps_per_step: int = 1,
                 param_groups: Sequence[dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.acc = accelerator
        self.total_steps = total_steps
        self.optimizer = _adamw(cfg, model, param_groups)
        # The schedule wraps the *base* optimizer: its param groups are the dicts DeepSpeed's
        # ZeRO optimizer reads the LR from, so stepping it here reaches every backend.
        self.scheduler = make_scheduler(cfg, self.optimizer, total_steps * optimizer_steps_per_step)
        self.model, self.prepared_optimizer = accelerator.prepare(model, self.optimizer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.logger = TrainLogger(accelerator, cfg.output_dir, run_name, _config_dict(cfg),
                                  total_steps=total_steps)
        self.optimizer_steps = 0

    # ------------------------------------------------------------------ properties
    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.model)

    @property
    def lr(self) -> float:
        """The LR the next optimizer step uses (first group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ optimisation
    @contextlib.contextmanager
    def accumulate(self) -> Iterator[None]:
        """Context of one micro-batch: gradients sync (and DeepSpeed steps) on the last of
        ``gradient_accumulation_steps`` consecutive ones."""
        with self.acc.accumulate(self.model):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch's mean loss (scaled for accumulation by accelerate or
        DeepSpeed)."""
        self.acc.backward(loss)

    def optimizer_step(self) -> dict[str, float]:
        """Clip, step, zero, advance the schedule; call after the last micro-batch of a step.

        Returns ``grad_norm`` (before clipping) and ``lr`` (the LR this step used).
        """
        if not self.acc.sync_gradients:
            raise RuntimeError(
                "optimizer_step() called in the middle of gradient accumulation: run exactly "
                f"gradient_accumulation_steps={self.cfg.gradient_accumulation_steps} micro-batches "
                "(each inside learner.accumulate()) per optimizer step")
        set_phase(f"optimizer step {self.optimizer_steps + 1}")
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else math.inf
        norm = self.acc.clip_grad_norm_(self.params, max_norm)
        lr = self.lr
        self.prepared_optimizer.step()
        self.prepared_optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.optimizer_steps += 1
        return {"grad_norm": float(norm) if norm is not None else math.nan, "lr": lr}

    # ------------------------------------------------------------------ state
    def resume(self, sampler: Any) -> tuple[int, dict[str, Any]]:
        """Restore ``cfg.resume_from_checkpoint`` (a folder, ``"latest"`` or None) into the model,
        optimizer, RNG, schedule and the data ``sampler`` (anything with ``load_state_dict``);
        trims the run's jsonl logs to the checkpoint's step (to nothing when starting fresh).
        Returns ``(step, trainer_state)``, ``(0, {})`` when starting fresh. Collective."""
        if self.is_main:
            remove_partial_checkpoints(self.cfg.output_dir)
        ckpt = resolve_checkpoint(self.cfg.resume_from_checkpoint, self.cfg.output_dir)
        if ckpt is None:
            if self.is_main:  # a run stopped before its first checkpoint left lines a fresh start redoes
                self.logger.truncate(0)
            return 0, {}
        with phase(f"resume from {ckpt.name}"):
            state = load_checkpoint(self.acc, ckpt)
        sampler.load_state_dict(state["sampler"])
        loop = state.get("loop", {})
        if "scheduler" in loop:
            self.scheduler.load_state_dict(loop["scheduler"])
        self.optimizer_steps = int(loop.get("optimizer_steps", 0))
        step = int(state["step"])
        if self.is_main:
            self.logger.truncate(step)
        self.logger.advance(step)
        return step, state

    def checkpoint(self, step: int, sampler_state: dict[str, Any], final: bool = False) -> Path | None:
        """Save a resumable checkpoint when ``step`` is a multiple of ``save_steps`` (or, with
        ``final``, whenever ``save_steps`` is set). ``sampler_state``: the data position from
        which step ``step + 1`` draws (rank 0's is saved). Collective."""
        every = self.cfg.save_steps
        if not every or (not final and (step % every or step >= self.total_steps)):
            return None
        state = {"sampler": sampler_state,
                 "loop": {"scheduler": self.scheduler.state_dict(),
                          "optimizer_steps": self.optimizer_steps}}
        with phase(f"checkpoint save at step {step}"):
            return save_checkpoint(self.acc, self.cfg.output_dir, step, state, self.cfg.save_total_limit)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Progress bar every step; metrics every ``logging_steps`` and at the last step (rank 0)."""
        self.logger.advance(step)
        if step % self.cfg.logging_steps == 0 or step == self.total_steps:
            self.logger.log(step, metrics)
        set_phase(f"step {step + 1} (after logging step {step})")

    def export(self, write: Callable[[torch.nn.Module], Any]) -> Any:
        """``write(unwrapped_model)`` on rank 0 with full parameters (gathered under ZeRO-3);
        returns what it returns there (None elsewhere). Collective."""
        result = None
        set_phase("export of the final model")
        with gathered_parameters(self.acc, self.unwrapped):
            if self.is_main:
                result = write(self.unwrapped)
        self.acc.wait_for_everyone()
        return result

    def finish(self) -> None:
        self.logger.finish()


def _adamw(cfg: BaseTrainConfig, model: torch.nn.Module,
           param_groups: Sequence[dict[str, Any]] | None) -> torch.optim.Optimizer:
    if param_groups is None:
        params = [p for p in model.parameters() if p.requires_grad]
        param_groups = [{"params": params}] if params else []
    groups = [g for g in param_groups if list(g["params"])]
    if not groups:
        raise ValueError("no trainable parameters: check use_peft / freeze settings / train_parts")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             weight_decay=cfg.weight_decay)


def _config_dict(cfg: Any) -> dict[str, Any]:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
