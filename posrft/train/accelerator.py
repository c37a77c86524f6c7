"""Accelerate + DeepSpeed set-up shared by the SFT and HyGRPO learners.

On a machine without CUDA, ``accelerate launch`` with a DeepSpeed config counts one process per
rank unless the process group exists before ``Accelerator()``; creating the
:class:`~accelerate.PartialState` with the gloo backend first fixes that (DESIGN §3), so the
same recipe runs as 2-process ZeRO-2 on this CPU and on GPUs.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, InitProcessGroupKwargs, ProjectConfiguration

from posrft.train.config import BaseTrainConfig


def make_accelerator(cfg: BaseTrainConfig) -> Accelerator:
    """An :class:`Accelerator` for ``cfg`` (trackers, mixed precision, grad accumulation)."""
    # A collective that waits longer than ddp_timeout fails instead of hanging (posrft.train.guard
    # then names the phase); gloo and NCCL both honour the process group's timeout.
    timeout = timedelta(seconds=getattr(cfg, "ddp_timeout", 1800))
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        PartialState(backend="gloo", timeout=timeout)
    report_to = [r for r in cfg.report_to if r not in ("none", "")]
    accelerator = Accelerator(
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision="bf16" if cfg.bf16 else "no",
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=os.path.join(cfg.output_dir, "logs")),
    )
    ds = AcceleratorState().deepspeed_plugin
    if ds is not None:
        conf = ds.deepspeed_config
        conf["train_micro_batch_size_per_gpu"] = cfg.per_device_train_batch_size
        conf["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps
        conf["train_batch_size"] = (
            cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes
        )
        conf["gradient_clipping"] = cfg.max_grad_norm
        # torch's AdamW is what we hand DeepSpeed on every device (no fused CPU/GPU Adam build).
        conf["zero_allow_untested_optimizer"] = True
        conf.setdefault("steps_per_print", 10**9)
    return accelerator


def zero_stage(accelerator: Accelerator) -> int:
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return 0
    return int(AcceleratorState().deepspeed_plugin.zero_stage)


@contextlib.contextmanager
def gathered_parameters(accelerator: Accelerator, module: torch.nn.Module) -> Iterator[None]:
    """Full parameters of ``module`` inside the block on every rank (ZeRO-3 gathers; a no-op
    otherwise). Collective: every rank must enter it."""
    if zero_stage(accelerator) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def make_scheduler(cfg: BaseTrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.lr_scheduler_type, cfg.lr_scheduler_type)
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=max(total_steps, 1))  # fmt: skip
