"""The HyGRPO loss: clipped surrogates over text tokens and over the continuous pose, plus KL.

Maximised objective (DESIGN §1), negated here into a loss:

    J = 1/G  Σ_{i∈G} agg_t min(r_d,it F_i, clip(r_d,it, 1-ε, 1+ε_high) F_i)  - β   KL_text
      + λ/|V| Σ_{i∈V}       min(r_c,i  Δ_i, clip(r_c,i,  1-ε_c, 1+ε_c)    Δ_i) - β_p KL_pose

* ``r_d,it = exp(log π_θ(a_it) - log π_old(a_it))`` per completion token (as in GRPO);
* ``r_c`` for the pose, in one of two modes (``pose_ratio``):
  - ``"per_dim"``: one ratio per pose dimension, ``r_c,id = N(p_id; μ_θ, σ_θ) / N(p_id; μ_old, σ_old)``,
    each clipped like a token and the surrogates averaged over the D dimensions;
  - ``"joint"``: one ratio of the full diagonal-Gaussian densities,
    ``r_c,i = exp(Σ_d log N_θ - Σ_d log N_old)``, with its own (small) ε_c. Summing ~130
    log-densities makes this ratio very sharp, which is why per-dimension is the default.
* text KL: the k3 estimator per token, ``exp(q - p) - (q - p) - 1`` with ``q = log π_ref``,
  ``p = log π_θ``, added inside the token aggregation (as TRL does);
* pose KL: closed-form ``KL(N_θ || N_ref)`` averaged over dimensions (so β_p is on the scale of a
  per-token KL), averaged over V;
* ``agg_t`` is the token aggregation of ``loss_type``: ``"grpo"`` (mean over each sequence's
  tokens, then over sequences), ``"dr_grpo"`` (sum over tokens / (N · max_completion_length)),
  ``"dapo"`` (sum over tokens / number of tokens in the batch).

When V is empty the pose term is exactly zero (and so is its gradient). ``discrete_only`` turns
the pose term off, which reduces HyGRPO to plain GRPO on the text (used for ablations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from posrft.policy.pose_head import PoseDistribution

LossType = Literal["grpo", "dr_grpo", "dapo"]
#: |log r| beyond this is clamped before exp (e^20 ≈ 5·10⁸: far outside any clip range, finite).
LOG_RATIO_LIMIT = 20.0
PoseRatio = Literal["per_dim", "joint"]


@dataclass(frozen=True)
class HyGRPOLossSettings:
    """Coefficients of the loss; the trainer's config builds this (names follow TRL)."""

    epsilon: float = 0.2
    epsilon_high: float | None = None
    pose_epsilon: float = 0.2
    pose_ratio: PoseRatio = "per_dim"
    loss_type: LossType = "grpo"
    beta: float = 0.0
    pose_beta: float | None = None
    pose_coef: float = 1.0
    discrete_only: bool = False
    max_completion_length: int | None = None

    def __post_init__(self) -> None:
        if self.loss_type not in ("grpo", "dr_grpo", "dapo"):
            raise ValueError(f"loss_type must be 'grpo', 'dr_grpo' or 'dapo', got {self.loss_type!r}")
        if self.pose_ratio not in ("per_dim", "joint"):
            raise ValueError(f"pose_ratio must be 'per_dim' or 'joint', got {self.pose_ratio!r}")
        if self.loss_type == "dr_grpo" and not self.max_completion_length:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length")
        for name in ("epsilon", "pose_epsilon"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            raise ValueError(f"epsilon_high must be > 0, got {self.epsilon_high}")
        for name in ("beta", "pose_beta", "pose_coef"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    @property
    def beta_pose(self) -> float:
        return self.beta if self.pose_beta is None else self.pose_beta


@dataclass
class HyGRPOLossOutput:
    """The scalar loss and detached statistics for the logs."""

    loss: torch.Tensor
    text_loss: torch.Tensor
    pose_loss: torch.Tensor
    metrics: dict[str, float]


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-element k3 estimator of KL(π_θ || π_ref): ``exp(q - p) - (q - p) - 1`` (≥ 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def clipped_surrogate(
    log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``min(r A, clip(r, 1-eps_low, 1+eps_high) A)`` and where the clip was active (low, high).

    Shapes broadcast: ``log_ratio`` ``(N, K)``, ``advantages`` ``(N, 1)``. ``log_ratio`` is
    clamped to ±``LOG_RATIO_LIMIT`` before ``exp``.
    """
    # clamp before exp (as verl does): a joint pose log-ratio sums ~130 terms and can overflow
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    surrogate = torch.min(ratio * advantages, clipped * advantages)
    low = (ratio < 1 - eps_low) & (advantages < 0)
    high = (ratio > 1 + eps_high) & (advantages > 0)
    return surrogate, low, high


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def text_term(
    token_logps: torch.Tensor,
    old_token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    settings: HyGRPOLossSettings,
    ref_token_logps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level clipped surrogate + β·k3 KL, aggregated by ``loss_type``; returns the loss.

    ``token_logps``, ``old_token_logps``, ``ref_token_logps``, ``completion_mask``: ``(N, T)``;
    ``advantages``: ``(N,)``.
    """
    mask = completion_mask.to(token_logps.dtype)
    surrogate, low, high = clipped_surrogate(
        token_logps - old_token_logps, advantages[:, None], settings.epsilon, settings.eps_high
    )
    per_token = -surrogate
    metrics: dict[str, float] = {}
    if settings.beta != 0.0:
        if ref_token_logps is None:
            raise ValueError("beta != 0 needs ref_token_logps")
        kl = k3_kl(token_logps, ref_token_logps)
        per_token = per_token + settings.beta * kl
        metrics["kl/text"] = _masked_mean(kl.detach(), mask).item()
    if settings.loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    elif settings.loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * settings.max_completion_length)
    else:
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    metrics["clip/text_low"] = _masked_mean(low.to(mask.dtype), mask).item()
    metrics["clip/text_high"] = _masked_mean(high.to(mask.dtype), mask).item()
    return loss, metrics


def pose_term(
    pose_logp_dims: torch.Tensor,
    old_pose_logp_dims: torch.Tensor,
    pose_valid: torch.Tensor,
    advantages: torch.Tensor,
    settings: HyGRPOLossSettings,
    pose_kl_dims: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate over the sampled pose (per-dimension or joint ratio) + β_p·KL.

    ``pose_logp_dims``, ``old_pose_logp_dims``, ``pose_kl_dims``: ``(N, D)`` per-dimension
    log-densities of the sampled pose and closed-form KL(N_θ || N_ref); ``pose_valid``,
    ``advantages``: ``(N,)``. Averages over the valid samples V; zero when V is empty.
    """
    valid = pose_valid.to(pose_logp_dims.dtype)
    # Invalid rows carry placeholder poses: zero their log-ratio so no inf/NaN can leak in.
    log_ratio = torch.where(
        pose_valid[:, None], pose_logp_dims - old_pose_logp_dims, torch.zeros_like(pose_logp_dims)
    )
    eps = settings.pose_epsilon
    if settings.pose_ratio == "per_dim":
        surrogate, low, high = clipped_surrogate(log_ratio, advantages[:, None], eps, eps)
        per_sample = -surrogate.mean(-1)
        low_frac, high_frac = low.to(valid.dtype).mean(-1), high.to(valid.dtype).mean(-1)
    else:
        surrogate, low, high = clipped_surrogate(
            log_ratio.sum(-1, keepdim=True), advantages[:, None], eps, eps
        )
        per_sample = -surrogate[:, 0]
        low_frac, high_frac = low[:, 0].to(valid.dtype), high[:, 0].to(valid.dtype)
    metrics: dict[str, float] = {}
    if settings.beta_pose != 0.0:
        if pose_kl_dims is None:
            raise ValueError("pose_beta != 0 needs pose_kl_dims")
        kl = torch.where(pose_valid[:, None], pose_kl_dims, torch.zeros_like(pose_kl_dims)).mean(-1)
        per_sample = per_sample + settings.beta_pose * kl
        metrics["kl/pose"] = _masked_mean(kl.detach(), valid).item()
    loss = _masked_mean(per_sample, valid)
    metrics["clip/pose_low"] = _masked_mean(low_frac, valid).item()
    metrics["clip/pose_high"] = _masked_mean(high_frac, valid).item()
    return loss, metrics


def hygrpo_loss(
    *,
    token_logps: torch.Tensor,
    old_token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    text_advantages: torch.Tensor,
    pose_dist: PoseDistribution,
    old_pose_dist: PoseDistribution,
    pose: torch.Tensor,
    pose_valid: torch.Tensor,
    pose_advantages: torch.Tensor,
    settings: HyGRPOLossSettings,
    ref_token_logps: torch.Tensor | None = None,
    ref_pose_dist: PoseDistribution | None = None,
) -> HyGRPOLossOutput:
    """``loss = text_term + pose_coef · pose_term`` (pose term skipped when ``discrete_only``).

    Token inputs ``(N, T)``; advantages and ``pose_valid`` ``(N,)``; ``pose`` ``(N, D)`` the
    sampled pose. The pose log-densities under the current (``pose_dist``) and the sampling
    (``old_pose_dist``) Gaussians and the closed-form KL to ``ref_pose_dist`` are computed
    here from the distributions, per dimension.
    """
    text_loss, metrics = text_term(
        token_logps, old_token_logps, completion_mask, text_advantages, settings, ref_token_logps
    )
    if settings.discrete_only:
        pose_loss = torch.zeros((), dtype=text_loss.dtype, device=text_loss.device)
    else:
        valid = pose_valid.bool()
        # invalid rows carry placeholder poses; keep them out of every density
        pose = torch.where(valid[:, None], pose.to(pose_dist.mean.dtype), pose_dist.mean.detach())
        kl_dims = None
        if settings.beta_pose != 0.0:
            if ref_pose_dist is None:
                raise ValueError("pose_beta != 0 needs ref_pose_dist")
            kl_dims = pose_dist.kl(ref_pose_dist, per_dim=True)
        pose_loss, pose_metrics = pose_term(
            pose_dist.log_prob(pose, per_dim=True), old_pose_dist.log_prob(pose, per_dim=True),
            valid, pose_advantages, settings, kl_dims,
        )  # fmt: skip
        metrics.update(pose_metrics)
        metrics["pose/entropy"] = pose_dist.entropy()[valid].mean().item() if valid.any() else 0.0
    loss = text_loss + settings.pose_coef * pose_loss
    metrics["loss/text"] = text_loss.item()
    metrics["loss/pose"] = pose_loss.item()
    return HyGRPOLossOutput(loss=loss, text_loss=text_loss, pose_loss=pose_loss, metrics=metrics)
