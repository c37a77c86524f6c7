"""``RolloutWorker``: one policy replica that samples rollouts; a Ray actor in a
:class:`~posrft.rollout.pool.RolloutPool` (``ray.remote`` is applied at creation with the
pool's resources), or a plain object in-process.

Contract of one step: ``generate`` calls ``policy.rollout`` once for the worker's whole shard
(one ``generate`` call per batch, never per sample) and returns the batch on CPU, the model
version that produced it, timings and, when the worker has a ``scorer`` and is given the
shard's dataset rows, the rewards of its samples (``None`` otherwise). ``update_weights`` loads
a partial state dict bucket by bucket, sets the version and, if asked, reports the hash (XXH3-64) of
every tensor it now holds (:mod:`posrft.rollout.fingerprint`).

Two weight layouts: *merged* (default: a plain policy; a LoRA learner sends
``merged_state_dict``) and *adapter* (``lora=`` the learner's LoRA settings: the worker wraps
its base with the same LoRA structure and receives only ``adapter_state_dict``: A/B matrices,
projector copy, pose head). An adapter worker applies the adapter one of two ways:
``merge_adapter=True`` (default) keeps a copy W₀ of every adapted base weight and after each
sync sets W = W₀ + ΔW with PEFT's own ``merge`` (the same W₀ + s·BA, bit for bit, that a merged
sync delivers), so it samples at merged speed for one extra copy of the adapted weights;
``False`` samples through PEFT's unmerged adapter path (no extra memory, an extra small matmul
pair per adapted layer).

Scoring (rewards next to the rollouts): the rollout floor cannot import the rewards (floor 5),
so the learner injects a picklable ``scorer`` with ``scorer(rows, batch) -> scores`` (one
shard's rows and batch) and ``scorer.combine([scores, ...]) -> scores`` (shards in order).
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

from posrft.policy.lora import apply_lora, merge_lora
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
from posrft.rollout.fingerprint import Fingerprint, fingerprint

#: ``sampling`` keys ``generate`` accepts (the keyword arguments of ``PosePolicy.rollout``).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "greedy", "num_pose_samples",
                 "score")


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
    learner's :class:`~posrft.policy.pose_head.SigmaSettings` fields, if it changed them. ``lora``:
    the learner's LoRA settings (``PosePolicy.config.lora``) for adapter-only sync: the base
    stays and each received adapter is folded into it (``merge_adapter``, default) or applied
    unmerged, exactly as the learner computes. ``scorer``: see the module docstring."""

    def __init__(self, model_path: str, num_threads: int | None = None, device: str | None = None,
                 dtype: str | None = None, worker_index: int = 0,
                 pose_sigma: Mapping[str, Any] | None = None,
                 lora: Mapping[str, Any] | None = None, scorer: Any = None,
                 merge_adapter: bool = True) -> None:
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
        if pose_sigma is not None:  # the learner's RL σ settings, so both sample alike (before
            self.policy.set_pose_sigma(SigmaSettings(**pose_sigma))  # LoRA copies the head)
        self.adapter = lora is not None
        if self.adapter and not self.policy.is_lora:  # the learner's structure, A/B synced later
            apply_lora(self.policy, **dict(lora))
        elif not self.adapter and self.policy.is_lora:  # sample with W + scale·B·A folded in
            merge_lora(self.policy)
        self.scorer = scorer
        # adapter mode, merged: (layer, W₀) of every LoRA layer; W = W₀ + ΔW after each sync
        self._bases: list[tuple[Any, Tensor]] = []
        # and every trainable-token layer (<POSE> rows), so no step rebuilds the full matrix
        self._token_layers: list[Any] = []
        if self.adapter and merge_adapter:
            from peft.tuners.lora import LoraLayer
            from peft.tuners.trainable_tokens import TrainableTokensLayer

            self._bases = [(m, m.get_base_layer().weight.detach().clone())
                           for m in self.policy.hf_model.modules() if isinstance(m, LoraLayer)]
            self._token_layers = [m for m in self.policy.hf_model.modules()
                                  if isinstance(m, TrainableTokensLayer)]
            self._merge_adapter()
        self.policy.eval().requires_grad_(False)
        self.load_s = time.perf_counter() - start
        # parameters are updated in place, so these stay the tensors the worker samples with
        self._tensors = dict(self.policy.state_dict(keep_vars=True))
        self._manifest = manifest_of(self._tensors)
        self._version = 0

    # ------------------------------------------------------------------ small queries
    @torch.no_grad()
    def _merge_adapter(self) -> None:
        """W = W₀ + ΔW for every LoRA layer (PEFT's ``merge``, from the kept W₀); the synced
        rows written into every trainable-token layer's W (PEFT keeps the original rows)."""
        for layer, base in self._bases:
            layer.get_base_layer().weight.data.copy_(base)
            layer.merged_adapters = []
            layer.merge()
        for layer in self._token_layers:
            if layer.merged:
                layer.unmerge()
            layer.merge()

    def ping(self) -> dict[str, Any]:
        node_id, node_ip = "", ""
        if ray.is_initialized():  # an actor (in-process workers have no node)
            node_id = ray.get_runtime_context().get_node_id()
            node_ip = ray.util.get_node_ip_address()
        return {"pid": os.getpid(), "worker_index": self.worker_index, "version": self._version,
                "threads": torch.get_num_threads(), "device": str(self.policy.device),
                "load_s": self.load_s, "pad_token_id": self.policy.pad_token_id,
                "node_id": node_id, "node_ip": node_ip, "adapter": self.adapter,
                "adapter_merged": bool(self._bases or self._token_layers)}

    def fingerprint(self, names: Sequence[str] | None = None) -> Fingerprint:
        """Hashes (XXH3-64) of the tensors the worker holds now (``names``; default: all)."""
        names = list(self._tensors) if names is None else list(names)
        unknown = [n for n in names if n not in self._tensors]
        if unknown:
            raise ValueError(f"rollout worker {self.worker_index}: unknown tensor(s) {unknown[:5]}")
        return fingerprint({n: self._tensors[n] for n in names},
                           threads=self.num_threads or 1)

    def version(self) -> int:
        return self._version

    def manifest(self) -> Manifest:
        """name → (shape, dtype) of every tensor ``update_weights`` accepts."""
        return self._manifest

    # ------------------------------------------------------------------ sampling
    def generate(self, prompts: Sequence[Any], images: Sequence[Any] | None, num_generations: int,
                 sampling: Mapping[str, Any] | None = None, seed: int | None = None,
                 score_rows: Sequence[Mapping[str, Any]] | None = None,
                 ) -> tuple[RolloutBatch, int, dict[str, float], Any]:
        """``policy.rollout`` on all of ``prompts`` at once → (batch on CPU, version, timings,
        scores): ``scores`` is ``scorer(score_rows, batch)`` when ``score_rows`` (one dataset
        row per prompt) are given, else None."""
        if score_rows is not None and self.scorer is None:
            raise ValueError(f"rollout worker {self.worker_index} has no scorer; build the pool "
                             f"with one to score rollouts on the workers")
        if score_rows is not None and len(score_rows) != len(prompts):
            raise ValueError(f"score_rows has {len(score_rows)} rows for {len(prompts)} prompts")
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
        scores = None
        if score_rows is not None:
            start = time.perf_counter()
            scores = self.scorer(list(score_rows), batch)
            timings["reward_s"] = time.perf_counter() - start
        return batch, version, timings, scores

    # ------------------------------------------------------------------ weights
    def update_weights(self, buckets: Sequence[Any], version: int,
                       manifest: Manifest | None = None,
                       verify: bool = False) -> dict[str, Any]:
        """Load weights bucket by bucket, then set the model version; with ``verify`` the
        result's ``fingerprint`` holds the hash of every loaded tensor read back from the
        model (see :mod:`posrft.rollout.fingerprint`).

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
        names: list[str] = []
        for k, item in enumerate(buckets):
            tensors = unpack_bucket(item) if isinstance(item, PackedBucket) else dict(item)
            check_compatible(self._manifest, manifest_of(tensors),
                             f"rollout worker {self.worker_index}, weight bucket {k}")
            with torch.no_grad():
                self.policy.load_state_dict(tensors, strict=False)
            loaded += sum(t.numel() * t.element_size() for t in tensors.values())
            names.extend(tensors)
        if self._bases or self._token_layers:
            self._merge_adapter()
        self._version = int(version)
        out: dict[str, Any] = {"load_s": time.perf_counter() - start, "fetch_s": fetch_s,
                               "bytes": float(loaded)}
        if verify:
            start = time.perf_counter()
            out["fingerprint"] = self.fingerprint(names)
            out["verify_s"] = time.perf_counter() - start
        return out
