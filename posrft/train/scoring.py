"""Scoring rollouts with the recipe's rewards, on the learner or next to the rollouts.

:func:`score_rollouts` turns one rollout batch and its dataset rows into the reward functions'
inputs (TRL signature + ``poses``) and runs them. :class:`RolloutScorer` packages the same
call for the rollout workers (``rewards_on_workers: true``): the rollout floor (3) cannot
import the rewards (floor 5), so the learner (floor 6) builds this picklable object from the
recipe and hands it to the pool; each worker builds its :class:`~rewards.RewardRunner` once,
on first use, scores its own shard (whole groups) right after sampling it, and the pool
concatenates the shards with :meth:`RolloutScorer.combine`. A heavy reward model then lives on,
and scales with, the rollout workers instead of the learner's rank 0.

Rewards run per shard, so a reward function must score each sample on its own (the TRL
contract); one that normalises over the whole batch would see only its shard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rewards import RewardRunner
from rewards.api import reward_columns
from rewards.runner import RewardBatch


def as_completions(prompts: Sequence[Any], texts: Sequence[str], g: int) -> list[Any]:
    """Completions in the prompt's style: TRL passes message lists for conversational prompts."""
    out: list[Any] = []
    for i, text in enumerate(texts):
        conversational = isinstance(prompts[i // g], list)
        out.append([{"role": "assistant", "content": text}] if conversational else text)
    return out


def score_rollouts(rewards: RewardRunner, rows: Sequence[Mapping[str, Any]], batch: Any,
                   num_generations: int, discrete_only: bool = False) -> RewardBatch:
    """Run ``rewards`` on ``batch`` (``N = len(rows) · G`` rollouts, grouped, with ``K`` poses
    each) against ``rows`` (one dataset row per prompt): ``N·K`` scored rows, row ``i·K + k``
    the ``k``-th pose of rollout ``i``, its completion, prompt and dataset columns repeated.
    Discrete-only GRPO treats the head as deterministic (the pose is a function of the text):
    rewards score μ, so the only thing the sampled group varies, and is credited for, is the
    text."""
    g = num_generations
    n = len(batch)
    if n != len(rows) * g:
        raise ValueError(f"{n} samples for {len(rows)} rows × G={g}")
    prompts = [r["prompt"] for r in rows]
    completions = as_completions(prompts, batch.completion_texts, g)
    ids = [row[m.bool()].tolist() for row, m in zip(batch.completion_ids, batch.completion_mask)]
    pose = batch.pose_mean[:, None] if discrete_only else batch.pose  # (N, K, D)
    k = pose.shape[1]
    flat = pose.reshape(n * k, -1)
    poses = [flat[j] if batch.pose_valid[j // k] else None for j in range(n * k)]
    return rewards(prompts=[p for p in prompts for _ in range(g * k)],
                   completions=[c for c in completions for _ in range(k)],
                   completion_ids=[x for x in ids for _ in range(k)], poses=poses,
                   **reward_columns(rows, g * k))  # fmt: skip


def text_rewards(scored: RewardBatch, pose_valid: torch.Tensor, group_rows: int) -> torch.Tensor:
    """``(R,)`` weighted sum of the text-targeted rewards of each scored row, where a reward a
    row could not get because its completion has no valid ``<POSE>`` (NaN in ``per_func``)
    counts as the lowest value of that reward in the row's group (``group_rows`` adjacent rows;
    ``pose_valid (R,)``). A missing pose thus never scores better than the worst pose: summed
    as 0 (the runner's ``text``), a reward that is negative for every pose (a ``neg_mean`` joint
    error) paid the policy to drop ``<POSE>``, and text-only GRPO learned to (format accuracy
    1 → 0 within 60 steps on the pretrained table). Rewards masked on rows *with* a pose (errors,
    timeouts) stay out of the sum, as before; a group where nobody has a pose keeps the runner's
    sum. Without ``specs`` (targets unknown) this is ``scored.text``."""
    if not scored.specs:
        return scored.text
    values = scored.per_func.double()
    r, c = values.shape
    if r % group_rows or pose_valid.shape != (r,):
        raise ValueError(f"{r} scored rows, pose_valid {tuple(pose_valid.shape)}, group of {group_rows}")
    cols = [j for j, spec in enumerate(scored.specs) if spec.target in ("text", "both")]
    if not cols:
        return scored.text
    groups = values.view(-1, group_rows, c)
    missing = torch.isnan(groups) & ~pose_valid.view(-1, group_rows, 1).bool()
    lowest = torch.where(torch.isnan(groups), torch.full_like(groups, float("inf")), groups).amin(1, keepdim=True)
    filled = torch.where(missing & torch.isfinite(lowest), lowest.expand_as(groups), groups).view(r, c)
    sub = filled[:, cols]
    weights = torch.tensor([scored.specs[j].weight for j in cols], dtype=sub.dtype)
    total = torch.nansum(sub * weights, dim=1)
    total[torch.isnan(sub).all(dim=1)] = float("nan")
    return total.to(scored.text.dtype)


def concat_reward_batches(parts: Sequence[RewardBatch]) -> RewardBatch:
    """The shards' reward batches as one, in order; per-reward metrics recomputed over all
    samples exactly as :class:`~rewards.RewardRunner` computes them (errors summed)."""
    if not parts:
        raise ValueError("no reward batches to concatenate")
    names = parts[0].names
    for k, p in enumerate(parts):
        if p.names != names:
            raise ValueError(f"reward batch {k} has rewards {p.names}, batch 0 has {names}")
    per_func = torch.cat([p.per_func for p in parts])
    metrics: dict[str, float] = {}
    values = per_func.double().numpy()
    for k, name in enumerate(names):
        col = values[:, k]
        present = ~np.isnan(col)
        metrics[f"rewards/{name}/mean"] = (float(col[present].mean()) if present.any()
                                             else float("nan"))
        metrics[f"rewards/{name}/std"] = float(col[present].std()) if present.sum() > 1 else 0.0
        metrics[f"rewards/{name}/masked"] = float((~present).sum())
    for key in parts[0].metrics:  # the runner's counts add up over shards
        if key.endswith(("/errors", "/timeouts")):
            metrics[key] = float(sum(p.metrics.get(key, 0.0) for p in parts))
    per_joint = {name: torch.cat([p.per_joint[name] for p in parts]) for name in parts[0].per_joint}
    return RewardBatch(names=list(names), per_func=per_func,
                       text=torch.cat([p.text for p in parts]),
                       pose=torch.cat([p.pose for p in parts]), metrics=metrics,
                       per_joint=per_joint, specs=list(parts[0].specs))


@dataclass
class RolloutScorer:
    """The recipe's rewards as a pool scorer: ``scorer(rows, batch) -> RewardBatch`` for one
    shard, ``scorer.combine(shards) -> RewardBatch``. Pickled to the workers without its
    runner (built there on first call, then kept for the worker's life)."""

    rewards: list[Any]
    num_generations: int
    discrete_only: bool = False
    _runner: RewardRunner | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runner"] = None  # reward models load where they run
        return state

    def runner(self) -> RewardRunner:
        if self._runner is None:
            self._runner = RewardRunner(self.rewards)
        return self._runner

    def __call__(self, rows: Sequence[Mapping[str, Any]], batch: Any) -> RewardBatch:
        return score_rollouts(self.runner(), rows, batch, self.num_generations, self.discrete_only)

    def combine(self, parts: Sequence[RewardBatch]) -> RewardBatch:
        return concat_reward_batches(parts)
