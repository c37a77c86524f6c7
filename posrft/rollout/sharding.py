"""How a rollout step is divided among workers: whole prompts (all G samples of a prompt stay on
one worker, so a group is never split), contiguous, balanced by count; one seed per shard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def shard_prompts(num_prompts: int, num_workers: int) -> list[range]:
    """Contiguous ranges of prompt indices, sizes differing by at most one, larger ones first;
    at most ``num_workers`` ranges and none empty (fewer prompts than workers → fewer shards)."""
    if num_prompts < 1:
        raise ValueError(f"need at least one prompt, got {num_prompts}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    shards = min(num_prompts, num_workers)
    base, extra = divmod(num_prompts, shards)
    out, start = [], 0
    for k in range(shards):
        size = base + (k < extra)
        out.append(range(start, start + size))
        start += size
    return out


def shard_seed(seed: int | None, shard: int) -> int | None:
    """Seed of shard ``shard`` derived from the step seed (NumPy ``SeedSequence``, so nearby step
    seeds and shard numbers give unrelated streams); ``None`` stays ``None`` (unseeded)."""
    if seed is None:
        return None
    if seed < 0 or shard < 0:
        raise ValueError(f"seed and shard must be >= 0, got seed={seed}, shard={shard}")
    return int(np.random.SeedSequence([seed, shard]).generate_state(1, np.uint32)[0])


def split_rows(rows: Sequence[Any],
               images: Sequence[Any] | None) -> tuple[list[Any], list[Any] | None]:
    """``(prompts, images)`` from dataset rows (mappings with ``prompt`` and optionally
    ``images`` or ``image``) or from a list of prompts plus an optional list of images."""
    rows = list(rows)
    if not rows:
        raise ValueError("no prompts given")
    if not isinstance(rows[0], Mapping):
        if images is not None and len(images) != len(rows):
            raise ValueError(f"images has {len(images)} entries but there are {len(rows)} prompts")
        return rows, None if images is None else list(images)
    if images is not None:
        raise ValueError("give either dataset rows (with their own images) or prompts + images")
    prompts, imgs = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "prompt" not in row:
            keys = list(row) if isinstance(row, Mapping) else "-"
            raise ValueError(f"rows[{i}]: expected a mapping with a 'prompt' key, got "
                             f"{type(row).__name__} with keys {keys}")
        prompts.append(row["prompt"])
        imgs.append(row.get("images", row.get("image")))
    return prompts, imgs if any(im is not None for im in imgs) else None
