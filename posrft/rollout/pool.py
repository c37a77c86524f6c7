"""``RolloutPool``: Ray rollout workers owned by the learner's rank 0.

One step: the prompts are split into contiguous shards of whole prompts (a prompt's G samples
stay on one worker, so a group is never split), one shard per live worker, each sampled in one
``generate`` call with its own seed (:func:`~posrft.rollout.sharding.shard_seed`), and the shards
are concatenated back in input order (:func:`~posrft.rollout.concat.concat_rollouts`).
``submit`` / ``gather`` split the step so the learner can overlap it with other work. With a
``scorer`` the workers also score their own samples (rewards next to the rollouts) and
``RolloutResult.scores`` holds the combined scores.

Placement and cluster: see :mod:`posrft.rollout.cluster` (local, loopback-only, or an existing
cluster) and :mod:`posrft.rollout.placement` (one placement-group bundle per worker, ``PACK`` /
``SPREAD`` ...).

Fault tolerance (:mod:`posrft.rollout.fleet`): a worker whose actor dies (killed, crashed, out
of memory, node gone) is logged with its number and Ray's cause and replaced in its bundle; its
shard is sampled again at once by a live worker with the same seed, so the step gets exactly the
samples the dead worker would have returned. A shard may lose its worker ``max_restarts`` times
per step, then ``RuntimeError``. Errors raised *inside* ``generate`` (bad prompts, a reward
function's error) are not retried. The replacement joins (latest weights pushed and verified) at
the next ``submit`` / ``sync_weights`` once it is ready; until then the step runs on fewer
workers. Deaths are counted in the step where they happen: ``restarts`` in the gather's metrics
and in ``sync_weights``'s.

Weight sync: the learner's tensors are packed into buckets (:mod:`posrft.rollout.buckets`), each
``ray.put`` once; every worker reads the same refs zero-copy from shared memory (or over the
network from another node) and, with ``verify``, reports a hash (XXH3-64) of every tensor it then
holds, checked against the learner's (:mod:`posrft.rollout.fingerprint`).
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
from torch import Tensor

from posrft.policy.rollout import RolloutBatch
from posrft.rollout import placement
from posrft.rollout.buckets import Manifest, check_compatible, manifest_of, pack_state_dict
from posrft.rollout.cluster import init_ray
from posrft.rollout.concat import concat_rollouts
from posrft.rollout.fingerprint import Fingerprint, expected_fingerprint
from posrft.rollout.fleet import WORKER_LOST, Fleet, Slot, Weights
from posrft.rollout.sharding import shard_prompts, shard_seed, split_rows
from posrft.rollout.worker import RolloutWorker, check_sampling

__all__ = ["RolloutPool", "RolloutResult", "RolloutHandle", "WORKER_LOST"]


@dataclass
class RolloutResult:
    """batch: N = prompts · G samples in input order; model_version (N,) int64: the weights
    version that sampled each row; metrics: flat floats for logging (``rollout_s``,
    ``samples_per_s``, ``tokens_per_s``, ``restarts``, ``workers_used``, ``nodes_used``...);
    per_worker: one dict per shard; scores: the scorer's combined output (None without one)."""

    batch: RolloutBatch
    model_version: Tensor
    metrics: dict[str, float]
    per_worker: list[dict[str, float]]
    scores: Any = None


@dataclass
class _Shard:
    index: int
    prompts: list[Any]
    images: list[Any] | None
    seed: int | None
    rows: list[Any] | None  # rows to score, when the workers score
    slot: Slot | None = None
    actor: Any = None  # the actor the current attempt runs on
    node_id: str = ""  # where it runs
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
    """``num_workers`` :class:`RolloutWorker` actors (``num_cpus_per_worker`` CPUs,
    ``num_gpus_per_worker`` GPUs and ``worker_resources`` each, in placement-group bundles
    placed by ``placement_strategy``) on a local Ray (default) or the cluster at
    ``ray_address``. An unreachable address raises ``ConnectionError`` within
    ``connect_timeout_s``. ``lora``: the learner's LoRA settings for adapter-only sync, applied
    merged or not (``merge_adapter``; see :class:`RolloutWorker`); ``scorer``: rewards on the
    workers; ``verify``: check every sync's fingerprints. Use as a context manager or call
    :meth:`shutdown`."""

    def __init__(self, model_path: str | Path, num_workers: int, num_cpus_per_worker: float = 1.0,
                 num_gpus_per_worker: float = 0.0, ray_address: str | None = None, *,
                 dtype: str | None = None, pose_sigma: Mapping[str, Any] | None = None,
                 lora: Mapping[str, Any] | None = None, merge_adapter: bool = True,
                 scorer: Any = None,
                 placement_strategy: str = "PACK",
                 worker_resources: Mapping[str, float] | None = None, verify: bool = True,
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
        bundle = placement.worker_bundle(num_cpus_per_worker, num_gpus_per_worker,
                                         worker_resources)
        placement.check_strategy(placement_strategy)
        self.model_path = str(model_path)
        if ray_address is None and not (Path(model_path) / "config.json").is_file():
            raise FileNotFoundError(f"rollout model folder {model_path} has no config.json")
        self.max_restarts = max_restarts
        self.startup_timeout_s = startup_timeout_s
        self.verify = verify
        self.scorer = scorer
        self.total_restarts = 0
        self._in_flight = 0  # submitted, not yet gathered handles
        self._fleet: Fleet | None = None
        required = {k: v * num_workers for k, v in bundle.items()}
        self._started_ray = init_ray(ray_address, required, connect_timeout_s=connect_timeout_s,
                                     **dict(ray_init_kwargs or {}))
        actor_cls = ray.remote(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker,
                               max_restarts=0, max_task_retries=0)(RolloutWorker)
        worker_kwargs = dict(num_threads=max(1, math.floor(num_cpus_per_worker)),
                             device="cuda" if num_gpus_per_worker > 0 else "cpu", dtype=dtype,
                             pose_sigma=pose_sigma, lora=dict(lora) if lora else None,
                             merge_adapter=merge_adapter, scorer=scorer)
        custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")}

        def make_actor(index: int, options: dict[str, Any]) -> Any:
            opts = dict(options, resources=custom) if custom else options
            return actor_cls.options(**opts).remote(self.model_path, worker_index=index,
                                                    **worker_kwargs)

        try:
            self._fleet = Fleet(make_actor, bundle, placement_strategy,
                                startup_timeout_s=startup_timeout_s, max_failures=max_restarts)
            self._fleet.wait_all(self._fleet.add(num_workers), self.model_path)
            first = self._fleet.slots[0]
            self._manifest: Manifest = ray.get(first.actor.manifest.remote())
            self.pad_token_id = int(first.info["pad_token_id"])
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ views
    @property
    def num_workers(self) -> int:
        """Slots, live or starting (the pool's size)."""
        return len(self._open().slots)

    @property
    def workers(self) -> list[Any]:
        """The current actor handles (slot order); a restart replaces an entry."""
        return [s.actor for s in self._open().slots]

    @property
    def worker_info(self) -> list[dict[str, Any]]:
        """Each slot's last ping: pid, node_id, node_ip, version, device..."""
        return [dict(s.info, slot=s.index, live=s.live) for s in self._open().slots]

    @property
    def deaths(self) -> list[dict[str, Any]]:
        """Every worker death seen: worker, pid, node_id, during, cause, time."""
        return list(self._open().deaths)

    @property
    def version(self) -> int:
        w = self._open().weights
        return 0 if w is None else w.version

    def wait_ready(self, timeout_s: float) -> int:
        """Let starting workers (replacements, added ones) join, waiting up to ``timeout_s``
        for all of them; returns the number of live workers. Never needed for correctness: the
        pool admits ready workers by itself at each ``submit`` / ``sync_weights``."""
        fleet = self._open()
        deadline = time.perf_counter() + timeout_s
        while len(fleet.live()) < len(fleet.slots):
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            fleet.admit(block_s=min(left, 5.0))
        return len(fleet.live())

    def resize(self, num_workers: int) -> None:
        """Change the number of workers between steps: new ones start (in bundles that removed
        workers left, else in a new placement group) and join with the latest weights once
        ready; removed ones (starting ones first, then the highest-numbered) are stopped."""
        if self._in_flight:
            raise RuntimeError("resize the rollout pool between steps (a handle is in flight)")
        self._open().resize(num_workers)

    # ------------------------------------------------------------------ rollouts
    def submit(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
               num_generations: int = 1, sampling: Mapping[str, Any] | None = None,
               seed: int | None = None,
               score_rows: Sequence[Any] | None = None) -> RolloutHandle:
        """Start sampling ``num_generations`` completions for each prompt (or dataset row with
        ``prompt`` / ``images``); returns at once. ``score_rows`` (one per prompt): what the
        pool's scorer scores the samples against, on the workers."""
        fleet = self._open()
        prompts, images = split_rows(prompts, images)
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        if score_rows is not None:
            if self.scorer is None:
                raise ValueError("score_rows given but the pool has no scorer")
            if len(score_rows) != len(prompts):
                raise ValueError(f"score_rows has {len(score_rows)} rows for {len(prompts)} prompts")
        sampling = check_sampling(sampling)
        fleet.admit()
        fleet.wait_for_live(self.startup_timeout_s)
        live = fleet.live()
        shards = [_Shard(k, prompts[r.start:r.stop],
                         None if images is None else images[r.start:r.stop], shard_seed(seed, k),
                         None if score_rows is None else list(score_rows[r.start:r.stop]))
                  for k, r in enumerate(shard_prompts(len(prompts), len(live)))]
        handle = RolloutHandle(shards, num_generations, sampling, time.perf_counter())
        for shard, slot in zip(shards, live):
            self._launch(handle, shard, slot)
        self._in_flight += 1
        return handle

    def _launch(self, handle: RolloutHandle, shard: _Shard, slot: Slot) -> None:
        shard.attempts += 1
        shard.slot, shard.actor, shard.node_id = slot, slot.actor, slot.info.get("node_id", "")
        shard.ref = slot.actor.generate.remote(shard.prompts, shard.images, handle.num_generations,
                                               handle.sampling, shard.seed, shard.rows)

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
        if self._in_flight == 0:
            self._check_alive()
        return self._assemble(handle, outputs, self._open().drain_restarts())

    def _wait_shards(self, handle: RolloutHandle, timeout_s: float | None) -> dict[int, tuple]:
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        pending = {shard.ref: shard for shard in handle.shards}
        outputs: dict[int, tuple] = {}
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                raise TimeoutError(f"rollout shards {sorted(s.index for s in pending.values())} "
                                   f"did not finish within {timeout_s:g} s")
            shard = pending.pop(ready[0])
            try:
                outputs[shard.index] = ray.get(ready[0])
                shard.slot.failures = 0
            except WORKER_LOST as err:
                self._relaunch(handle, shard, err)
                pending[shard.ref] = shard
        return outputs

    def _relaunch(self, handle: RolloutHandle, shard: _Shard, err: Exception) -> None:
        """The shard's worker died: replace it and sample the shard again on a live worker
        (the least busy with this handle). ``RuntimeError`` after ``max_restarts`` attempts."""
        fleet = self._open()
        fleet.report_death(shard.slot, shard.actor, err,
                           f"sampling shard {shard.index} (attempt {shard.attempts})")
        if shard.attempts > self.max_restarts:
            raise RuntimeError(
                f"rollout shard {shard.index} lost its worker {shard.attempts} times (last: "
                f"rollout worker {shard.slot.index}; max_restarts={self.max_restarts}); last "
                f"error: {err}") from err
        shard.restarts += 1
        fleet.admit()
        fleet.wait_for_live(self.startup_timeout_s)
        busy = {s.slot.index: 0 for s in handle.shards}
        for s in handle.shards:
            busy[s.slot.index] = busy.get(s.slot.index, 0) + 1
        slot = min(fleet.live(), key=lambda s: (busy.get(s.index, 0), s.index))
        self._launch(handle, shard, slot)

    def _check_alive(self, timeout_s: float = 5.0) -> None:
        """Ping every live worker; report the dead (a worker killed after finishing its shard
        is noticed here rather than in the next step)."""
        fleet = self._open()
        targets = [(s, s.actor) for s in fleet.live()]
        pings = [a.ping.remote() for _, a in targets]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=timeout_s)
        ready = set(ready)
        for (slot, actor), ref in zip(targets, pings):
            if ref not in ready:
                continue  # busy: not known to be dead
            try:
                slot.info = ray.get(ref)
            except WORKER_LOST as err:
                fleet.report_death(slot, actor, err, "idle (found by a ping after the step)")

    def _assemble(self, handle: RolloutHandle, outputs: dict[int, tuple],
                  restarts: int) -> RolloutResult:
        start = time.perf_counter()
        ordered = [outputs[s.index] for s in handle.shards]
        batch = concat_rollouts([o[0] for o in ordered], self.pad_token_id)
        versions = torch.cat([torch.full((len(o[0]),), o[1], dtype=torch.long) for o in ordered])
        scores = None
        if any(o[3] is not None for o in ordered):
            scores = self.scorer.combine([o[3] for o in ordered])
        concat_s = time.perf_counter() - start
        rollout_s = time.perf_counter() - handle.submitted_at
        per_worker = []
        for shard, (_, version, timings, _) in zip(handle.shards, ordered):
            busy = max(timings["generate_s"], 1e-9)
            per_worker.append({**timings, "shard": float(shard.index), "version": float(version),
                               "slot": float(shard.slot.index), "attempts": float(shard.attempts),
                               "samples_per_s": timings["samples"] / busy,
                               "tokens_per_s": timings["completion_tokens"] / busy})
        tokens = float(batch.completion_mask.sum())
        slowest = max(w["generate_s"] for w in per_worker)
        self.total_restarts += restarts
        nodes = {shard.node_id for shard in handle.shards}
        metrics = {
            "rollout_s": rollout_s, "samples": float(len(batch)), "completion_tokens": tokens,
            "samples_per_s": len(batch) / rollout_s, "tokens_per_s": tokens / rollout_s,
            "slowest_worker_generate_s": slowest, "overhead_s": max(0.0, rollout_s - slowest),
            "concat_s": concat_s, "workers_used": float(len({s.slot.index for s in handle.shards})),
            "nodes_used": float(len(nodes)), "workers_live": float(len(self._open().live())),
            "restarts": float(restarts), "total_restarts": float(self.total_restarts),
            "min_version": float(versions.min()), "max_version": float(versions.max()),
        }
        if scores is not None:
            metrics["reward_s"] = max(w.get("reward_s", 0.0) for w in per_worker)
        return RolloutResult(batch, versions, metrics, per_worker, scores)

    def generate(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
                 num_generations: int = 1, sampling: Mapping[str, Any] | None = None,
                 seed: int | None = None, timeout_s: float | None = None,
                 score_rows: Sequence[Any] | None = None) -> RolloutResult:
        """:meth:`submit` then :meth:`gather`."""
        handle = self.submit(prompts, images, num_generations=num_generations, sampling=sampling,
                             seed=seed, score_rows=score_rows)
        return self.gather(handle, timeout_s)

    # ------------------------------------------------------------------ weights
    def sync_weights(self, state_dict: Mapping[str, Tensor], version: int,
                     bucket_mb: float = 64.0) -> dict[str, float]:
        """Push ``state_dict`` to every worker and set ``version``: keys of the workers' model
        (a plain ``PosePolicy``'s, e.g. :func:`~posrft.rollout.weights.merged_state_dict`; in
        adapter mode the LoRA policy's, :func:`~posrft.rollout.weights.adapter_state_dict`).

        Each sync must carry every weight that differs from the model folder (a restarted worker
        gets only the latest sync). Keys and shapes are checked against the workers' model
        before anything is sent (``ValueError`` naming the key); with ``verify`` every worker's
        tensor hashes are checked afterwards (``WeightSyncError`` naming the worker and the tensor).
        Returns bytes, seconds, GB/s (bytes / seconds: how fast one model update reaches all
        workers), phase times, ``restarts`` (deaths during this sync) and ``workers``.
        """
        fleet = self._open()
        if not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be an int >= 0, got {version!r}")
        if not state_dict:
            raise ValueError("sync_weights got an empty state dict")
        start = time.perf_counter()
        fleet.admit()  # ready replacements join first (with the previous weights)
        incoming = manifest_of(state_dict)
        check_compatible(self._manifest, incoming, "sync_weights")
        buckets = pack_state_dict(state_dict, max(1, int(bucket_mb * 2**20)))
        nbytes = sum(b.nbytes for b in buckets)
        packed = time.perf_counter()
        refs = [ray.put(b) for b in buckets]
        put = time.perf_counter()
        timing: dict[str, float] = {}

        def expected() -> Fingerprint:
            t0 = time.perf_counter()
            fp = expected_fingerprint(state_dict, self._manifest, threads=4)
            timing["learner_verify_s"] = time.perf_counter() - t0
            return fp

        loads = fleet.push(Weights(refs, incoming, version, None),
                           expected if self.verify else None)
        del buckets
        end = time.perf_counter()
        seconds = end - start
        restarts = fleet.drain_restarts()
        self.total_restarts += restarts
        out = {"bytes": float(nbytes), "tensors": float(len(incoming)),
               "buckets": float(len(refs)), "bucket_mb": float(bucket_mb), "seconds": seconds,
               "gb_per_s": nbytes / seconds / 1e9,
               "pack_s": packed - start, "put_s": put - packed, "push_s": end - put,
               "worker_load_s_max": max((x["load_s"] for x in loads), default=0.0),
               "worker_fetch_s_max": max((x["fetch_s"] for x in loads), default=0.0),
               "version": float(version), "restarts": float(restarts),
               "workers": float(len(fleet.live())), "verified": float(self.verify)}
        if self.verify:
            out["worker_verify_s_max"] = max((x.get("verify_s", 0.0) for x in loads), default=0.0)
            out["learner_verify_s"] = timing.get("learner_verify_s", 0.0)
        return out

    # ------------------------------------------------------------------ lifetime
    def _open(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("the rollout pool is shut down")
        return self._fleet

    def shutdown(self) -> None:
        """Kill the workers, release their placement groups and the weight refs, and disconnect
        from Ray (stopping it if this pool started a local cluster)."""
        if self._fleet is not None:
            self._fleet.shutdown()
            self._fleet = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
