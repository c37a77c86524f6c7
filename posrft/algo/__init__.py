"""HyGRPO: group-relative advantages and the hybrid discrete/continuous clipped loss (floor 4)."""

from posrft.algo.advantages import (
    AdvantageResult,
    get_advantage_estimator,
    group_normalized_advantages,
    register_advantage,
)
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
    "get_advantage_estimator",
    "group_normalized_advantages",
    "hygrpo_loss",
    "k3_kl",
    "pose_term",
    "register_advantage",
    "text_term",
]
