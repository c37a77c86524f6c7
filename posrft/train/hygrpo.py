"""The HyGRPO learner: Ray rollouts on rank 0, experience scattered to every rank, DeepSpeed update.

One iteration (``max_steps`` of them):

1. rank 0 draws ``prompts_per_step = per_device_train_batch_size × gradient_accumulation_steps
   × num_processes / G`` prompts and gets ``G`` samples each from the rollout workers
   (:class:`posrft.rollout.RolloutPool`; ``num_rollout_workers: 0`` samples in-process);
2. rank 0 scores them and builds the experience (:mod:`posrft.train.rollout_phase`), then
   scatters one contiguous shard to each rank;
3. each rank computes reference log-probs (frozen copy, or the adapter disabled under LoRA) and
   runs ``num_iterations`` passes of ``gradient_accumulation_steps`` micro-batches through the
   HyGRPO loss — one optimizer step per pass;
4. rank 0 pushes the new weights to the workers (LoRA merged) stamped with the new version.

With ``max_staleness >= 1`` rank 0 submits the next generation before updating, so sampling
overlaps training and samples are one version old (the stored behaviour log-probs keep the
importance ratios correct).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import set_seed

from posrft.algo import HyGRPOLossSettings, hygrpo_loss
from posrft.body.pose import pose_to_joints
from posrft.policy.pose_head import PoseDistribution
from posrft.rollout.experience import Experience
from posrft.train.accelerator import gathered_parameters, make_accelerator, make_optimizer, make_scheduler, zero_stage
from posrft.train.checkpoint import resume, save_checkpoint
from posrft.train.common import build_policy, config_dict, export_policy, gather_mean
from posrft.train.config import HyGRPOConfig
from posrft.data.splits import load_split
from posrft.train.data import PromptSampler
from posrft.train.logging import TrainLogger
from posrft.train.rollout_phase import sampling_params, score_rollouts
from rewards import RewardRunner

log = logging.getLogger("posrft.train")


def loss_settings(cfg: HyGRPOConfig) -> HyGRPOLossSettings:
    return HyGRPOLossSettings(
        epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, pose_epsilon=cfg.pose_epsilon,
        pose_ratio=cfg.pose_ratio, loss_type=cfg.loss_type, beta=cfg.beta, pose_beta=cfg.pose_beta,
        pose_coef=cfg.pose_coef, discrete_only=cfg.discrete_only,
        max_completion_length=cfg.max_completion_length,
    )  # fmt: skip


class Sampler:
    """Rank 0's source of rollouts: a Ray pool, or the learner's own policy in-process."""

    def __init__(self, cfg: HyGRPOConfig, policy_for_inprocess: Any):
        self.cfg = cfg
        self.pool = None
        self.policy = policy_for_inprocess
        self.pending: tuple[Any, list[int]] | None = None
        if cfg.num_rollout_workers > 0:
            from posrft.rollout import RolloutPool

            self.pool = RolloutPool(
                cfg.model_name_or_path, cfg.num_rollout_workers,
                num_cpus_per_worker=cfg.worker_num_cpus, num_gpus_per_worker=cfg.worker_num_gpus,
                ray_address=cfg.ray_address,
            )  # fmt: skip

    def submit(self, rows: list[dict[str, Any]], seed: int, version: int) -> Any:
        prompts = [r["prompt"] for r in rows]
        images = [r["images"] for r in rows] if "images" in rows[0] else None
        params = sampling_params(self.cfg)
        if self.pool is not None:
            return self.pool.submit(prompts, images, num_generations=self.cfg.num_generations,
                                    sampling=params, seed=seed)
        t0 = time.perf_counter()
        batch = self.policy.rollout(prompts, images, num_generations=self.cfg.num_generations,
                                    seed=seed, **params)  # fmt: skip
        version_t = torch.full((len(batch),), version, dtype=torch.long)
        return ("local", batch, version_t, time.perf_counter() - t0)

    def gather(self, handle: Any) -> tuple[Any, torch.Tensor, dict[str, float]]:
        if self.pool is not None:
            result = self.pool.gather(handle)
            metrics = {f"rollout/{k}": v for k, v in result.metrics.items()}
            metrics["time/rollout"] = result.metrics.get("rollout_s", float("nan"))
            return result.batch, result.model_version, metrics
        _, batch, version_t, seconds = handle
        return batch, version_t, {"time/rollout": seconds, "rollout/samples_per_s": len(batch) / seconds}

    def sync(self, model: torch.nn.Module, version: int) -> dict[str, float]:
        if self.pool is None:
            return {}
        from posrft.rollout import merged_state_dict

        state = merged_state_dict(model)
        out = self.pool.sync_weights(state, version, bucket_mb=self.cfg.weight_sync_bucket_mb)
        return {f"sync/{k}": v for k, v in out.items() if k in ("bytes", "seconds", "gb_per_s")}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _scatter(acc: Any, shards: list[Experience] | None) -> Experience:
    if acc.num_processes == 1:
        return shards[0]
    out: list[Any] = [None]
    dist.scatter_object_list(out, shards if acc.is_main_process else None, src=0)
    return out[0]


@torch.no_grad()
def _reference(acc: Any, model: Any, ref: Any, exp: Experience, cfg: HyGRPOConfig) -> Experience:
    """Fill ``ref_token_logps`` and the reference pose distribution (no-op when β = β_p = 0)."""
    settings = loss_settings(cfg)
    if settings.beta == 0 and settings.beta_pose == 0:
        return exp
    policy = acc.unwrap_model(model)
    ctx = policy.disable_adapter() if ref is None else contextlib.nullcontext(ref)
    tok, mean, log_std = [], [], []
    with ctx as ref_policy:
        for lo in range(0, len(exp), cfg.per_device_train_batch_size):
            mb = exp.select(range(lo, min(lo + cfg.per_device_train_batch_size, len(exp))))
            out = ref_policy.forward_logprobs(mb.prompt_ids, mb.prompt_mask, mb.completion_ids,
                                              mb.completion_mask, pixel_values=mb.pixel_values,
                                              temperature=cfg.temperature)  # fmt: skip
            width = exp.completion_ids.shape[1]
            tok.append(torch.nn.functional.pad(out.token_logps.cpu(), (0, width - out.token_logps.shape[1])))
            mean.append(out.pose_dist.mean.cpu())
            log_std.append(out.pose_dist.log_std.cpu())
    exp.ref_token_logps, exp.ref_pose_mean, exp.ref_pose_log_std = torch.cat(tok), torch.cat(mean), torch.cat(log_std)
    return exp


def _update(acc: Any, model: Any, optimizer: Any, scheduler: Any, exp: Experience, cfg: HyGRPOConfig) -> dict[str, float]:
    """``num_iterations`` optimizer steps over the local shard; returns averaged loss metrics."""
    settings = loss_settings(cfg)
    bs = cfg.per_device_train_batch_size
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.num_iterations):
        for lo in range(0, len(exp), bs):
            mb = exp.select(range(lo, min(lo + bs, len(exp)))).to(acc.device)
            with acc.accumulate(model):
                out = model(mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mb.completion_mask,
                            poses=mb.pose, pixel_values=mb.pixel_values, temperature=cfg.temperature)  # fmt: skip
                new = out.pose_dist
                old = PoseDistribution(mb.old_pose_mean, mb.old_pose_log_std)
                kl_dims = None
                if settings.beta_pose != 0 and mb.ref_pose_mean is not None:
                    kl_dims = new.kl(PoseDistribution(mb.ref_pose_mean, mb.ref_pose_log_std), per_dim=True)
                res = hygrpo_loss(
                    token_logps=out.token_logps, old_token_logps=mb.old_token_logps,
                    completion_mask=mb.completion_mask, text_advantages=mb.text_advantages,
                    pose_logp_dims=new.log_prob(mb.pose, per_dim=True),
                    old_pose_logp_dims=old.log_prob(mb.pose, per_dim=True),
                    pose_valid=mb.pose_valid, pose_advantages=mb.pose_advantages,
                    settings=settings, ref_token_logps=mb.ref_token_logps, pose_kl_dims=kl_dims,
                )  # fmt: skip
                acc.backward(res.loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            res.metrics["pose/entropy"] = new.entropy().mean().item()
            for k, v in res.metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}


def run_hygrpo(cfg: HyGRPOConfig) -> Path:
    """Train; checkpoint every ``save_steps``; export ``OUTPUT_DIR/final``; returns that path."""
    set_seed(cfg.seed)
    acc = make_accelerator(cfg)
    policy = build_policy(cfg)
    data = load_split(cfg.dataset_path, cfg.dataset_train_split, ["prompt"])
    world = acc.num_processes
    per_rank = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    prompts_per_step = per_rank * world // cfg.num_generations
    needs_ref = cfg.beta != 0 or (cfg.pose_beta if cfg.pose_beta is not None else cfg.beta) != 0
    ref = None
    if needs_ref and not cfg.use_peft:
        if zero_stage(acc) == 3:
            raise ValueError("a frozen reference copy is not sharded under ZeRO-3: set use_peft "
                             "(reference = adapter disabled) or beta = pose_beta = 0")  # fmt: skip
        ref = copy.deepcopy(policy).requires_grad_(False).eval()
    optimizer = make_optimizer(cfg, policy)
    scheduler = make_scheduler(cfg, optimizer, cfg.max_steps * cfg.num_iterations)
    model, optimizer, scheduler = acc.prepare(policy, optimizer, scheduler)
    logger = TrainLogger(acc, cfg.output_dir, "hygrpo", config_dict(cfg), total_steps=cfg.max_steps)
    sampler = PromptSampler(len(data), cfg.seed)
    step, _ = resume(acc, cfg.resume_from_checkpoint, cfg.output_dir, sampler)

    main = acc.is_main_process
    rewards = RewardRunner(cfg.rewards) if main else None
    rollouts = Sampler(cfg, acc.unwrap_model(model)) if main else None
    joints_of = pose_to_joints(cfg.body_model_dir) if main and cfg.pose_grid_steps else None
    try:
        if main and step > 0:  # resumed: workers start from the base weights
            rollouts.sync(acc.unwrap_model(model), step)
        pending = None
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            shards, scored, rows = None, None, None
            if main:
                if pending is None:
                    rows = [data[i] for i in sampler.next(prompts_per_step)]
                    pending = (rows, rollouts.submit(rows, cfg.seed * 1_000_003 + step, step))
                rows, handle = pending
                batch, version, rollout_metrics = rollouts.gather(handle)
                pending = None
                if cfg.max_staleness >= 1 and step + 1 < cfg.max_steps:
                    nxt = [data[i] for i in sampler.next(prompts_per_step)]
                    pending = (nxt, rollouts.submit(nxt, cfg.seed * 1_000_003 + step + 1, step))
                scored = score_rollouts(cfg, rows, batch, version, rewards, rollout_metrics)
                shards = scored.experience.split(world)
            t0 = time.perf_counter()
            local = _scatter(acc, shards)
            local = _reference(acc, model, ref, local, cfg)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.train()
            metrics = gather_mean(acc, _update(acc, model, optimizer, scheduler, local, cfg))
            t_update = time.perf_counter() - t0
            step += 1
            logger.advance(step)
            t0 = time.perf_counter()
            sync_metrics: dict[str, float] = {}
            with gathered_parameters(acc, acc.unwrap_model(model)):
                if main:
                    sync_metrics = rollouts.sync(acc.unwrap_model(model), step)
            t_sync = time.perf_counter() - t0
            if main:
                metrics.update(scored.metrics)
                metrics.update(sync_metrics)
                seconds = time.perf_counter() - t_step
                n = len(scored.experience)
                tokens = int(scored.experience.completion_mask.sum())
                metrics.update({"time/ref": t_ref, "time/update": t_update, "time/sync": t_sync,
                                "time/step": seconds, "throughput/samples_per_s": n / seconds,
                                "throughput/tokens_per_s": tokens / seconds, "lr": scheduler.get_last_lr()[0]})  # fmt: skip
                if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                    logger.log(step, metrics)
                    if cfg.log_completions:
                        logger.log_completions(step, scored.table)
                if cfg.pose_grid_steps and step % cfg.pose_grid_steps == 0 and "gt_joints" in rows[0]:
                    k = min(4, len(rows))
                    logger.log_pose_grid(step, joints_of(scored.pose_sample[:k].float()),
                                         torch.tensor([r["gt_joints"] for r in rows[:k]], dtype=torch.float32),
                                         [r.get("caption", "") for r in rows[:k]])  # fmt: skip
            if cfg.save_steps and step % cfg.save_steps == 0 and step < cfg.max_steps:
                save_checkpoint(acc, cfg.output_dir, step, {"sampler": sampler.state_dict()}, cfg.save_total_limit)
        if cfg.save_steps:
            save_checkpoint(acc, cfg.output_dir, step, {"sampler": sampler.state_dict()}, cfg.save_total_limit)
        out = export_policy(acc, model, Path(cfg.output_dir) / "final", cfg.merge_lora_on_export)
    finally:
        if rollouts is not None:
            rollouts.close()
        logger.finish()
    return out
