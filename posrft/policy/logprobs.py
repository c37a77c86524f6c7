"""Tensor helpers shared by rollout and learner: token log-probs, EOS masks, position ids."""

from __future__ import annotations

import torch
from torch import Tensor


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """log softmax(logits)[..., index] without materialising the full log-softmax.

    logits (N, T, V), index (N, T) → (N, T) in float32. Uses log p_i = z_i − logsumexp(z), one
    row of the batch at a time so peak memory is one (T, V) block, not (N, T, V) twice.
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
    lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return picked - lse


def mask_after_eos(completion_ids: Tensor, eos_ids: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Cut completions at their first EOS.

    completion_ids (N, T), eos_ids (K,) → (ids, mask): mask (N, T) int64 is 1 up to and including
    the first EOS (everything when there is none), 0 after; ids has ``pad_id`` where mask is 0.
    The EOS token itself stays in the mask, as in TRL: its probability is part of the action.
    """
    n, t = completion_ids.shape
    is_eos = torch.isin(completion_ids, eos_ids.to(completion_ids.device))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1),
                        torch.full((n,), t, device=completion_ids.device))
    mask = (torch.arange(t, device=completion_ids.device)[None, :] <= first[:, None]).long()
    ids = completion_ids.masked_fill(mask == 0, pad_id)
    return ids, mask


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions 0, 1, ... over attended tokens (pads get 0), as ``generate`` builds them for
    left-padded prompts; (N, L) → (N, L). Using the same positions in the learner's forward makes
    its log-probs those of the distribution the tokens were sampled from."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def first_token_index(ids: Tensor, mask: Tensor, token_id: int) -> tuple[Tensor, Tensor]:
    """Index of the first ``token_id`` inside ``mask`` per row.

    ids, mask (N, T) → (found (N,) bool, index (N,) long). Rows without the token get the index of
    their last attended position (0 for an empty row): a finite placeholder, flagged by ``found``.
    """
    hit = (ids == token_id) & mask.bool()
    found = hit.any(1)
    last = (mask.long().sum(1) - 1).clamp(min=0)
    index = torch.where(found, hit.int().argmax(1), last)
    return found, index
