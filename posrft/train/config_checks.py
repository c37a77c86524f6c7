"""Checks the trainer configs run in ``__post_init__``: field types (a YAML recipe sets values
without argparse's conversion) and the ranges of the shared and HyGRPO fields. Each error names
the field and what was expected."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    from posrft.train.config import BaseTrainConfig, HyGRPOConfig


def check_ranges(cfg: "BaseTrainConfig") -> None:
    """Ranges of the shared optimisation and bookkeeping fields (torch/accelerate would fail
    later with their own words, or silently misbehave: a negative ``save_total_limit`` deleted
    every checkpoint as it was written)."""
    for name in ("learning_rate", "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2"):
        if not math.isfinite(getattr(cfg, name)):
            raise ValueError(f"{name} must be a finite number, got {getattr(cfg, name)}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if cfg.max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be >= 0 (0 disables clipping), got {cfg.max_grad_norm}")
    if cfg.save_total_limit is not None and cfg.save_total_limit < 1:
        raise ValueError(f"save_total_limit must be >= 1 or null (keep every checkpoint), got "
                         f"{cfg.save_total_limit}")  # fmt: skip
    if cfg.lora_r < 1 or cfg.lora_alpha <= 0:
        raise ValueError(f"lora_r must be >= 1 and lora_alpha > 0, got {cfg.lora_r}, {cfg.lora_alpha}")
    if cfg.ddp_timeout < 1:
        raise ValueError(f"ddp_timeout must be >= 1 second, got {cfg.ddp_timeout}")
    if cfg.resume_from_checkpoint is not None and not cfg.resume_from_checkpoint:
        raise ValueError("resume_from_checkpoint is empty: give a checkpoint folder, 'latest' or null")
    trackers = ("all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml",
                "dvclive", "swanlab", "none", "")
    for tracker in cfg.report_to:
        if tracker not in trackers:
            raise ValueError(f"report_to: unknown tracker {tracker!r}{did_you_mean(tracker, trackers)}; "
                             f"known: {', '.join(t for t in trackers if t)}")  # fmt: skip


def hygrpo_ranges(cfg: "HyGRPOConfig") -> None:
    for name in ("pose_coef", "beta", "worker_num_gpus"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be >= 0, got {value}")
    if cfg.pose_beta is not None and not (math.isfinite(cfg.pose_beta) and cfg.pose_beta >= 0):
        raise ValueError(f"pose_beta must be >= 0 or null, got {cfg.pose_beta}")
    if not (math.isfinite(cfg.worker_num_cpus) and cfg.worker_num_cpus > 0):
        raise ValueError(f"worker_num_cpus must be > 0, got {cfg.worker_num_cpus}")
    if not (math.isfinite(cfg.weight_sync_bucket_mb) and cfg.weight_sync_bucket_mb > 0):
        raise ValueError(f"weight_sync_bucket_mb must be > 0, got {cfg.weight_sync_bucket_mb}")
    for name in ("pose_sigma_value", "pose_sigma_min", "pose_sigma_max", "pose_kl_scale"):
        value = getattr(cfg, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be finite or null, got {value}")


def did_you_mean(word: Any, choices: Any) -> str:
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_NO_TYPE_CHECK = {"rewards"}  # parsed from JSON/YAML in HyGRPOConfig.__post_init__


def target_of(entry: Any) -> str | None:
    return entry.get("target") if isinstance(entry, dict) else None


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) or isinstance(value, str)  # str: single tracker name
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def check_types(cfg: Any) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if f.name in _NO_TYPE_CHECK:
            continue
        value = getattr(cfg, f.name)
        tp = hints[f.name]
        if not _matches(value, tp):
            args = typing.get_args(tp)
            if typing.get_origin(tp) is Literal:
                expected = "one of " + ", ".join(repr(a) for a in args) + did_you_mean(value, args)
            else:
                expected = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
            raise TypeError(f"{f.name}: expected {expected}, got {value!r} ({type(value).__name__})")
        if tp is float and isinstance(value, int):
            setattr(cfg, f.name, float(value))
