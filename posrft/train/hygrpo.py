"""The HyGRPO learner: rollouts on rank 0's pool, experience scattered to every rank, updates.

One step (``max_steps`` of them; the weights version is the number of finished steps):

1. rank 0 takes the rollout batch for this step from the :class:`GenerationQueue`: ``prompts =
   samples_per_rank × num_processes / G`` prompts with ``G`` samples each, drawn from a
   :class:`~posrft.rollout.RolloutPool` of Ray workers or, with ``num_rollout_workers: 0``, a
   :class:`~posrft.rollout.LocalRolloutPool` in this process;
2. rank 0 scores them (or, with ``rewards_on_workers``, takes the rewards the workers computed
   next to their rollouts) and builds the experience (:mod:`posrft.train.experience`), then
   scatters one contiguous shard to each rank;
3. each rank computes reference log-probs (frozen copy, or the adapter disabled under LoRA) and
   takes ``steps_per_generation × num_iterations`` optimizer steps on its shard through the
   HyGRPO loss (:class:`~posrft.train.loop.Learner` does the optimisation);
4. rank 0 pushes the new weights to the pool (LoRA merged, or the adapter alone with
   ``lora_sync: adapter``), stamped with the new version and verified (every worker's tensor hashes
   of what it holds against the learner's). The same sync runs once before the first step, so
   the first rollouts are sampled by exactly the learner's weights. Worker deaths during the
   sync count in the step's ``rollout/restarts``.

Bounded staleness (``max_staleness: N``): the queue submits the batches of steps ``s+1 … s+N``
while step ``s`` trains, with the weights of version ``s``, so a sample is at most ``N`` versions
old when it is trained on (``N = 0``: strictly on-policy). The stored sampling log-probs keep the
importance ratios correct. On resume, batches that were in flight are sampled again with the
resumed weights (same prompts and seeds), so resume is exact only for ``N = 0``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate.utils import set_seed

from posrft.body.pose import pose_to_joints
from posrft.data.splits import load_split
from posrft.train.accelerator import gathered_parameters, make_accelerator, zero_stage
from posrft.train.common import build_policy, export_policy, gather_mean, policy_param_groups
from posrft.train.config import HyGRPOConfig
from posrft.train.data import PromptSampler
from posrft.train.experience import Experience, build_experience, sampling_params
from posrft.train.loop import Learner
from posrft.algo import hygrpo_loss
from rewards import RewardRunner

log = logging.getLogger("posrft.train")


def make_rollout_pool(cfg: HyGRPOConfig, lora: dict[str, Any] | None = None) -> Any:
    """The Ray pool (``num_rollout_workers >= 1``) or the in-process one, sampling with the
    learner's RL σ settings so both sides use the same head. ``lora``: the learner's LoRA
    settings (``policy.config.lora``), used with ``lora_sync: adapter`` so that the workers hold
    the same adapter structure. With ``rewards_on_workers`` the pool gets a
    :class:`~posrft.train.scoring.RolloutScorer` and returns the rewards with the rollouts."""
    sigma = cfg.sigma_settings()
    pose_sigma = None if sigma.is_default else dataclasses.asdict(sigma)
    adapter = lora if cfg.use_peft and cfg.lora_sync == "adapter" else None
    if cfg.use_peft and cfg.lora_sync == "adapter" and not lora:
        raise ValueError("lora_sync: adapter needs the learner's LoRA settings (policy.config.lora)")
    scorer = None
    if cfg.rewards_on_workers:
        from posrft.train.scoring import RolloutScorer

        scorer = RolloutScorer(cfg.rewards, cfg.num_generations, cfg.discrete_only)
    if cfg.num_rollout_workers == 0:
        from posrft.rollout import LocalRolloutPool

        return LocalRolloutPool(cfg.model_name_or_path, verify=cfg.verify_weight_sync,
                                pose_sigma=pose_sigma, lora=adapter,
                                merge_adapter=cfg.lora_adapter_merge, scorer=scorer)
    from posrft.rollout import RolloutPool

    return RolloutPool(cfg.model_name_or_path, cfg.num_rollout_workers,
                       num_cpus_per_worker=cfg.worker_num_cpus,
                       num_gpus_per_worker=cfg.worker_num_gpus, ray_address=cfg.ray_address,
                       pose_sigma=pose_sigma, lora=adapter,
                       merge_adapter=cfg.lora_adapter_merge, scorer=scorer,
                       placement_strategy=cfg.placement_strategy,
                       worker_resources=cfg.worker_resources, verify=cfg.verify_weight_sync,
                       max_restarts=cfg.worker_max_restarts)  # fmt: skip


class GenerationQueue:
    """Rollout batches submitted ahead of the learner by at most ``max_staleness`` steps.

    Step ``k``'s prompts are drawn from ``sampler`` when its batch is submitted and its seed is
    derived from ``(seed, k)``, so the data and the randomness of a step do not depend on when
    it was sampled.
    """

    def __init__(self, pool: Any, cfg: HyGRPOConfig, data: Any, sampler: PromptSampler,
                 prompts_per_step: int) -> None:
        self.pool, self.cfg, self.data, self.sampler = pool, cfg, data, sampler
        self.prompts_per_step = prompts_per_step
        self.pending: dict[int, tuple[list[dict[str, Any]], Any]] = {}
        self.sampler_before: dict[int, dict[str, int]] = {}

    def _submit(self, k: int) -> None:
        self.sampler_before[k] = self.sampler.state_dict()
        rows = [self.data[i] for i in self.sampler.next(self.prompts_per_step)]
        images = [r["images"] for r in rows] if "images" in rows[0] else None
        # rewards on the workers: each scores its shard against these rows (images already sent)
        score_rows = None
        if getattr(self.pool, "scorer", None) is not None:
            score_rows = [{c: v for c, v in r.items() if c != "images"} for r in rows]
        handle = self.pool.submit([r["prompt"] for r in rows], images,
                                  num_generations=self.cfg.num_generations,
                                  sampling=sampling_params(self.cfg),
                                  seed=self.cfg.seed * 1_000_003 + k,
                                  score_rows=score_rows)  # fmt: skip
        self.pending[k] = (rows, handle)

    def take(self, step: int) -> tuple[list[dict[str, Any]], Any]:
        """Rows and :class:`~posrft.rollout.RolloutResult` of ``step``; before waiting for it,
        submits the batches of steps up to ``step + max_staleness`` with the current weights."""
        if step not in self.pending:
            self._submit(step)
        for k in range(step + 1, min(step + self.cfg.max_staleness, self.cfg.max_steps - 1) + 1):
            if k not in self.pending:
                self._submit(k)
        rows, handle = self.pending.pop(step)
        self.sampler_before.pop(step, None)
        return rows, self.pool.gather(handle, self.cfg.rollout_timeout_s)

    def sampler_state(self, next_step: int) -> dict[str, int]:
        """The sampler position from which ``next_step``'s prompts are (or will be) drawn: what a
        checkpoint stores, so a resumed run draws the same prompts for the same steps."""
        return self.sampler_before.get(next_step, self.sampler.state_dict())


def _scatter(acc: Any, shards: list[Experience] | None) -> Experience:
    if acc.num_processes == 1:
        return shards[0]
    out: list[Any] = [None]
    dist.scatter_object_list(out, shards if acc.is_main_process else None, src=0)
    return out[0]


@torch.no_grad()
def _reference(learner: Learner, ref: Any, exp: Experience, cfg: HyGRPOConfig) -> Experience:
    """Fill ``ref_token_logps`` and the reference pose distribution (no-op when β = β_p = 0)."""
    settings = cfg.loss_settings()
    if settings.beta == 0 and settings.beta_pose == 0:
        return exp
    policy = learner.unwrapped
    ctx = policy.disable_adapter() if ref is None else contextlib.nullcontext(ref)
    tok, mean, log_std = [], [], []
    width = exp.completion_ids.shape[1]
    with ctx as ref_policy:
        for mb in exp.chunks(cfg.per_device_train_batch_size):
            out = ref_policy.forward_logprobs(mb.prompt_ids, mb.prompt_mask, mb.completion_ids,
                                              mb.completion_mask, mm_inputs=mb.mm_inputs,
                                              temperature=cfg.temperature)  # fmt: skip
            tok.append(torch.nn.functional.pad(out.token_logps.cpu(), (0, width - out.token_logps.shape[1])))
            mean.append(out.pose_dist.mean.cpu())
            log_std.append(out.pose_dist.log_std.cpu())
    exp.ref_token_logps, exp.ref_pose_mean, exp.ref_pose_log_std = torch.cat(tok), torch.cat(mean), torch.cat(log_std)
    return exp


def _update(learner: Learner, exp: Experience, cfg: HyGRPOConfig) -> dict[str, float]:
    """``num_iterations`` passes of ``steps_per_generation`` optimizer steps over the local shard
    (each of ``gradient_accumulation_steps`` micro-batches); returns averaged metrics."""
    settings = cfg.loss_settings()
    bs = cfg.per_device_train_batch_size
    model = learner.model
    sums: dict[str, float] = {}
    count = steps = 0
    for _ in range(cfg.num_iterations):
        for minibatch in exp.chunks(bs * cfg.gradient_accumulation_steps):
            for mb in minibatch.chunks(bs):
                mb = mb.to(learner.acc.device)
                with learner.accumulate():
                    out = model(mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mb.completion_mask,
                                mm_inputs=mb.mm_inputs, temperature=cfg.temperature)  # fmt: skip
                    on_policy = mb.old_token_logps is None  # the rollout was not scored
                    old_tokens = out.token_logps.detach() if on_policy else mb.old_token_logps
                    old_pose = out.pose_dist.detach() if on_policy else mb.old_pose_dist
                    res = hygrpo_loss(
                        token_logps=out.token_logps, old_token_logps=old_tokens,
                        ref_token_logps=mb.ref_token_logps, completion_mask=mb.completion_mask,
                        text_advantages=mb.text_advantages, pose_dist=out.pose_dist,
                        old_pose_dist=old_pose, ref_pose_dist=mb.ref_pose_dist,
                        pose=mb.pose, pose_valid=mb.pose_valid, pose_advantages=mb.pose_advantages,
                        settings=settings,
                    )  # fmt: skip
                    learner.backward(res.loss)
                for k, v in res.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            opt = learner.optimizer_step()
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + opt["grad_norm"] * cfg.gradient_accumulation_steps
            steps += 1
    metrics = {k: v / max(count, 1) for k, v in sums.items()}
    metrics["optimizer_steps"] = float(steps)
    return metrics


def run_hygrpo(cfg: HyGRPOConfig) -> Path:
    """Train; checkpoint every ``save_steps``; export ``OUTPUT_DIR/final``; returns that path."""
    set_seed(cfg.seed)
    acc = make_accelerator(cfg)
    policy = build_policy(cfg)
    data = load_split(cfg.dataset_path, cfg.dataset_train_split, ["prompt"])
    world = acc.num_processes
    prompts_per_step = cfg.samples_per_rank * world // cfg.num_generations
    settings = cfg.loss_settings()
    ref = None
    if (settings.beta != 0 or settings.beta_pose != 0) and not cfg.use_peft:
        if zero_stage(acc) == 3:
            raise ValueError("a frozen reference copy is not sharded under ZeRO-3: set use_peft "
                             "(reference = adapter disabled) or beta = pose_beta = 0")  # fmt: skip
        ref = copy.deepcopy(policy).requires_grad_(False).eval()
    learner = Learner(cfg, acc, policy, run_name="hygrpo", total_steps=cfg.max_steps,
                      optimizer_steps_per_step=cfg.optimizer_steps_per_step,
                      param_groups=policy_param_groups(cfg, policy))  # fmt: skip
    sampler = PromptSampler(len(data), cfg.seed)
    step, _ = learner.resume(sampler)

    main = acc.is_main_process
    rewards = RewardRunner(cfg.rewards) if main and not cfg.rewards_on_workers else None
    pool = make_rollout_pool(cfg, policy.config.lora) if main else None
    queue = GenerationQueue(pool, cfg, data, sampler, prompts_per_step) if main else None
    joints_of = pose_to_joints(cfg.body_model_dir) if main and cfg.pose_grid_steps else None
    try:
        # the pool starts from the model folder's weights: bring it to the learner's (resumed,
        # or fresh) and verify, so the first rollouts are sampled by exactly the learner
        start_restarts = _sync(learner, pool, step, cfg).get("sync/restarts", 0.0)
        while step < cfg.max_steps:
            t_step = time.perf_counter()
            shards, scored, rows = None, None, None
            if main:
                rows, result = queue.take(step)
                logs_now = (step + 1) % cfg.logging_steps == 0 or step + 1 == cfg.max_steps
                scored = build_experience(cfg, rows, result.batch, result.model_version,
                                          rewards if result.scores is None else result.scores,
                                          result.metrics.get("reward_s"), check_gradient=logs_now)  # fmt: skip
                scored.metrics.update({f"rollout/{k}": v for k, v in result.metrics.items()})
                scored.metrics["time/rollout"] = result.metrics["rollout_s"]
                age = (step - result.model_version).float()
                scored.metrics.update({"staleness/mean": age.mean().item(), "staleness/max": age.max().item()})
                shards = scored.experience.split(world)
            t0 = time.perf_counter()
            local = _reference(learner, ref, _scatter(acc, shards), cfg)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            learner.model.train()
            metrics = gather_mean(acc, _update(learner, local, cfg))
            t_update = time.perf_counter() - t0
            step += 1
            t0 = time.perf_counter()
            sync_metrics = _sync(learner, pool, step, cfg)
            t_sync = time.perf_counter() - t0
            if main:
                metrics.update(scored.metrics)
                metrics.update(sync_metrics)
                # a worker lost during this step's weight sync (or the sync before the first
                # step) is this step's restart too
                metrics["rollout/restarts"] += sync_metrics.get("sync/restarts", 0.0) + start_restarts
                start_restarts = 0.0
                seconds = time.perf_counter() - t_step
                exp = scored.experience
                metrics.update({"time/ref": t_ref, "time/update": t_update, "time/sync": t_sync,
                                "time/step": seconds, "throughput/samples_per_s": len(exp) / seconds,
                                "throughput/tokens_per_s": int(exp.completion_mask.sum()) / seconds,
                                "lr": learner.lr})  # fmt: skip
                if cfg.log_completions and (step % cfg.logging_steps == 0 or step == cfg.max_steps):
                    learner.logger.log_completions(step, scored.table)
                if cfg.pose_grid_steps and step % cfg.pose_grid_steps == 0 and "gt_joints" in rows[0]:
                    k = min(4, len(rows))
                    learner.logger.log_pose_grid(step, joints_of(scored.pose_sample[:k].float()),
                                                 torch.tensor([r["gt_joints"] for r in rows[:k]], dtype=torch.float32),
                                                 [r.get("caption", "") for r in rows[:k]])  # fmt: skip
            learner.log(step, metrics if main else {})
            # rank 0 alone draws prompts (and writes trainer_state.json): its position is saved
            learner.checkpoint(step, queue.sampler_state(step) if main else {})
        learner.checkpoint(step, queue.sampler_state(step) if main else {}, final=True)
        out = export_policy(learner, Path(cfg.output_dir) / "final", cfg.merge_lora_on_export)
    finally:
        if pool is not None:
            pool.shutdown()
        learner.finish()
    return out


def _sync(learner: Learner, pool: Any, version: int, cfg: HyGRPOConfig) -> dict[str, float]:
    """Push the learner's weights to the pool as ``version`` (LoRA merged, or the adapter alone
    with ``lora_sync: adapter``). Collective (ZeRO-3 gathers the parameters on every rank);
    only rank 0 talks to the pool."""
    out: dict[str, float] = {}
    with gathered_parameters(learner.acc, learner.unwrapped):
        if pool is not None:
            from posrft.rollout import adapter_state_dict, merged_state_dict

            adapter = cfg.use_peft and cfg.lora_sync == "adapter"
            state = (adapter_state_dict if adapter else merged_state_dict)(learner.unwrapped)
            res = pool.sync_weights(state, version, bucket_mb=cfg.weight_sync_bucket_mb)
            out = {f"sync/{k}": res[k] for k in ("bytes", "seconds", "gb_per_s", "restarts")}
            if "worker_verify_s_max" in res:
                out["sync/verify_s"] = res["worker_verify_s_max"] + res["learner_verify_s"]
    return out
