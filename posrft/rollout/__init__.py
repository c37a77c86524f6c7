"""Rollout workers (floor 3): Ray actors that sample :class:`~posrft.policy.rollout.RolloutBatch`
es for the learner, and weight sync through the object store.

Public API: :class:`RolloutPool` (``submit``/``gather``/``generate``, ``sync_weights``) and its
in-process twin :class:`LocalRolloutPool`, :class:`RolloutResult`, :class:`RolloutWorker`, :func:`merged_state_dict`,
:func:`concat_rollouts`, :func:`shard_prompts`, :func:`shard_seed`, :func:`pack_state_dict` /
:func:`unpack_bucket`. Names are imported lazily, so importing the package does not start Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RolloutPool": "pool",
    "LocalRolloutPool": "local",
    "RolloutResult": "pool",
    "RolloutHandle": "pool",
    "RolloutWorker": "worker",
    "SAMPLING_KEYS": "worker",
    "merged_state_dict": "weights",
    "concat_rollouts": "concat",
    "shard_prompts": "sharding",
    "shard_seed": "sharding",
    "PackedBucket": "buckets",
    "pack_state_dict": "buckets",
    "unpack_bucket": "buckets",
    "check_reachable": "cluster",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'posrft.rollout' has no attribute {name!r}")
    return getattr(importlib.import_module(f"posrft.rollout.{_EXPORTS[name]}"), name)
