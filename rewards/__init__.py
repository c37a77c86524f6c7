"""Reward functions for Pose-RFT (floor 5) and the machinery to plug in your own.

A reward follows TRL's ``GRPOTrainer`` signature plus ``poses`` (see :mod:`rewards.api`). Recipes
list them by registry name, ``module:function`` or ``path/to/file.py:function`` with a
``weight`` and a ``target`` (``text``, ``pose`` or ``both``); :class:`RewardRunner` scores a
whole rollout batch at once.
"""

from rewards.api import RewardFunctionError, completion_text, validate_rewards
from rewards.registry import available_rewards, register_reward, resolve_reward
from rewards.runner import RewardBatch, RewardRunner, RewardSpec

__all__ = [
    "RewardBatch",
    "RewardFunctionError",
    "RewardRunner",
    "RewardSpec",
    "available_rewards",
    "completion_text",
    "register_reward",
    "resolve_reward",
    "validate_rewards",
]
