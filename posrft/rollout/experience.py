"""The experience batch: what the learner needs from one HyGRPO rollout, tagged per token/sample.

Shapes: ``N`` samples, ``P`` prompt tokens, ``T`` completion tokens, ``D`` pose dimensions,
``M`` images. Rows are grouped: the ``G`` samples of one prompt are adjacent.

Per token ``(N, T)``: ``completion_ids``, ``completion_mask``, ``old_token_logps``,
``ref_token_logps``.
Per sample: ``prompt_ids``/``prompt_mask`` ``(N, P)``, ``pose``/``old_pose_mean``/
``old_pose_log_std``/``ref_pose_mean``/``ref_pose_log_std`` ``(N, D)``, ``pose_valid``,
``text_advantages``, ``pose_advantages``, ``model_version``, ``image_counts`` ``(N,)``.
Images: ``pixel_values`` ``(M, C, H, W)``, sample ``i`` owning ``image_counts[i]`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch
from torch import Tensor

PER_TOKEN = ("completion_ids", "completion_mask", "old_token_logps", "ref_token_logps")
PER_SAMPLE = (
    "prompt_ids", "prompt_mask", "pose", "old_pose_mean", "old_pose_log_std", "ref_pose_mean",
    "ref_pose_log_std", "pose_valid", "text_advantages", "pose_advantages", "model_version",
    "image_counts",
)  # fmt: skip


@dataclass
class Experience:
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    old_token_logps: Tensor
    pose: Tensor
    pose_valid: Tensor
    old_pose_mean: Tensor
    old_pose_log_std: Tensor
    text_advantages: Tensor
    pose_advantages: Tensor
    model_version: Tensor
    image_counts: Tensor
    pixel_values: Tensor | None = None
    ref_token_logps: Tensor | None = None
    ref_pose_mean: Tensor | None = None
    ref_pose_log_std: Tensor | None = None

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @classmethod
    def from_rollout(
        cls,
        batch: Any,
        text_advantages: Tensor,
        pose_advantages: Tensor,
        model_version: Tensor | int = 0,
    ) -> "Experience":
        """Build from a :class:`posrft.policy.rollout.RolloutBatch` plus advantages."""
        n = len(batch)
        if isinstance(model_version, int):
            model_version = torch.full((n,), model_version, dtype=torch.long)
        for name, t in (("text_advantages", text_advantages), ("pose_advantages", pose_advantages),
                        ("model_version", model_version)):  # fmt: skip
            if t.shape != (n,):
                raise ValueError(f"{name} must be shaped ({n},), got {tuple(t.shape)}")
        return cls(
            prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask,
            completion_ids=batch.completion_ids, completion_mask=batch.completion_mask,
            old_token_logps=batch.token_logps, pose=batch.pose, pose_valid=batch.pose_valid,
            old_pose_mean=batch.pose_mean, old_pose_log_std=batch.pose_log_std,
            text_advantages=text_advantages.float(), pose_advantages=pose_advantages.float(),
            model_version=model_version, image_counts=batch.image_counts,
            pixel_values=batch.pixel_values,
        )  # fmt: skip

    def select(self, indices: Sequence[int] | Tensor) -> "Experience":
        """Rows ``indices`` (a shard or micro-batch), images sliced to match, padding trimmed."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        updates: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "pixel_values" and isinstance(value, Tensor):
                updates[f.name] = value[idx]
        if self.pixel_values is not None:
            ends = self.image_counts.cumsum(0)
            starts = ends - self.image_counts
            parts = [self.pixel_values[starts[i] : ends[i]] for i in idx.tolist()]
            kept = [p for p in parts if p.shape[0]]
            updates["pixel_values"] = torch.cat(kept) if kept else None
        return _trim_padding(replace(self, **updates))

    def split(self, num_shards: int) -> list["Experience"]:
        """``num_shards`` contiguous, equal shards (one per learner rank)."""
        n = len(self)
        if n % num_shards:
            raise ValueError(f"{n} samples do not split into {num_shards} equal shards")
        size = n // num_shards
        return [self.select(range(k * size, (k + 1) * size)) for k in range(num_shards)]

    def to(self, device: torch.device | str) -> "Experience":
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})  # fmt: skip


def _trim_padding(exp: Experience) -> Experience:
    """Drop prompt columns that are padding in every row (left) and completion columns past the
    longest completion (right), so a micro-batch does not pay for another's length."""
    keep_p = exp.prompt_mask.bool().any(0)
    first = int(keep_p.float().argmax()) if keep_p.any() else exp.prompt_mask.shape[1]
    lengths = exp.completion_mask.sum(1)
    t = max(int(lengths.max()) if lengths.numel() else 0, 1)
    updates: dict[str, Any] = {"prompt_ids": exp.prompt_ids[:, first:],
                               "prompt_mask": exp.prompt_mask[:, first:]}  # fmt: skip
    for name in PER_TOKEN:
        value = getattr(exp, name)
        if value is not None:
            updates[name] = value[:, :t]
    return replace(exp, **updates)
