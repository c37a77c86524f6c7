"""Policy layer (floor 2): HF image-text / text-only model + Gaussian pose head.

Public API: :class:`PosePolicy` (load/save, batched ``rollout``, ``forward_logprobs``),
:class:`RolloutBatch`, :class:`GaussianPoseHead` / :class:`PoseDistribution`,
:class:`PosePolicyConfig`, :func:`apply_lora` / :func:`merge_lora`, :func:`build_tiny_model`;
the model-family registry (:data:`FAMILIES`, :class:`ModelFamily`), the extra model inputs
(:class:`MultimodalInputs`), :func:`add_pose_token` and :func:`build_tiny_family`.

The rollout function is ``posrft.policy.rollout.rollout`` (or ``PosePolicy.rollout``); it is not
re-exported because the name would clash with the submodule. Names are imported lazily, so ``from posrft.policy.pose_head import PoseDistribution`` does not
pull in transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IDENTITY_6D": "pose_head",
    "GaussianPoseHead": "pose_head",
    "PoseDistribution": "pose_head",
    "PosePolicyConfig": "config",
    "PolicyLogProbs": "model",
    "PosePolicy": "model",
    "RolloutBatch": "rollout",
    "apply_lora": "lora",
    "merge_lora": "lora",
    "trainable_parameter_names": "lora",
    "build_tiny_model": "tiny",
    "build_tiny_text_model": "tiny",
    "FAMILIES": "families",
    "ModelFamily": "families",
    "get_family": "families",
    "MultimodalInputs": "mm_inputs",
    "Layout": "mm_inputs",
    "add_pose_token": "pose_token",
    "add_pose_token_to_folder": "pose_token",
    "build_tiny_family": "tiny_families",
    "freeze_vision_tower": "lora",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'posrft.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"posrft.policy.{_EXPORTS[name]}"), name)
