"""Concatenate per-worker :class:`RolloutBatch` es back into one batch, in order.

Shards differ in prompt length P_k and completion length T_k. With P = max P_k, T = max T_k:

* prompts are left-padded: ``prompt_ids[:, P - P_k:] = shard``, pad id / mask 0 in front;
* completions are right-padded: ``completion_ids[:, :T_k] = shard``, pad id / mask 0 / log-prob 0
  after (the policy counts positions over attended tokens, so extra padding changes nothing);
* per-sample fields (poses, flags, image counts) are concatenated in order, and the extra model
  inputs (pixels, image grids, token types) by :meth:`MultimodalInputs.concat`, which left-pads
  prompt-aligned ones to ``P`` like the prompts;
* ``prompt_index`` of shard k is offset by the number of prompts in shards 0..k-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import Tensor

from posrft.policy.mm_inputs import MultimodalInputs
from posrft.policy.rollout import RolloutBatch

_LEFT = ("prompt_ids", "prompt_mask")
_RIGHT = ("completion_ids", "completion_mask", "token_logps")
_SPECIAL = set(_LEFT + _RIGHT) | {"mm_inputs", "completion_texts", "prompt_index",
                                  "num_generations", "temperature", "greedy"}


def _pad(t: Tensor, width: int, value: float, left: bool) -> Tensor:
    extra = width - t.shape[1]
    if extra == 0:
        return t
    pad = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], 1)


def concat_rollouts(batches: Sequence[RolloutBatch], pad_token_id: int) -> RolloutBatch:
    """One batch holding ``batches`` in order (see the module docstring for the padding).

    All batches must share ``num_generations``, ``temperature`` and ``greedy``; tensors are
    moved to the first batch's device.
    """
    if not batches:
        raise ValueError("concat_rollouts needs at least one batch")
    first = batches[0]
    for k, b in enumerate(batches):
        for attr in ("num_generations", "temperature", "greedy"):
            if getattr(b, attr) != getattr(first, attr):
                raise ValueError(f"batch {k} has {attr}={getattr(b, attr)!r} but batch 0 has "
                                 f"{getattr(first, attr)!r}; only rollouts sampled alike "
                                 f"concatenate")
    device = first.prompt_ids.device
    out: dict = {}
    p_len = max(b.prompt_ids.shape[1] for b in batches)
    t_len = max(b.completion_ids.shape[1] for b in batches)
    for name in _LEFT:
        value = pad_token_id if name == "prompt_ids" else 0
        out[name] = torch.cat([_pad(getattr(b, name).to(device), p_len, value, True)
                               for b in batches])
    for name in _RIGHT:
        value = pad_token_id if name == "completion_ids" else 0
        parts = [getattr(b, name) for b in batches]
        if any(x is None for x in parts):  # unscored rollouts carry no token log-probs
            if not all(x is None for x in parts):
                raise ValueError(f"some batches have {name} and some do not (score=True/False mixed)")
            out[name] = None
            continue
        out[name] = torch.cat([_pad(x.to(device), t_len, value, False) for x in parts])
    for f in fields(RolloutBatch):
        if f.name not in _SPECIAL:
            out[f.name] = torch.cat([getattr(b, f.name).to(device) for b in batches])
    for k, b in enumerate(batches):
        if b.mm_inputs.num_samples != len(b):
            raise ValueError(f"batch {k}: mm_inputs holds {b.mm_inputs.num_samples} samples but "
                             f"the batch has {len(b)}")
    out["mm_inputs"] = MultimodalInputs.concat([b.mm_inputs.to(device) for b in batches], p_len)
    offsets, indices = 0, []
    for b in batches:
        indices.append(b.prompt_index.to(device) + offsets)
        offsets += int(b.prompt_index.max()) + 1 if len(b) else 0
    out["prompt_index"] = torch.cat(indices)
    out["completion_texts"] = [t for b in batches for t in b.completion_texts]
    return RolloutBatch(num_generations=first.num_generations, temperature=first.temperature,
                        greedy=first.greedy, **out)
