"""Pieces both learners share: building the policy, choosing what trains, exporting."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator

from posrft.policy.lora import apply_lora, freeze_vision_tower, merge_lora
from posrft.policy.model import PosePolicy
from posrft.train.config import BaseTrainConfig

if TYPE_CHECKING:
    from posrft.train.loop import Learner

log = logging.getLogger("posrft.train")


def build_policy(cfg: BaseTrainConfig, before_adapters: Callable[[PosePolicy], None] | None = None) -> PosePolicy:
    """Load the policy and set which parameters train (LoRA, frozen vision tower) and how the
    pose head produces σ during RL. ``before_adapters`` may change the loaded weights before
    LoRA wraps them (so a PEFT copy of the projector and its original agree)."""
    if not cfg.model_name_or_path:
        raise ValueError("model_name_or_path is empty: give a model folder (e.g. from "
                         "`posrft model init-tiny`)")  # fmt: skip
    policy = PosePolicy.from_pretrained(cfg.model_name_or_path)
    sigma = cfg.sigma_settings() if hasattr(cfg, "sigma_settings") else None
    if sigma is not None and not sigma.is_default:
        policy.set_pose_sigma(sigma)  # before LoRA, so the reference head has the same σ
    if before_adapters is not None:
        before_adapters(policy)
    if cfg.use_peft:
        apply_lora(policy, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                   train_projector=cfg.train_projector, top_layers=cfg.lora_layers,
                   trainable_tokens=None if cfg.lora_train_pose_token else [])
    else:
        if cfg.lora_layers is not None:
            raise ValueError("lora_layers needs use_peft: true")
        if cfg.freeze_vision_tower:  # the family registry names the tower
            freeze_vision_tower(policy)
        if not cfg.train_projector:
            for name, p in policy.named_parameters():
                if policy.family.is_projector(name):
                    p.requires_grad_(False)
    if policy.pose_head.reads_image and any(
            p.requires_grad for n, p in policy.named_parameters() if policy.family.is_projector(n)):
        log.warning("the pose head reads the image tokens with statistics fitted before training, and "
                    "the projector trains (train_projector: true) and moves them; measured stable with "
                    "train_projector: false (posrft.policy.image_reader)")
    return policy


def projector_groups(named_params, is_projector, lr: float, projector_lr: float | None) -> list[dict]:
    """AdamW groups over the trainable ``named_params``: the projector's (``is_projector(name)``)
    at ``projector_lr``, everything else at ``lr`` (first, so a learner's logged ``lr`` is the
    main one). ``projector_lr=None``: one group at ``lr``. Empty groups are left out."""
    rest, proj = [], []
    for name, p in named_params:
        if p.requires_grad:
            (proj if projector_lr is not None and is_projector(name) else rest).append(p)
    groups = [{"params": rest, "lr": lr}]
    if proj:
        groups.append({"params": proj, "lr": projector_lr})
    return [g for g in groups if g["params"]]


def policy_param_groups(cfg: BaseTrainConfig, policy: PosePolicy) -> list[dict]:
    """The policy's AdamW groups under ``cfg`` (``projector_learning_rate``, :func:`projector_groups`)."""
    groups = projector_groups(policy.named_parameters(), policy.family.is_projector,
                              cfg.learning_rate, cfg.projector_learning_rate)
    if cfg.projector_learning_rate is not None and len(groups) < 2:
        what = "the model is text-only" if not policy.multimodal else "no projector parameter trains"
        raise ValueError(f"projector_learning_rate is set but {what}")
    return groups


def export_policy(learner: "Learner", out: Path, merge: bool) -> Path:
    """Write the trained policy with ``save_pretrained`` (rank 0; collective under ZeRO-3);
    a LoRA policy is merged into a copy first when ``merge``."""

    def write(policy: PosePolicy) -> None:
        if policy.is_lora and merge:
            import copy

            policy = merge_lora(copy.deepcopy(policy))
        policy.save_pretrained(out)
        log.info("exported the policy to %s", out)

    learner.export(write)
    return out


def gather_mean(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over ranks (same keys on every rank)."""
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    t = accelerator.reduce(t, reduction="mean")
    return {k: float(v) for k, v in zip(keys, t.tolist())}
