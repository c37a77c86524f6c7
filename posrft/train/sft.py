"""SFT warm-up: response cross-entropy + a pose loss at ``<POSE>`` (same launch path as HyGRPO).

    L = w_text · CE(response tokens) + w_pose · L_pose,
    L_pose = -1/D Σ_d log N(p*_d; μ_d, σ_d²)       (pose_loss="nll": trains μ and σ)
           = 1/D ‖μ - p*‖²                          (pose_loss="l2": deterministic baseline)

averaged over the samples whose target contains ``<POSE>``. Each optimizer step consumes
``per_device_train_batch_size × num_processes × gradient_accumulation_steps`` rows drawn by a
seeded sampler that every rank replays identically (rank ``r`` takes its slice).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from posrft.policy.prompts import encode_prompts
from posrft.train.accelerator import make_accelerator, make_optimizer, make_scheduler
from posrft.train.checkpoint import resume, save_checkpoint
from posrft.train.common import build_policy, config_dict, export_policy, gather_mean
from posrft.train.config import SFTConfig
from posrft.data.splits import load_split
from posrft.train.data import PromptSampler, encode_completions
from posrft.train.logging import TrainLogger


def sft_losses(policy_out: Any, completion_mask: torch.Tensor, gt_pose: torch.Tensor,
               pose_loss: str) -> tuple[torch.Tensor, torch.Tensor, int]:  # fmt: skip
    """(text CE, pose loss, number of rows with a ``<POSE>``) for one micro-batch."""
    mask = completion_mask.to(policy_out.token_logps.dtype)
    text = -(policy_out.token_logps * mask).sum() / mask.sum().clamp(min=1)
    valid = policy_out.pose_valid
    dist = policy_out.pose_dist
    if pose_loss == "nll":
        per_sample = -dist.log_prob(gt_pose, per_dim=True).mean(-1)
    else:
        per_sample = ((dist.mean - gt_pose) ** 2).mean(-1)
    w = valid.to(per_sample.dtype)
    pose = (per_sample * w).sum() / w.sum().clamp(min=1)
    return text, pose, int(valid.sum())


def run_sft(cfg: SFTConfig) -> Path:
    """Train, checkpoint every ``save_steps``, export ``OUTPUT_DIR/final``; returns that path."""
    set_seed(cfg.seed)
    acc = make_accelerator(cfg)
    policy = build_policy(cfg)
    data = load_split(cfg.dataset_path, cfg.dataset_train_split, ["prompt", "completion", "gt_pose_6d"])
    use_images = "images" in data.column_names
    if use_images and not policy.multimodal:
        raise ValueError(f"dataset {cfg.dataset_path!r} has images but the model is text-only")
    world, rank = acc.num_processes, acc.process_index
    rows_per_step = cfg.per_device_train_batch_size * world * cfg.gradient_accumulation_steps
    total = cfg.max_steps
    if cfg.num_train_epochs is not None:
        total = max(1, math.ceil(cfg.num_train_epochs * len(data) / rows_per_step))
    optimizer = make_optimizer(cfg, policy)
    scheduler = make_scheduler(cfg, optimizer, total)
    model, optimizer, scheduler = acc.prepare(policy, optimizer, scheduler)
    sampler = PromptSampler(len(data), cfg.seed)
    logger = TrainLogger(acc, cfg.output_dir, "sft", config_dict(cfg), total_steps=total)

    step, _ = resume(acc, cfg.resume_from_checkpoint, cfg.output_dir, sampler)

    dim = policy.config.pose_dim
    model.train()
    while step < total:
        t0 = time.perf_counter()
        sums = {"loss/sft_text": 0.0, "loss/sft_pose": 0.0, "pose/valid_frac": 0.0, "pose/sigma": 0.0}
        for _ in range(cfg.gradient_accumulation_steps):
            idx = sampler.next(cfg.per_device_train_batch_size * world)
            mine = idx[rank * cfg.per_device_train_batch_size:(rank + 1) * cfg.per_device_train_batch_size]
            rows = data.select(mine)
            prompts, completions = rows["prompt"], rows["completion"]
            images = rows["images"] if use_images else None
            enc = encode_prompts(policy.processing, prompts, images, policy.multimodal)
            comp_ids, comp_mask = encode_completions(policy, prompts, completions)
            gt = torch.tensor(rows["gt_pose_6d"], dtype=torch.float32)
            if gt.shape[1] != dim:
                raise ValueError(f"gt_pose_6d has {gt.shape[1]} values per row, the policy predicts {dim}")
            with acc.accumulate(model):
                out = model(enc.input_ids, enc.attention_mask, comp_ids, comp_mask,
                            poses=gt, pixel_values=enc.pixel_values)  # fmt: skip
                text, pose, n_valid = sft_losses(out, comp_mask.to(out.token_logps.device),
                                                 gt.to(out.token_logps.device), cfg.pose_loss)  # fmt: skip
                loss = cfg.text_loss_weight * text + cfg.pose_loss_weight * pose
                acc.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            k = cfg.gradient_accumulation_steps
            sums["loss/sft_text"] += text.item() / k
            sums["loss/sft_pose"] += pose.item() / k
            sums["pose/valid_frac"] += n_valid / len(mine) / k
            sums["pose/sigma"] += out.pose_dist.std.mean().item() / k
        step += 1
        logger.advance(step)
        metrics = gather_mean(acc, sums)
        metrics["time/step"] = time.perf_counter() - t0
        metrics["lr"] = scheduler.get_last_lr()[0]
        if step % cfg.logging_steps == 0 or step == total:
            logger.log(step, metrics)
        if cfg.save_steps and step % cfg.save_steps == 0 and step < total:
            save_checkpoint(acc, cfg.output_dir, step, {"sampler": sampler.state_dict()},
                            cfg.save_total_limit)  # fmt: skip
    if cfg.save_steps:
        save_checkpoint(acc, cfg.output_dir, step, {"sampler": sampler.state_dict()}, cfg.save_total_limit)
    out = export_policy(acc, model, Path(cfg.output_dir) / "final", cfg.merge_lora_on_export)
    logger.finish()
    return out
