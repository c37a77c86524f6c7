"""Experience: one scored rollout batch as the learner consumes it, and how it is built.

    rows ──► rollouts (G per prompt) ──► rewards (TRL signature + poses) ──► text advantage over
    all G, pose advantage over the valid subset V ──► Experience ──► one shard per rank

Shapes: ``N`` samples, ``P`` prompt tokens, ``T`` completion tokens, ``D`` pose dimensions,
``M`` images. Rows are grouped: the ``G`` samples of one prompt are adjacent.

Per token ``(N, T)``: ``completion_ids``, ``completion_mask``, ``old_token_logps``,
``ref_token_logps``.
Per sample: ``prompt_ids``/``prompt_mask`` ``(N, P)``, ``old_pose_mean``/``old_pose_log_std``/
``ref_pose_mean``/``ref_pose_log_std`` ``(N, D)``, ``pose_valid``, ``text_advantages``,
``model_version``, ``image_counts`` ``(N,)``; the ``K`` pose samples of each rollout ``pose``
``(N, K, D)`` and their ``pose_advantages`` ``(N, K, 1)`` (one per sample) or ``(N, K, D)``
(per-joint credit).
Model inputs besides the tokens (pixels, image grids, token types): ``mm_inputs``, a
:class:`~posrft.policy.mm_inputs.MultimodalInputs` that knows which rows each sample owns, so
selecting samples is right for per-image tensors and Qwen-VL's flat patches alike.

Built on the learner's rank 0 only (:func:`build_experience`), then split into one contiguous
shard per rank.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch
from torch import Tensor

from posrft.algo import group_normalized_advantages
from posrft.policy.mm_inputs import MultimodalInputs
from posrft.policy.pose_head import PoseDistribution
from posrft.train.config import HyGRPOConfig
from posrft.train.pose_credit import (
    counterfactual_rewards,
    pose_advantages,
    pose_gradient_cosine,
    pose_group_size,
    within_group_std,
)
from posrft.train.scoring import score_rollouts, text_rewards
from rewards import RewardRunner
from rewards.api import message_text
from rewards.runner import RewardBatch

PER_TOKEN = ("completion_ids", "completion_mask", "old_token_logps", "ref_token_logps")


@dataclass
class Experience:
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    old_token_logps: Tensor | None  # None: on-policy, the learner's first pass is "old"
    pose: Tensor
    pose_valid: Tensor
    old_pose_mean: Tensor
    old_pose_log_std: Tensor
    text_advantages: Tensor
    pose_advantages: Tensor
    model_version: Tensor
    image_counts: Tensor
    mm_inputs: MultimodalInputs | None = None
    ref_token_logps: Tensor | None = None
    ref_pose_mean: Tensor | None = None
    ref_pose_log_std: Tensor | None = None

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def pixel_values(self) -> Tensor | None:
        return None if self.mm_inputs is None else self.mm_inputs.get("pixel_values")

    @property
    def old_pose_dist(self) -> PoseDistribution:
        """The Gaussian the poses were sampled from."""
        return PoseDistribution(self.old_pose_mean, self.old_pose_log_std)

    @property
    def ref_pose_dist(self) -> PoseDistribution | None:
        if self.ref_pose_mean is None:
            return None
        return PoseDistribution(self.ref_pose_mean, self.ref_pose_log_std)

    @classmethod
    def from_rollout(cls, batch: Any, text_advantages: Tensor, pose_advantages: Tensor,
                     model_version: Tensor) -> "Experience":
        """Build from a :class:`posrft.policy.rollout.RolloutBatch` plus advantages and the
        weights version that sampled each row. ``pose_advantages``: ``(N, K, 1 or D)``, or
        ``(N,)`` for one per rollout."""
        n = len(batch)
        for name, t in (("text_advantages", text_advantages), ("model_version", model_version)):
            if t.shape != (n,):
                raise ValueError(f"{name} must be shaped ({n},), got {tuple(t.shape)}")
        k = batch.pose.shape[1]
        if pose_advantages.shape == (n,):  # one advantage per rollout, shared by its K poses
            pose_advantages = pose_advantages[:, None, None].expand(n, k, 1)
        if pose_advantages.dim() != 3 or pose_advantages.shape[:2] != (n, k):
            raise ValueError(f"pose_advantages must be shaped ({n}, {k}, 1 or D), got "
                             f"{tuple(pose_advantages.shape)}")
        return cls(
            prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask,
            completion_ids=batch.completion_ids, completion_mask=batch.completion_mask,
            old_token_logps=batch.token_logps, pose=batch.pose, pose_valid=batch.pose_valid,
            old_pose_mean=batch.pose_mean, old_pose_log_std=batch.pose_log_std,
            text_advantages=text_advantages.float(), pose_advantages=pose_advantages.float(),
            model_version=model_version.long(), image_counts=batch.image_counts,
            mm_inputs=batch.mm_inputs,
        )  # fmt: skip

    def select(self, indices: Sequence[int] | Tensor) -> "Experience":
        """Rows ``indices`` (a shard or micro-batch), model inputs sliced to match, padding
        trimmed."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        updates: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                updates[f.name] = value[idx]
        if self.mm_inputs is not None:
            updates["mm_inputs"] = self.mm_inputs.select(idx)
        return _trim_padding(replace(self, **updates))

    def chunks(self, size: int) -> list["Experience"]:
        """Consecutive ``size``-row pieces (the last may be shorter)."""
        return [self.select(range(lo, min(lo + size, len(self)))) for lo in range(0, len(self), size)]

    def split(self, num_shards: int) -> list["Experience"]:
        """``num_shards`` contiguous, equal shards (one per learner rank)."""
        n = len(self)
        if n % num_shards:
            raise ValueError(f"{n} samples do not split into {num_shards} equal shards")
        return self.chunks(n // num_shards)

    def to(self, device: torch.device | str) -> "Experience":
        moved: dict[str, Any] = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                                 if isinstance(getattr(self, f.name), Tensor)}  # fmt: skip
        if self.mm_inputs is not None:
            moved["mm_inputs"] = self.mm_inputs.to(device)
        return replace(self, **moved)


def _trim_padding(exp: Experience) -> Experience:
    """Drop prompt columns that are padding in every row (left) and completion columns past the
    longest completion (right), so a micro-batch does not pay for another's length."""
    keep_p = exp.prompt_mask.bool().any(0)
    first = int(keep_p.float().argmax()) if keep_p.any() else exp.prompt_mask.shape[1]
    lengths = exp.completion_mask.sum(1)
    t = max(int(lengths.max()) if lengths.numel() else 0, 1)
    updates: dict[str, Any] = {"prompt_ids": exp.prompt_ids[:, first:],
                               "prompt_mask": exp.prompt_mask[:, first:]}  # fmt: skip
    if exp.mm_inputs is not None:  # prompt-aligned inputs (token types) lose the same columns
        updates["mm_inputs"] = exp.mm_inputs.trim_prompt(first)
    for name in PER_TOKEN:
        value = getattr(exp, name)
        if value is not None:
            updates[name] = value[:, :t]
    return replace(exp, **updates)


# ---------------------------------------------------------------------------- building it
@dataclass
class ScoredRollouts:
    experience: Experience
    metrics: dict[str, float]
    table: list[dict[str, Any]]  # a few rows for the completions log
    pose_sample: torch.Tensor  # (num_prompts, D) first valid sampled pose per group (or μ)
    pose_sample_valid: torch.Tensor  # (num_prompts,)


def sampling_params(cfg: HyGRPOConfig) -> dict[str, Any]:
    """Sampling settings for the pool. The rollout's scoring forward pass (the "old" log-probs)
    is skipped when the update is one on-policy step: the learner's own first forward pass is
    then exactly the sampling policy (as TRL does)."""
    return {"temperature": cfg.temperature, "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_completion_length, "num_pose_samples": cfg.num_pose_samples,
            "score": not cfg.on_policy_single_step}


def build_experience(
    cfg: HyGRPOConfig,
    rows: list[dict[str, Any]],
    batch: Any,
    model_version: torch.Tensor,
    rewards: RewardRunner | RewardBatch,
    reward_s: float | None = None,
    check_gradient: bool = False,
) -> ScoredRollouts:
    """Rewards → advantages → experience for one generated batch (rank 0).

    Every pose sample is scored (``N·K`` rows, :func:`~posrft.train.scoring.score_rollouts`);
    the text reward of a rollout is the mean over its K siblings, the pose advantages come from
    :func:`posrft.train.pose_credit.pose_advantages`. ``rewards``: the runner to score with
    here, or the batch's rewards already computed on the rollout workers
    (:class:`~posrft.train.scoring.RolloutScorer`), then ``reward_s`` is their time.
    ``check_gradient`` adds the ``grad/pose_cosine`` diagnostic (``pose_grad_check_samples``;
    it needs the runner here).
    """
    g, k = cfg.num_generations, cfg.num_pose_samples
    n = len(batch)
    rep_prompts = [r["prompt"] for r in rows for _ in range(g)]
    valid_rows = batch.pose_valid.cpu().repeat_interleave(k)

    t0 = time.perf_counter()
    if isinstance(rewards, RewardBatch):
        scored = rewards
        if scored.text.shape != (n * k,):
            raise ValueError(f"precomputed rewards hold {tuple(scored.text.shape)} samples, the "
                             f"batch {n} rollouts × {k} poses")
    else:
        scored = score_rollouts(rewards, rows, batch, g, cfg.discrete_only)
    t_reward = time.perf_counter() - t0 if reward_s is None else reward_s
    text_reward = _sibling_mean(text_rewards(scored, valid_rows, g * k), k)
    text_adv = group_normalized_advantages(text_reward, g, scale_rewards=cfg.scale_rewards)
    counterfactual, t_cf = None, 0.0
    if cfg.counterfactual_credit:
        if not isinstance(rewards, RewardRunner):
            raise ValueError("counterfactual_credit scores its rows on the learner: it needs the reward "
                             "runner here, not rewards computed on the rollout workers")
        t0 = time.perf_counter()
        counterfactual = counterfactual_rewards(rewards.subset(("pose", "both")), rows, batch, g)
        t_cf = time.perf_counter() - t0
    pose_adv = pose_advantages(cfg, scored, valid_rows, batch.pose_mean.shape[1] // 6, counterfactual)
    exp = Experience.from_rollout(batch, text_adv.advantages, pose_adv.advantages, model_version)
    if cfg.discrete_only:
        exp.pose = batch.pose_mean[:, None]

    valid = batch.pose_valid.float()
    lengths = batch.completion_mask.sum(1).float()
    metrics = dict(scored.metrics)
    metrics.update(within_group_std(scored, pose_group_size(cfg)))
    metrics.update({
        "reward/text": _nanmean(text_reward), "reward/pose": _nanmean(pose_adv.total),
        "adv/text_abs_mean": text_adv.advantages.abs().mean().item(),
        "adv/pose_abs_mean": _masked_abs_mean(pose_adv.advantages.abs().mean((1, 2)), valid),
        "adv/zero_std_groups": text_adv.zero_std_groups,
        "adv/pose_zero_std_groups": pose_adv.zero_std_groups,
        "pose/valid_frac": valid.mean().item(),
        "pose/samples": float(valid.sum().item() * k),
        "pose/sigma": batch.pose_std[batch.pose_valid].mean().item() if valid.any() else float("nan"),
        "completion/mean_length": lengths.mean().item(),
        "completion/max_length": lengths.max().item(),
        "time/reward": t_reward + t_cf,
    })  # fmt: skip
    if counterfactual is not None:
        metrics["time/counterfactual"] = t_cf
    if (check_gradient and cfg.pose_grad_check_samples and not cfg.discrete_only
            and isinstance(rewards, RewardRunner)):  # fmt: skip
        t0 = time.perf_counter()
        pose_rewards = rewards.subset(("pose", "both"))

        def score(fresh: Tensor) -> Tensor:
            m = fresh.shape[1]
            extra = score_rollouts(pose_rewards, rows, dataclasses.replace(batch, pose=fresh), g)
            sub = dataclasses.replace(cfg, num_pose_samples=m, pose_advantage_group="siblings",
                                      counterfactual_credit=False)  # only its total is read
            return pose_advantages(sub, extra, batch.pose_valid.cpu().repeat_interleave(m),
                                   batch.pose_mean.shape[1] // 6).total.view(n, m)

        metrics["grad/pose_cosine"] = pose_gradient_cosine(batch, pose_adv.advantages, score,
                                                           cfg.pose_grad_check_samples, seed=len(rows))
        metrics["time/grad_check"] = time.perf_counter() - t0
    table = [
        {"prompt": _prompt_text(rep_prompts[i]), "completion": batch.completion_texts[i],
         "pose_valid": bool(batch.pose_valid[i]), "text_advantage": float(text_adv.advantages[i]),
         "pose_advantage": float(pose_adv.advantages[i, 0].mean()),
         **{name: float(scored.per_func[i * k, j]) for j, name in enumerate(scored.names)}}
        for i in range(min(n, 2 * g))
    ]  # fmt: skip
    grouped_valid = batch.pose_valid.view(-1, g)
    first = grouped_valid.float().argmax(1)
    pick = torch.arange(len(rows)) * g + first
    return ScoredRollouts(exp, metrics, table, batch.pose[pick, 0], grouped_valid.any(1))


def _sibling_mean(x: Tensor, k: int) -> Tensor:
    """``(N·K,)`` → ``(N,)`` mean over each rollout's K siblings, NaN ones skipped (NaN if all)."""
    return torch.nanmean(x.view(-1, k), 1)


def _nanmean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return x[ok].mean().item() if ok.any() else float("nan")


def _masked_abs_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return ((x.abs() * mask).sum() / mask.sum().clamp(min=1)).item()


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return " | ".join(message_text(m) for m in prompt)
