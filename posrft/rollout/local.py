"""``LocalRolloutPool``: the :class:`~posrft.rollout.pool.RolloutPool` contract without Ray.

One :class:`~posrft.rollout.worker.RolloutWorker` lives in the learner's own process: the same
policy replica, loading and weight-update code as a Ray actor, so ``num_rollout_workers: 0``
samples exactly what one Ray worker would. ``submit`` samples at once with the weights the pool
holds at that moment (there is no second process to overlap with), so the model version of
every sample is the one current at submission, as for an actor whose queue is empty; ``gather``
returns the finished batch. This keeps bounded staleness exact in-process: a batch submitted
``k`` versions ago was sampled by weights ``k`` versions old.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posrft.rollout.buckets import check_compatible, manifest_of
from posrft.rollout.pool import RolloutResult
from posrft.rollout.sharding import shard_seed, split_rows
from posrft.rollout.worker import RolloutWorker, check_sampling


class LocalHandle:
    """A submitted (already sampled) step; consumed by :meth:`LocalRolloutPool.gather`."""

    def __init__(self, result: RolloutResult) -> None:
        self.result = result
        self.gathered = False


class LocalRolloutPool:
    """An in-process rollout worker behind the pool API (``submit``/``gather``/``generate``,
    ``sync_weights``, ``shutdown``). ``worker_kwargs`` go to :class:`RolloutWorker`."""

    num_workers = 1
    total_restarts = 0

    def __init__(self, model_path: str | Path, **worker_kwargs: Any) -> None:
        if not (Path(model_path) / "config.json").is_file():
            raise FileNotFoundError(f"rollout model folder {model_path} has no config.json")
        self.worker: RolloutWorker | None = RolloutWorker(str(model_path), **worker_kwargs)
        self._manifest = self.worker.manifest()
        self.pad_token_id = self.worker.policy.pad_token_id

    @property
    def version(self) -> int:
        return self._open().version()

    def _open(self) -> RolloutWorker:
        if self.worker is None:
            raise RuntimeError("the rollout pool is shut down")
        return self.worker

    def submit(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
               num_generations: int = 1, sampling: Mapping[str, Any] | None = None,
               seed: int | None = None) -> LocalHandle:
        """Sample ``num_generations`` completions per prompt now; returns a handle to gather."""
        worker = self._open()
        prompts, images = split_rows(prompts, images)
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        start = time.perf_counter()
        # one shard, seeded like shard 0 of a Ray pool so both sample the same thing
        batch, version, timings = worker.generate(prompts, images, num_generations,
                                                  check_sampling(sampling), shard_seed(seed, 0))
        seconds = time.perf_counter() - start
        tokens = float(batch.completion_mask.sum())
        metrics = {"rollout_s": seconds, "samples": float(len(batch)), "completion_tokens": tokens,
                   "samples_per_s": len(batch) / seconds, "tokens_per_s": tokens / seconds,
                   "slowest_worker_generate_s": timings["generate_s"], "overhead_s": 0.0,
                   "concat_s": 0.0, "workers_used": 1.0, "restarts": 0.0, "total_restarts": 0.0,
                   "min_version": float(version), "max_version": float(version)}
        versions = torch.full((len(batch),), version, dtype=torch.long)
        return LocalHandle(RolloutResult(batch, versions, metrics, [dict(timings, shard=0.0)]))

    def gather(self, handle: LocalHandle, timeout_s: float | None = None) -> RolloutResult:
        if handle.gathered:
            raise ValueError("this rollout handle was already gathered")
        handle.gathered = True
        return handle.result

    def generate(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
                 num_generations: int = 1, sampling: Mapping[str, Any] | None = None,
                 seed: int | None = None, timeout_s: float | None = None) -> RolloutResult:
        return self.gather(self.submit(prompts, images, num_generations=num_generations,
                                       sampling=sampling, seed=seed))

    def sync_weights(self, state_dict: Mapping[str, Tensor], version: int,
                     bucket_mb: float = 64.0) -> dict[str, float]:
        """Load ``state_dict`` (plain-policy keys) into the replica and set ``version``."""
        worker = self._open()
        if not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be an int >= 0, got {version!r}")
        if not state_dict:
            raise ValueError("sync_weights got an empty state dict")
        start = time.perf_counter()
        check_compatible(self._manifest, manifest_of(state_dict), "sync_weights")
        # copies, like the object store would make: the replica must not alias learner tensors
        loaded = worker.update_weights([{k: v.detach().to("cpu", copy=True)
                                         for k, v in state_dict.items()}], version)
        seconds = time.perf_counter() - start
        return {"bytes": loaded["bytes"], "tensors": float(len(state_dict)), "buckets": 1.0,
                "bucket_mb": float(bucket_mb), "seconds": seconds,
                "gb_per_s": loaded["bytes"] / max(seconds, 1e-9) / 1e9, "version": float(version)}

    def shutdown(self) -> None:
        self.worker = None

    def __enter__(self) -> "LocalRolloutPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
