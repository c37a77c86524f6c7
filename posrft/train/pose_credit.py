"""From scored pose samples to pose advantages: reward mixing, per-joint credit, groups.

A rollout batch has ``N = prompts × G`` text rollouts, each with ``K`` pose samples (a nested
pose group), scored on ``N·K`` rows laid out rollout-major (row ``i·K + k``). Per row:

1. **mix** the pose-targeted rewards, ``Σ_r w_r R_r``; with ``normalize_rewards`` each reward is
   first scaled within its pose group (``R_r → (R_r − mean) / std``; a per-joint reward's terms
   are divided by its total's std), so a reward with a large spread cannot dominate by accident;
2. **credit**: without ``per_joint_credit`` one value per row; with it, one value per rotation,
   the mixed per-joint terms of the joints it moves plus the mixed scalar rewards
   (:func:`posrft.algo.credit.joint_credit`); with ``counterfactual_credit``, one value per
   rotation, the mixed reward minus the mixed reward of the same row with that rotation at the
   Gaussian's mean (:func:`posrft.algo.credit.counterfactual_credit`; ``N·K·R`` extra rows
   scored, :func:`counterfactual_rewards`);
3. **normalise** within the pose group — all ``V×K`` samples of a prompt (``prompt``) or the
   ``K`` siblings of one rollout (``siblings``) — and expand per-rotation advantages to their 6
   dimensions: ``(N, K, 1)`` or ``(N, K, D)``.

With ``K = 1`` and neither option this is exactly the paper's pose advantage over V.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from posrft.algo import group_normalized_advantages
from posrft.algo.credit import counterfactual_credit, counterfactual_poses, joint_credit
from posrft.train.config import HyGRPOConfig
from posrft.train.scoring import score_rollouts


@dataclass
class PoseAdvantages:
    advantages: Tensor  # (N, K, 1) or (N, K, D)
    total: Tensor  # (N·K,) mixed pose reward (NaN: none applies)
    zero_std_groups: float


def pose_group_size(cfg: HyGRPOConfig) -> int:
    k = cfg.num_pose_samples
    return k if cfg.pose_advantage_group == "siblings" else cfg.num_generations * k


def _nansum(cols: list[Tensor]) -> Tensor:
    """Sum of columns, NaN terms skipped, NaN only where every term is NaN."""
    stacked = torch.stack(cols)
    total = torch.nansum(stacked, 0)
    return torch.where(torch.isnan(stacked).all(0), torch.full_like(total, math.nan), total)


def _group_std(x: Tensor, valid: Tensor, group: int) -> Tensor:
    """Within-group std (unbiased) of ``x`` ``(M,)`` over ``valid``, repeated per row ``(M,)``."""
    xv = x.double().view(-1, group)
    ok = (valid & ~torch.isnan(x)).view(-1, group)
    cnt = ok.sum(1).clamp(min=1)
    mean = torch.where(ok, xv, torch.zeros_like(xv)).sum(1) / cnt
    dev = torch.where(ok, xv - mean[:, None], torch.zeros_like(xv))
    std = ((dev**2).sum(1) / (cnt - 1).clamp(min=1)).sqrt()
    return std.repeat_interleave(group)


def mix_pose_rewards(cfg: HyGRPOConfig, scored: Any, valid: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """``(per_joint (M, J) | None, scalar (M,) | None)``: the weighted pose rewards (step 1)."""
    group = pose_group_size(cfg)
    joint_cols, scalar_cols = [], []
    for k, spec in enumerate(scored.specs):
        if spec.target not in ("pose", "both"):
            continue
        total = scored.per_func[:, k].double()
        scale = torch.ones_like(total)
        shift = torch.zeros_like(total)
        if cfg.normalize_rewards:
            std = _group_std(total, valid, group)
            scale = 1.0 / (std + 1e-4)
            tv = torch.where(torch.isnan(total), torch.zeros_like(total), total).view(-1, group)
            ok = (~torch.isnan(total) & valid).view(-1, group)
            mean = (tv * ok).sum(1) / ok.sum(1).clamp(min=1)
            shift = mean.repeat_interleave(group)
        terms = scored.per_joint.get(spec.label) if cfg.per_joint_credit else None
        if terms is not None:
            joint_cols.append(spec.weight * terms.double() * scale[:, None])
        else:
            scalar_cols.append(spec.weight * (total - shift) * scale)
    per_joint = _nansum(joint_cols) if joint_cols else None
    scalar = _nansum(scalar_cols) if scalar_cols else None
    return per_joint, scalar


def counterfactual_rewards(pose_rewards: Any, rows: list[dict[str, Any]], batch: Any, g: int) -> Any:
    """Score every pose sample of ``batch`` once per rotation with that rotation at the mean:
    ``N·K·R`` rows, row ``(i·K + k)·R + r`` (:func:`~posrft.algo.credit.counterfactual_poses`).
    ``pose_rewards``: the runner restricted to the pose-targeted rewards."""
    cf = counterfactual_poses(batch.pose, batch.pose_mean)
    return score_rollouts(pose_rewards, rows, dataclasses.replace(batch, pose=cf), g)


def _mixed_counterfactual(cfg: HyGRPOConfig, scored: Any, cf: Any, valid: Tensor,
                          num_rotations: int) -> tuple[Tensor, Tensor]:
    """``(credit (M, R), total (M,))``: step 2 with counterfactual credit. Each pose reward's
    difference is weighted (and, with ``normalize_rewards``, scaled by its group std) as in
    :func:`mix_pose_rewards`, which gives the total; NaN terms are skipped unless every term is
    NaN."""
    group, m = pose_group_size(cfg), scored.per_func.shape[0]
    if cf.per_func.shape[0] != m * num_rotations:
        raise ValueError(f"{cf.per_func.shape[0]} counterfactual rows for {m} samples × {num_rotations} rotations")
    cf_col = {spec.label: j for j, spec in enumerate(cf.specs)}
    credits = []
    for k, spec in enumerate(scored.specs):
        if spec.target not in ("pose", "both"):
            continue
        if spec.label not in cf_col:
            raise ValueError(f"no counterfactual scores for the pose reward {spec.label!r}")
        total = scored.per_func[:, k].double()
        scale = 1.0 / (_group_std(total, valid, group) + 1e-4) if cfg.normalize_rewards else torch.ones_like(total)
        other = cf.per_func[:, cf_col[spec.label]].double().view(m, num_rotations)
        credits.append(spec.weight * scale[:, None] * counterfactual_credit(total, other))
    if not credits:
        raise ValueError("counterfactual_credit is on but no reward targets the pose")
    _, scalar = mix_pose_rewards(cfg, scored, valid)  # the config keeps per_joint_credit off: all scalar
    return _nansum(credits), scalar


def pose_advantages(cfg: HyGRPOConfig, scored: Any, valid_rows: Tensor, num_rotations: int,
                    counterfactual: Any = None) -> PoseAdvantages:
    """Pose advantages of ``N·K`` scored rows; ``valid_rows`` ``(N·K,)`` marks rows whose text
    rollout has a valid ``<POSE>`` (module docstring). ``counterfactual``: the
    :func:`counterfactual_rewards` of the same batch, needed with ``counterfactual_credit``."""
    n_rows, k = valid_rows.shape[0], cfg.num_pose_samples
    group = pose_group_size(cfg)
    if cfg.counterfactual_credit:
        if counterfactual is None:
            raise ValueError("counterfactual_credit is on but no counterfactual rewards were given")
        credit, total = _mixed_counterfactual(cfg, scored, counterfactual, valid_rows, num_rotations)
    elif not (cfg.normalize_rewards or cfg.per_joint_credit):
        credit, total = scored.pose.double()[:, None], scored.pose.double()
    else:
        per_joint, scalar = mix_pose_rewards(cfg, scored, valid_rows)
        if cfg.per_joint_credit and per_joint is None:
            raise ValueError("per_joint_credit is on but no pose reward returned per-joint terms: "
                             "use a joint reward with kind mean_exp or neg_mean and per_joint: true")
        parts = [x for x in (None if per_joint is None else per_joint.sum(1), scalar) if x is not None]
        total = _nansum(parts)  # a per-joint row is all NaN or has none, so its sum is exact
        credit = joint_credit(per_joint, scalar, num_rotations) if cfg.per_joint_credit else total[:, None]
    adv = group_normalized_advantages(credit, group, valid_rows, cfg.scale_rewards)
    a = adv.advantages.float().view(n_rows // k, k, -1)
    if a.shape[-1] > 1:  # one advantage per rotation → its 6 dimensions
        a = a.repeat_interleave(6, dim=-1)
    return PoseAdvantages(a, total.float(), adv.zero_std_groups)


def within_group_std(scored: Any, group: int) -> dict[str, float]:
    """``rewards/<name>/group_std``: each reward's mean within-group std (what decides how much
    it moves the advantages)."""
    out = {}
    for k, name in enumerate(scored.names):
        col = scored.per_func[:, k]
        std = _group_std(col, torch.ones_like(col, dtype=torch.bool), group).view(-1, group)[:, 0]
        out[f"rewards/{name}/group_std"] = float(std.mean())
    return out


def pose_gradient_cosine(batch: Any, advantages: Tensor, score: Any, samples: int, seed: int) -> float:
    """Mean over valid rollouts of the cosine between the pose-gradient estimate the loss uses
    and a large-sample one, both w.r.t. the Gaussian's mean μ_i (the head's output):

        g_i = 1/K Σ_k A_ik ⊙ (p_ik − μ_i)/σ_i²,   ĝ_i = 1/M Σ_m (R_im − R̄_i)(p_im − μ_i)/σ_i²

    ``score(poses (N, M, D)) -> (N, M)`` gives the mixed pose reward of fresh samples (M =
    ``samples``); ĝ is itself an estimate, so the cosine is a lower bound of the true one.
    """
    valid = batch.pose_valid.cpu()
    if not valid.any():
        return math.nan
    mu, std = batch.pose_mean.cpu().double(), batch.pose_std.cpu().double()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((mu.shape[0], samples, mu.shape[1]), generator=g, dtype=torch.float64)
    fresh = mu[:, None] + std[:, None] * noise
    r = score(fresh.float()).double()  # (N, M)
    r = r - r.nanmean(1, keepdim=True)
    r = torch.nan_to_num(r)
    big = (r[..., None] * noise / std[:, None]).mean(1)  # (p − μ)/σ² = ε/σ
    eps = (batch.pose.cpu().double() - mu[:, None]) / std[:, None]
    used = (advantages.double() * eps / std[:, None]).mean(1)
    cos = torch.nn.functional.cosine_similarity(used, big, dim=-1)
    return float(cos[valid & torch.isfinite(cos)].mean())
