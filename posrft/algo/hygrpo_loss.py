"""The HyGRPO loss: clipped surrogates over text tokens and over the continuous pose, plus KL.

Maximised objective (DESIGN §1), negated here into a loss:

    J = 1/G  Σ_{i∈G} agg_t min(r_d,it F_i, clip(r_d,it, 1-ε, 1+ε_high) F_i)       - β   KL_text
      + λ/|V| Σ_{i∈V} 1/K Σ_k  S(r_c,ik, Δ_ik)                                  - β_p KL_pose

* ``r_d,it = exp(log π_θ(a_it) - log π_old(a_it))`` per completion token (as in GRPO);
* each text rollout ``i`` with a valid ``<POSE>`` carries ``K`` poses ``p_ik`` sampled from its
  Gaussian (a nested pose group; ``K = 1`` is the paper) with advantages ``Δ_ik``, one per sample
  or one per pose dimension (per-joint credit, :mod:`posrft.algo.credit`);
* ``S`` and ``r_c`` in one of two modes (``pose_ratio``):
  - ``"per_dim"``: one ratio per dimension, ``r_c,ikd = N(p_ikd; μ_θ, σ_θ) / N(p_ikd; μ_old, σ_old)``,
    ``S = 1/D Σ_d min(r_c,ikd Δ_ikd, clip(r_c,ikd, 1-ε_c, 1+ε_c) Δ_ikd)``;
  - ``"joint"``: one ratio of the full densities ``r_c,ik = exp(Σ_d log N_θ - Σ_d log N_old)``,
    ``S = 1/D · min(r_c Δ, clip(r_c) Δ)``. The ``1/D`` makes its on-policy gradient equal to
    per-dim's (``∇ r_c = Σ_d ∇ log N_d`` at ``r_c = 1``), so the two differ only in how they
    clip. Summing ~130 log-densities makes this ratio very sharp (give it a small ε_c).
* text KL: the k3 estimator per token, ``exp(q - p) - (q - p) - 1`` with ``q = log π_ref``,
  ``p = log π_θ``, added inside the token aggregation (as TRL does);
* pose KL per rollout, averaged over dimensions (so β_p is on the scale of a per-token KL) and
  over V, in one of two forms (``pose_kl``):
  - ``"gaussian"``: closed-form ``KL(N_θ || N_ref)``; its mean term ``(μ−μ_ref)²/2σ_ref²``
    grows as σ_ref shrinks, so a small σ pins μ to the reference;
  - ``"mean_l2"``: ``(μ − μ_ref)² / (2 s²)`` with a fixed scale ``s = pose_kl_scale``: the KL
    between Gaussians of equal width ``s``, which does not depend on the policy's σ;
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
PoseKL = Literal["gaussian", "mean_l2"]


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
    pose_kl: PoseKL = "gaussian"
    pose_kl_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.pose_kl not in ("gaussian", "mean_l2"):
            raise ValueError(f"pose_kl must be 'gaussian' or 'mean_l2', got {self.pose_kl!r}")
        if not self.pose_kl_scale > 0:
            raise ValueError(f"pose_kl_scale must be > 0, got {self.pose_kl_scale}")
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


def pose_kl(new: PoseDistribution, ref: PoseDistribution, settings: HyGRPOLossSettings) -> torch.Tensor:
    """Per-dimension pose KL ``(N, D)`` of the form ``settings.pose_kl`` (module docstring)."""
    if settings.pose_kl == "gaussian":
        return new.kl(ref, per_dim=True)
    return 0.5 * ((new.mean - ref.mean) / settings.pose_kl_scale) ** 2


def pose_term(
    pose_logp_dims: torch.Tensor,
    old_pose_logp_dims: torch.Tensor,
    pose_valid: torch.Tensor,
    advantages: torch.Tensor,
    settings: HyGRPOLossSettings,
    pose_kl_dims: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate over the sampled poses (per-dimension or joint ratio) + β_p·KL.

    ``pose_logp_dims``, ``old_pose_logp_dims``: ``(N, K, D)`` per-dimension log-densities of the
    ``K`` poses of each rollout (``(N, D)`` is read as ``K = 1``); ``advantages``: ``(N, K, D)``
    or ``(N, K, 1)`` (``(N,)`` is read as one per rollout); ``pose_kl_dims``: ``(N, D)``;
    ``pose_valid``: ``(N,)``. Averages over the K samples and the valid rollouts V; zero when V
    is empty.
    """
    if pose_logp_dims.dim() == 2:
        pose_logp_dims, old_pose_logp_dims = pose_logp_dims[:, None], old_pose_logp_dims[:, None]
    n, k, d = pose_logp_dims.shape
    advantages = advantages.reshape(n, k if advantages.numel() > n else 1, -1).to(pose_logp_dims.dtype)
    valid = pose_valid.to(pose_logp_dims.dtype)
    # Invalid rows carry placeholder poses: zero their log-ratio so no inf/NaN can leak in.
    log_ratio = torch.where(pose_valid[:, None, None], pose_logp_dims - old_pose_logp_dims,
                            torch.zeros_like(pose_logp_dims))  # fmt: skip
    eps = settings.pose_epsilon
    if settings.pose_ratio == "per_dim":
        surrogate, low, high = clipped_surrogate(log_ratio, advantages, eps, eps)
        per_sample = -surrogate.mean(-1).mean(-1)
        low_frac = low.to(valid.dtype).mean((-1, -2))
        high_frac = high.to(valid.dtype).mean((-1, -2))
    else:
        if advantages.shape[-1] != 1:
            raise ValueError("pose_ratio='joint' needs one advantage per pose sample (no per-joint credit)")
        surrogate, low, high = clipped_surrogate(log_ratio.sum(-1), advantages[..., 0], eps, eps)
        per_sample = -surrogate.mean(-1) / d
        low_frac, high_frac = low.to(valid.dtype).mean(-1), high.to(valid.dtype).mean(-1)
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

    Token inputs ``(N, T)``; ``text_advantages`` and ``pose_valid`` ``(N,)``; ``pose`` the
    sampled poses ``(N, K, D)`` (or ``(N, D)``, K = 1) with ``pose_advantages`` ``(N, K, D)``,
    ``(N, K, 1)`` or ``(N,)``. The pose log-densities under the current (``pose_dist``) and the
    sampling (``old_pose_dist``) Gaussians and the KL to ``ref_pose_dist`` are computed here from
    the distributions, per dimension.
    """
    text_loss, metrics = text_term(
        token_logps, old_token_logps, completion_mask, text_advantages, settings, ref_token_logps
    )
    if settings.discrete_only:
        pose_loss = torch.zeros((), dtype=text_loss.dtype, device=text_loss.device)
    else:
        valid = pose_valid.bool()
        pose = pose if pose.dim() == 3 else pose[:, None]
        # invalid rows carry placeholder poses; keep them out of every density
        pose = torch.where(valid[:, None, None], pose.to(pose_dist.mean.dtype), pose_dist.mean.detach()[:, None])
        kl_dims = None
        if settings.beta_pose != 0.0:
            if ref_pose_dist is None:
                raise ValueError("pose_beta != 0 needs ref_pose_dist")
            kl_dims = pose_kl(pose_dist, ref_pose_dist, settings)
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
