"""Rank 0's half of a HyGRPO iteration: sample groups, score them, turn rewards into advantages.

    rows ──► rollouts (G per prompt, Ray workers or in-process) ──► rewards (TRL signature +
    poses) ──► text advantage over all G, pose advantage over the valid subset V ──► Experience

Everything here runs on the learner's rank 0 only; the resulting :class:`Experience` is then
split into one contiguous shard per rank (groups never straddle ranks when the per-rank batch
is a multiple of G, which the config checks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from posrft.algo import group_normalized_advantages
from posrft.rollout.experience import Experience
from posrft.train.config import HyGRPOConfig
from posrft.train.data import reward_columns
from rewards import RewardRunner
from rewards.api import message_text


@dataclass
class ScoredRollouts:
    experience: Experience
    metrics: dict[str, float]
    table: list[dict[str, Any]]  # a few rows for the completions log
    pose_sample: torch.Tensor  # (num_prompts, D) first valid sampled pose per group (or μ)
    pose_sample_valid: torch.Tensor  # (num_prompts,)


def sampling_params(cfg: HyGRPOConfig) -> dict[str, Any]:
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_completion_length}


def as_completions(prompts: Sequence[Any], texts: Sequence[str], g: int) -> list[Any]:
    """Completions in the prompt's style: TRL passes message lists for conversational prompts."""
    out: list[Any] = []
    for i, text in enumerate(texts):
        conversational = isinstance(prompts[i // g], list)
        out.append([{"role": "assistant", "content": text}] if conversational else text)
    return out


def score_rollouts(
    cfg: HyGRPOConfig,
    rows: list[dict[str, Any]],
    batch: Any,
    model_version: torch.Tensor,
    rewards: RewardRunner,
    rollout_metrics: dict[str, float],
) -> ScoredRollouts:
    """Rewards → advantages → experience for one generated batch (rank 0)."""
    g = cfg.num_generations
    n = len(batch)
    prompts = [r["prompt"] for r in rows]
    rep_prompts = [p for p in prompts for _ in range(g)]
    completions = as_completions(prompts, batch.completion_texts, g)
    ids = [row[m.bool()].tolist() for row, m in zip(batch.completion_ids, batch.completion_mask)]
    # Discrete-only GRPO treats the head as deterministic (the pose is a function of the text):
    # rewards score μ, so the only thing the sampled group varies, and is credited for, is text.
    pose = batch.pose_mean if cfg.discrete_only else batch.pose
    poses = [pose[i] if batch.pose_valid[i] else None for i in range(n)]

    t0 = time.perf_counter()
    scored = rewards(prompts=rep_prompts, completions=completions, completion_ids=ids, poses=poses,
                     **reward_columns(rows, g))  # fmt: skip
    t_reward = time.perf_counter() - t0
    text_adv = group_normalized_advantages(scored.text, g, scale_rewards=cfg.scale_rewards)
    pose_adv = group_normalized_advantages(scored.pose, g, batch.pose_valid.cpu(), cfg.scale_rewards)
    exp = Experience.from_rollout(batch, text_adv.advantages, pose_adv.advantages, model_version)

    valid = batch.pose_valid.float()
    lengths = batch.completion_mask.sum(1).float()
    metrics = dict(rollout_metrics)
    metrics.update(scored.metrics)
    metrics.update({
        "reward/text": _nanmean(scored.text), "reward/pose": _nanmean(scored.pose),
        "adv/text_abs_mean": text_adv.advantages.abs().mean().item(),
        "adv/pose_abs_mean": _masked_abs_mean(pose_adv.advantages, valid),
        "adv/zero_std_groups": text_adv.zero_std_groups,
        "adv/pose_zero_std_groups": pose_adv.zero_std_groups,
        "pose/valid_frac": valid.mean().item(),
        "pose/sigma": batch.pose_std[batch.pose_valid].mean().item() if valid.any() else float("nan"),
        "completion/mean_length": lengths.mean().item(),
        "completion/max_length": lengths.max().item(),
        "time/reward": t_reward,
        "staleness/max": float((model_version.max() - model_version.min()).item()) if n else 0.0,
    })  # fmt: skip
    table = [
        {"prompt": _prompt_text(rep_prompts[i]), "completion": batch.completion_texts[i],
         "pose_valid": bool(batch.pose_valid[i]), "text_advantage": float(text_adv.advantages[i]),
         "pose_advantage": float(pose_adv.advantages[i]),
         **{name: float(scored.per_func[i, k]) for k, name in enumerate(scored.names)}}
        for i in range(min(n, 2 * g))
    ]  # fmt: skip
    grouped_valid = batch.pose_valid.view(-1, g)
    first = grouped_valid.float().argmax(1)
    pick = torch.arange(len(rows)) * g + first
    return ScoredRollouts(exp, metrics, table, batch.pose[pick], grouped_valid.any(1))


def _nanmean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return x[ok].mean().item() if ok.any() else float("nan")


def _masked_abs_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return ((x.abs() * mask).sum() / mask.sum().clamp(min=1)).item()


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return " | ".join(message_text(m) for m in prompt)
