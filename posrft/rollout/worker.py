"""``RolloutWorker``: one policy replica that samples rollouts; a Ray actor in a
:class:`~posrft.rollout.pool.RolloutPool` (``ray.remote`` is applied at creation with the
pool's resources), or a plain object in-process.

Contract of one step: ``generate`` calls ``policy.rollout`` once for the worker's whole shard
(one ``generate`` call per batch, never per sample) and returns the batch on CPU, the model
version that produced it and timings. ``update_weights`` loads a partial state dict (keys of a
plain ``PosePolicy``) bucket by bucket and sets the version.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import ray
import torch
from torch import Tensor

from posrft.policy.lora import merge_lora
from posrft.policy.model import PosePolicy
from posrft.policy.pose_head import SigmaSettings
from posrft.policy.rollout import RolloutBatch
from posrft.rollout.buckets import (
    Manifest,
    PackedBucket,
    check_compatible,
    manifest_of,
    unpack_bucket,
)

#: ``sampling`` keys ``generate`` accepts (the keyword arguments of ``PosePolicy.rollout``).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "greedy", "num_pose_samples")


def check_sampling(sampling: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy of ``sampling`` with unknown keys rejected (a typo must not silently fall back to a
    default)."""
    sampling = dict(sampling or {})
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ValueError(f"sampling: unknown key(s) {unknown}; expected a subset of "
                         f"{list(SAMPLING_KEYS)}")
    return sampling


def batch_to_cpu(batch: RolloutBatch) -> RolloutBatch:
    """The batch with every tensor (model inputs included) on the CPU, ready for Ray."""
    moved = {f.name: getattr(batch, f.name).cpu() for f in fields(batch)
             if isinstance(getattr(batch, f.name), Tensor)}
    return replace(batch, mm_inputs=batch.mm_inputs.to("cpu"), **moved)


class RolloutWorker:
    """A plain ``PosePolicy`` in eval mode loaded from ``model_path`` (a LoRA checkpoint is
    merged on load, so its keys are those :func:`~posrft.rollout.weights.merged_state_dict`
    sends), sampling with ``num_threads`` intra-op threads (set before loading, so it matches
    the CPUs Ray reserved; ``None`` leaves the process's setting alone). ``pose_sigma``: the
    learner's :class:`~posrft.policy.pose_head.SigmaSettings` fields, if it changed them."""

    def __init__(self, model_path: str, num_threads: int | None = None, device: str | None = None,
                 dtype: str | None = None, worker_index: int = 0,
                 pose_sigma: Mapping[str, Any] | None = None) -> None:
        if num_threads is not None:  # process-wide, so only when asked (the pool's actors ask)
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        self.worker_index = worker_index
        self.num_threads = num_threads
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = None
        if dtype is not None:
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"dtype {dtype!r} is not a torch dtype name (e.g. 'bfloat16')")
        start = time.perf_counter()
        self.policy = PosePolicy.from_pretrained(model_path, dtype=torch_dtype, device=device)
        if self.policy.is_lora:  # a LoRA checkpoint: sample with W + scale·B·A folded in
            merge_lora(self.policy)
        if pose_sigma is not None:  # the learner's RL σ settings, so both sample alike
            self.policy.set_pose_sigma(SigmaSettings(**pose_sigma))
        self.policy.eval().requires_grad_(False)
        self.load_s = time.perf_counter() - start
        self._manifest = manifest_of(self.policy.state_dict())
        self._version = 0

    # ------------------------------------------------------------------ small queries
    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "worker_index": self.worker_index, "version": self._version,
                "threads": torch.get_num_threads(), "device": str(self.policy.device),
                "load_s": self.load_s, "pad_token_id": self.policy.pad_token_id}

    def version(self) -> int:
        return self._version

    def manifest(self) -> Manifest:
        """name → (shape, dtype) of every tensor ``update_weights`` accepts."""
        return self._manifest

    # ------------------------------------------------------------------ sampling
    def generate(self, prompts: Sequence[Any], images: Sequence[Any] | None, num_generations: int,
                 sampling: Mapping[str, Any] | None = None,
                 seed: int | None = None) -> tuple[RolloutBatch, int, dict[str, float]]:
        """``policy.rollout`` on all of ``prompts`` at once → (batch on CPU, version, timings)."""
        sampling = check_sampling(sampling)
        version = self._version
        start, cpu_start = time.perf_counter(), time.process_time()
        batch = self.policy.rollout(list(prompts), None if images is None else list(images),
                                    num_generations=num_generations, seed=seed, **sampling)
        generate_s = time.perf_counter() - start
        # CPU seconds of this process over the call: well below generate_s means the worker
        # was waiting for a core (other processes), not computing
        cpu_s = time.process_time() - cpu_start
        batch = batch_to_cpu(batch)
        timings = {"generate_s": generate_s, "cpu_s": cpu_s, "samples": float(len(batch)),
                   "prompts": float(len(prompts)),
                   "completion_tokens": float(batch.completion_mask.sum()),
                   "worker_index": float(self.worker_index), "pid": float(os.getpid())}
        return batch, version, timings

    # ------------------------------------------------------------------ weights
    def update_weights(self, buckets: Sequence[Any], version: int,
                       manifest: Manifest | None = None) -> dict[str, float]:
        """Load weights bucket by bucket, then set the model version.

        ``buckets``: Ray ``ObjectRef`` s of :class:`PackedBucket` s (fetched in one call and read
        zero-copy from shared memory), ``PackedBucket`` s, or plain ``{name: tensor}`` dicts.
        ``manifest`` (optional): name → (shape, dtype) of all incoming tensors, checked before
        anything is loaded so that a bad key cannot leave the model half-updated. Every bucket
        is checked again (keys known, shapes match: ``ValueError`` naming the key otherwise).
        """
        if manifest is not None:
            check_compatible(self._manifest, manifest, f"rollout worker {self.worker_index}")
        start = time.perf_counter()
        buckets = list(buckets)
        refs = [k for k, item in enumerate(buckets) if isinstance(item, ray.ObjectRef)]
        if refs:  # one round trip for all; the arrays map shared memory, nothing is copied
            for k, value in zip(refs, ray.get([buckets[k] for k in refs])):
                buckets[k] = value
        fetch_s = time.perf_counter() - start
        loaded = 0
        for k, item in enumerate(buckets):
            tensors = unpack_bucket(item) if isinstance(item, PackedBucket) else dict(item)
            check_compatible(self._manifest, manifest_of(tensors),
                             f"rollout worker {self.worker_index}, weight bucket {k}")
            with torch.no_grad():
                self.policy.load_state_dict(tensors, strict=False)
            loaded += sum(t.numel() * t.element_size() for t in tensors.values())
        self._version = int(version)
        return {"load_s": time.perf_counter() - start, "fetch_s": fetch_s, "bytes": float(loaded)}
