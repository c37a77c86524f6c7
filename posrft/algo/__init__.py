"""HyGRPO: group-relative advantages and the hybrid discrete/continuous clipped loss (floor 4)."""

from posrft.algo.advantages import AdvantageResult, group_normalized_advantages
from posrft.algo.hygrpo_loss import (
    HyGRPOLossOutput,
    HyGRPOLossSettings,
    clipped_surrogate,
    hygrpo_loss,
    k3_kl,
    pose_term,
    text_term,
)

__all__ = [
    "AdvantageResult",
    "HyGRPOLossOutput",
    "HyGRPOLossSettings",
    "clipped_surrogate",
    "group_normalized_advantages",
    "hygrpo_loss",
    "k3_kl",
    "pose_term",
    "text_term",
]
