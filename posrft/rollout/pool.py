"""``RolloutPool``: Ray rollout workers owned by the learner's rank 0.

One step: the prompts are split into contiguous shards of whole prompts (a prompt's G samples
stay on one worker), each shard is sampled by one worker in one ``generate`` call with its own
seed (:func:`~posrft.rollout.sharding.shard_seed`), and the shards are concatenated back in input
order (:func:`~posrft.rollout.concat.concat_rollouts`). ``submit`` / ``gather`` split the step so
the learner can overlap it with other work.

Fault tolerance: a worker whose actor dies (killed, crashed, out of memory) is replaced by a new
actor loaded from the model folder, which then receives the latest synced weights from the object
refs the pool keeps; its shard is sampled again with the same seed (so the result is what the
dead worker would have returned). At most ``max_restarts`` attempts per shard per step, then
``RuntimeError``. Errors raised *inside* ``generate`` (bad prompts) are not retried.

Weight sync: the learner's tensors are packed into buckets (:mod:`posrft.rollout.buckets`), each
``ray.put`` once; every worker reads the same refs zero-copy from shared memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    OutOfMemoryError,
    RayActorError,
    WorkerCrashedError,
)
from torch import Tensor

from posrft.policy.rollout import RolloutBatch
from posrft.rollout.buckets import Manifest, check_compatible, manifest_of, pack_state_dict
from posrft.rollout.cluster import init_ray
from posrft.rollout.concat import concat_rollouts
from posrft.rollout.sharding import shard_prompts, shard_seed, split_rows
from posrft.rollout.worker import RolloutWorker, check_sampling

#: Errors that mean "the worker is gone" (ActorDiedError is a RayActorError), as opposed to
#: an error raised by the work itself, which is never retried.
WORKER_LOST = (RayActorError, WorkerCrashedError, ActorUnavailableError, OutOfMemoryError)


@dataclass
class RolloutResult:
    """batch: N = prompts · G samples in input order; model_version (N,) int64: the weights
    version that sampled each row; metrics: flat floats for logging (``rollout_s``,
    ``samples_per_s``, ``tokens_per_s``, ``restarts``...); per_worker: one dict per shard."""

    batch: RolloutBatch
    model_version: Tensor
    metrics: dict[str, float]
    per_worker: list[dict[str, float]]


@dataclass
class _Shard:
    index: int
    prompts: list[Any]
    images: list[Any] | None
    seed: int | None
    ref: Any = None
    attempts: int = 0
    restarts: int = 0


@dataclass
class RolloutHandle:
    """What :meth:`RolloutPool.submit` started; pass it to :meth:`RolloutPool.gather`."""

    shards: list[_Shard]
    num_generations: int
    sampling: dict[str, Any]
    submitted_at: float
    gathered: bool = field(default=False)  # set by gather (a handle is gathered once)


class RolloutPool:
    """``num_workers`` :class:`RolloutWorker` actors (``num_cpus_per_worker`` CPUs and
    ``num_gpus_per_worker`` GPUs each) on a local Ray (default) or the cluster at
    ``ray_address``. An unreachable address raises ``ConnectionError`` within
    ``connect_timeout_s``. Use as a context manager or call :meth:`shutdown`."""

    def __init__(self, model_path: str | Path, num_workers: int, num_cpus_per_worker: float = 1.0,
                 num_gpus_per_worker: float = 0.0, ray_address: str | None = None, *,
                 dtype: str | None = None, pose_sigma: Mapping[str, Any] | None = None,
                 max_restarts: int = 3, startup_timeout_s: float = 300.0,
                 connect_timeout_s: float = 3.0,
                 ray_init_kwargs: Mapping[str, Any] | None = None) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if num_cpus_per_worker <= 0 or num_gpus_per_worker < 0:
            raise ValueError(f"num_cpus_per_worker must be > 0 and num_gpus_per_worker >= 0, got "
                             f"{num_cpus_per_worker} and {num_gpus_per_worker}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.model_path = str(model_path)
        if ray_address is None and not (Path(model_path) / "config.json").is_file():
            raise FileNotFoundError(f"rollout model folder {model_path} has no config.json")
        self.num_workers = num_workers
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.total_restarts = 0
        self._in_flight = 0  # submitted, not yet gathered handles
        self._workers: list[Any] = []
        self._weight_refs: list[Any] = []
        self._weight_manifest: Manifest | None = None
        self._version = 0
        self._started_ray = init_ray(ray_address, num_workers * num_cpus_per_worker,
                                     num_workers * num_gpus_per_worker,
                                     connect_timeout_s=connect_timeout_s,
                                     **dict(ray_init_kwargs or {}))
        self._actor_cls = ray.remote(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker,
                                     max_restarts=0, max_task_retries=0)(RolloutWorker)
        self._worker_kwargs = dict(num_threads=max(1, math.floor(num_cpus_per_worker)),
                                   device="cuda" if num_gpus_per_worker > 0 else "cpu", dtype=dtype,
                                   pose_sigma=pose_sigma)
        try:
            self._workers = [self._spawn(i) for i in range(num_workers)]
            self.worker_info = self._wait_ready(self._workers)
            self._manifest: Manifest = ray.get(self._workers[0].manifest.remote())
            self.pad_token_id = int(self.worker_info[0]["pad_token_id"])
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ actors
    def _spawn(self, slot: int) -> Any:
        return self._actor_cls.remote(self.model_path, worker_index=slot, **self._worker_kwargs)

    def _wait_ready(self, workers: Sequence[Any]) -> list[dict[str, Any]]:
        try:
            return ray.get([w.ping.remote() for w in workers], timeout=self.startup_timeout_s)
        except GetTimeoutError:
            raise TimeoutError(f"rollout workers did not start within {self.startup_timeout_s:g} s "
                               f"(cluster resources: {ray.cluster_resources()})") from None
        except RayActorError as err:
            raise RuntimeError(f"a rollout worker failed to load {self.model_path}: {err}") from err

    def _restart(self, slot: int) -> None:
        """Replace the actor in ``slot`` and bring it to the latest synced weights."""
        try:
            ray.kill(self._workers[slot], no_restart=True)
        except Exception:  # already gone; nothing to clean up
            pass
        worker = self._workers[slot] = self._spawn(slot)  # in the slot even if it fails to start
        try:
            ray.get(worker.ping.remote(), timeout=self.startup_timeout_s)
        except GetTimeoutError:
            ray.kill(worker, no_restart=True)
            raise TimeoutError(f"replacement rollout worker {slot} did not start within "
                               f"{self.startup_timeout_s:g} s") from None
        if self._weight_refs:
            ray.get(worker.update_weights.remote(self._weight_refs, self._version,
                                                 self._weight_manifest))
        self.total_restarts += 1

    def _check_alive(self, timeout_s: float = 5.0) -> int:
        """Ping every worker; restart the dead ones (a worker killed after finishing its shard is
        noticed here rather than in the next step). Returns the number restarted."""
        pings = [w.ping.remote() for w in self._workers]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=timeout_s)
        restarted = 0
        for slot, ref in enumerate(pings):
            if ref not in ready:
                continue  # busy (e.g. another handle's work): not known to be dead
            try:
                ray.get(ref)
            except WORKER_LOST:
                restarted += self._try_restart(slot)
        return restarted

    def _try_restart(self, slot: int) -> int:
        """Restart outside a shard's retry loop; if the replacement dies too, the slot stays
        dead and the next step's ``gather`` restarts it (with the latest weights)."""
        try:
            self._restart(slot)
            return 1
        except WORKER_LOST:
            return 0

    @property
    def workers(self) -> list[Any]:
        """The current actor handles (slot order); a restart replaces an entry."""
        return list(self._workers)

    @property
    def version(self) -> int:
        return self._version

    # ------------------------------------------------------------------ rollouts
    def submit(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
               num_generations: int = 1, sampling: Mapping[str, Any] | None = None,
               seed: int | None = None) -> RolloutHandle:
        """Start sampling ``num_generations`` completions for each prompt (or dataset row with
        ``prompt`` / ``images``); returns at once."""
        self._check_open()
        prompts, images = split_rows(prompts, images)
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        sampling = check_sampling(sampling)
        shards = [_Shard(k, prompts[r.start:r.stop],
                         None if images is None else images[r.start:r.stop], shard_seed(seed, k))
                  for k, r in enumerate(shard_prompts(len(prompts), self.num_workers))]
        handle = RolloutHandle(shards, num_generations, sampling, time.perf_counter())
        for shard in shards:
            self._launch(handle, shard)
        self._in_flight += 1
        return handle

    def _launch(self, handle: RolloutHandle, shard: _Shard) -> None:
        shard.attempts += 1
        shard.ref = self._workers[shard.index].generate.remote(
            shard.prompts, shard.images, handle.num_generations, handle.sampling, shard.seed)

    def gather(self, handle: RolloutHandle, timeout_s: float | None = None) -> RolloutResult:
        """Wait for ``handle``'s shards (re-sampling those whose worker died) and concatenate
        them in input order. ``timeout_s`` bounds the whole wait (``TimeoutError``). A handle is
        consumed by ``gather``, also when it raises."""
        if handle.gathered:
            raise ValueError("this rollout handle was already gathered")
        handle.gathered = True
        try:
            outputs = self._wait_shards(handle, timeout_s)
        finally:
            self._in_flight -= 1
        # with other handles in flight a ping would queue behind their shards: skip the check
        late_restarts = self._check_alive() if self._in_flight == 0 else 0
        return self._assemble(handle, outputs, late_restarts)

    def _wait_shards(self, handle: RolloutHandle,
                     timeout_s: float | None) -> dict[int, tuple[RolloutBatch, int, dict]]:
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        pending = {shard.ref: shard for shard in handle.shards}
        outputs: dict[int, tuple[RolloutBatch, int, dict[str, float]]] = {}
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                raise TimeoutError(f"rollout shards {sorted(s.index for s in pending.values())} "
                                   f"did not finish within {timeout_s:g} s")
            shard = pending.pop(ready[0])
            try:
                outputs[shard.index] = ray.get(ready[0])
            except WORKER_LOST as err:
                self._relaunch(handle, shard, err)
                pending[shard.ref] = shard
        return outputs

    def _relaunch(self, handle: RolloutHandle, shard: _Shard, err: Exception) -> None:
        """Restart the shard's worker and sample the shard again; a replacement that dies while
        starting counts as another attempt. ``RuntimeError`` after ``max_restarts`` attempts."""
        while True:
            if shard.attempts > self.max_restarts:
                raise RuntimeError(
                    f"rollout worker {shard.index} died {shard.attempts} times on the same shard "
                    f"(max_restarts={self.max_restarts}); last error: {err}") from err
            try:
                self._restart(shard.index)
            except WORKER_LOST as again:
                shard.attempts += 1
                err = again
                continue
            shard.restarts += 1
            self._launch(handle, shard)
            return

    def _assemble(self, handle: RolloutHandle, outputs: dict[int, tuple[RolloutBatch, int, dict]],
                  late_restarts: int) -> RolloutResult:
        start = time.perf_counter()
        ordered = [outputs[s.index] for s in handle.shards]
        batch = concat_rollouts([b for b, _, _ in ordered], self.pad_token_id)
        versions = torch.cat([torch.full((len(b),), v, dtype=torch.long) for b, v, _ in ordered])
        concat_s = time.perf_counter() - start
        rollout_s = time.perf_counter() - handle.submitted_at
        per_worker = []
        for shard, (_, version, timings) in zip(handle.shards, ordered):
            busy = max(timings["generate_s"], 1e-9)
            per_worker.append({**timings, "shard": float(shard.index), "version": float(version),
                               "attempts": float(shard.attempts),
                               "samples_per_s": timings["samples"] / busy,
                               "tokens_per_s": timings["completion_tokens"] / busy})
        tokens = float(batch.completion_mask.sum())
        slowest = max(w["generate_s"] for w in per_worker)
        metrics = {
            "rollout_s": rollout_s, "samples": float(len(batch)), "completion_tokens": tokens,
            "samples_per_s": len(batch) / rollout_s, "tokens_per_s": tokens / rollout_s,
            "slowest_worker_generate_s": slowest, "overhead_s": max(0.0, rollout_s - slowest),
            "concat_s": concat_s, "workers_used": float(len(per_worker)),
            "restarts": float(sum(s.restarts for s in handle.shards) + late_restarts),
            "total_restarts": float(self.total_restarts),
            "min_version": float(versions.min()), "max_version": float(versions.max()),
        }
        return RolloutResult(batch, versions, metrics, per_worker)

    def generate(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
                 num_generations: int = 1, sampling: Mapping[str, Any] | None = None,
                 seed: int | None = None, timeout_s: float | None = None) -> RolloutResult:
        """:meth:`submit` then :meth:`gather`."""
        handle = self.submit(prompts, images, num_generations=num_generations, sampling=sampling,
                             seed=seed)
        return self.gather(handle, timeout_s)

    # ------------------------------------------------------------------ weights
    def sync_weights(self, state_dict: Mapping[str, Tensor], version: int,
                     bucket_mb: float = 64.0) -> dict[str, float]:
        """Push ``state_dict`` (keys of a plain ``PosePolicy``, e.g. from
        :func:`~posrft.rollout.weights.merged_state_dict`) to every worker and set ``version``.

        Each sync must carry every weight that differs from the model folder (a restarted worker
        gets only the latest sync). Keys and shapes are checked against the workers' model
        before anything is sent (``ValueError`` naming the key). Returns bytes, seconds, GB/s
        (bytes / seconds: how fast one model update reaches all workers) and the phase times.
        """
        self._check_open()
        if not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be an int >= 0, got {version!r}")
        if not state_dict:
            raise ValueError("sync_weights got an empty state dict")
        start = time.perf_counter()
        incoming = manifest_of(state_dict)
        check_compatible(self._manifest, incoming, "sync_weights")
        buckets = pack_state_dict(state_dict, max(1, int(bucket_mb * 2**20)))
        nbytes = sum(b.nbytes for b in buckets)
        packed = time.perf_counter()
        refs = [ray.put(b) for b in buckets]
        del buckets
        put = time.perf_counter()
        # stored before the push so a worker restarted during it receives these weights
        self._weight_refs, self._weight_manifest, self._version = refs, incoming, version
        loads = self._push_all(refs, version, incoming)
        end = time.perf_counter()
        seconds = end - start
        return {"bytes": float(nbytes), "tensors": float(len(incoming)),
                "buckets": float(len(refs)), "bucket_mb": float(bucket_mb), "seconds": seconds,
                "gb_per_s": nbytes / seconds / 1e9,
                "pack_s": packed - start, "put_s": put - packed, "push_s": end - put,
                "worker_load_s_max": max(x["load_s"] for x in loads),
                "worker_fetch_s_max": max(x["fetch_s"] for x in loads), "version": float(version)}

    def _push_all(self, refs: list[Any], version: int,
                  manifest: Manifest) -> list[dict[str, float]]:
        futures = {slot: w.update_weights.remote(refs, version, manifest)
                   for slot, w in enumerate(self._workers)}
        loads = []
        for slot, future in futures.items():
            try:
                loads.append(ray.get(future))
            except WORKER_LOST:
                self._try_restart(slot)  # a replacement is loaded with these refs by _restart
                loads.append({"load_s": 0.0, "fetch_s": 0.0, "bytes": 0.0})
        return loads

    # ------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if not self._workers:
            raise RuntimeError("the rollout pool is shut down")

    def shutdown(self) -> None:
        """Kill the workers, drop the weight refs, and stop Ray if this pool started it."""
        for worker in self._workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # already dead
                pass
        self._workers = []
        self._weight_refs = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
