"""Group-relative advantages (GRPO).

The estimator maps per-sample rewards ``(N,)`` laid out group by group (``N = num_groups * G``,
the ``G`` samples of one prompt adjacent) and a validity mask ``(N,)`` to advantages ``(N,)``:

    A_i = (R_i - mean_{j in g(i), valid}(R_j)) / (std_{j in g(i), valid}(R_j) + eps)      "group"
    A_i = (R_i - mean_{j in g(i), valid}(R_j)) / (std_{all valid}(R) + eps)              "batch"
    A_i =  R_i - mean_{j in g(i), valid}(R_j)                                            "none"

The std is the unbiased (Bessel) one, as in TRL's ``GRPOTrainer``. Invalid samples (``mask``
False, or a NaN reward, which is how a reward that does not apply is carried) get advantage 0
and do not enter the statistics. A group with fewer than two valid samples has no baseline to
compare against and gets advantage 0 throughout.

HyGRPO uses this twice: the text advantage F over all G samples (mask = reward present) and the
pose advantage Δ over the subset V with a valid ``<POSE>`` (mask = pose valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

ScaleRewards = Literal["group", "batch", "none"]


@dataclass
class AdvantageResult:
    """Advantages ``(N,)`` plus the fraction of groups whose valid rewards are all equal (no
    signal), for the logs."""

    advantages: torch.Tensor
    zero_std_groups: float


def _masked_group_stats(
    x: torch.Tensor, m: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, unbiased std and count of ``x`` over ``m`` along dim 1; ``x, m``: ``(groups, G, C)``
    → three ``(groups, C)`` tensors."""
    count = m.sum(dim=1)
    xm = torch.where(m, x, torch.zeros_like(x))
    mean = xm.sum(dim=1) / count.clamp(min=1)
    dev = torch.where(m, x - mean[:, None], torch.zeros_like(x))
    var = (dev**2).sum(dim=1) / (count - 1).clamp(min=1)
    return mean, var.sqrt(), count


def group_normalized_advantages(
    rewards: torch.Tensor,
    group_size: int,
    mask: torch.Tensor | None = None,
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
) -> AdvantageResult:
    """GRPO advantages over groups of ``group_size`` adjacent samples (see module docstring).

    Args:
        rewards: ``(N,)`` total reward per sample, or ``(N, C)``: ``C`` rewards per sample each
            normalised on its own (per-joint credit); NaN marks "no reward applies".
        group_size: ``G``; ``N`` must be a multiple of it.
        mask: ``(N,)`` bool, samples that take part (default: all with a finite reward).
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"`` (TRL's names).
        eps: added to the std before dividing (TRL uses 1e-4).
    """
    if rewards.dim() not in (1, 2):
        raise ValueError(f"rewards must be (N,) or (N, C), got shape {tuple(rewards.shape)}")
    n = rewards.shape[0]
    if group_size < 1 or n % group_size:
        raise ValueError(f"{n} rewards do not split into groups of group_size={group_size}")
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    cols = rewards.reshape(n, -1)
    valid = torch.isfinite(cols)
    if mask is not None:
        if mask.shape != (n,):
            raise ValueError(f"mask shape {tuple(mask.shape)} != ({n},)")
        valid = valid & mask.bool()[:, None]
    r = cols.double().view(-1, group_size, cols.shape[1])
    v = valid.view(-1, group_size, cols.shape[1])
    mean, std, count = _masked_group_stats(r, v)
    has_baseline = count >= 2
    centred = torch.where(v & has_baseline[:, None], r - mean[:, None], torch.zeros_like(r))
    if scale_rewards == "group":
        adv = centred / (std[:, None] + eps)
    elif scale_rewards == "batch":
        _, batch_std, batch_count = _masked_group_stats(r.reshape(1, -1, r.shape[2]), v.reshape(1, -1, r.shape[2]))
        adv = torch.where(batch_count >= 2, centred / (batch_std + eps), centred)
    else:
        adv = centred
    zero = ((std < 1e-8) & has_baseline).double().sum() / max(int(has_baseline.sum()), 1)
    return AdvantageResult(advantages=adv.reshape(rewards.shape).to(rewards.dtype),
                           zero_std_groups=float(zero))
