"""Backing functions for ``posrft model init-tiny`` and ``posrft model sample``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from posrft.policy.model import PosePolicy
from posrft.policy.tiny import build_tiny_model


def init_tiny(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """Build the tiny model into ``out_dir`` and return a summary (path, parameter counts)."""
    path = build_tiny_model(out_dir, seed=seed)
    policy = PosePolicy.from_pretrained(path)
    return {
        "path": str(path),
        "seed": seed,
        "model_parameters": sum(p.numel() for p in policy.model.parameters()),
        "pose_head_parameters": sum(p.numel() for p in policy.pose_head.parameters()),
        "vocab_size": len(policy.tokenizer),
    }


def sample(model_dir: str | os.PathLike, prompts: list[str], image_paths: list[str] | None = None,
           num_generations: int = 1, temperature: float = 1.0, top_p: float = 1.0,
           max_new_tokens: int = 64, greedy: bool = False, seed: int | None = 0) -> list[dict[str, Any]]:
    """Sample from a policy folder; returns one JSON-ready record per completion.

    ``image_paths`` (optional) are all given to every prompt, in order.
    """
    policy = PosePolicy.from_pretrained(model_dir)
    images = None
    if image_paths:
        from PIL import Image

        for path in image_paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"image {path} does not exist")
        loaded = [Image.open(p).convert("RGB") for p in image_paths]
        images = [loaded for _ in prompts]
    batch = policy.rollout(prompts, images, num_generations=num_generations,
                           temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                           greedy=greedy, seed=seed)
    records = []
    for i in range(len(batch)):
        valid = bool(batch.pose_valid[i])
        records.append({
            "prompt_index": int(batch.prompt_index[i]),
            "text": batch.completion_texts[i],
            "pose_valid": valid,
            "pose": batch.pose[i, 0].tolist() if valid else None,
            "pose_logp": float(batch.pose_logp[i, 0]) if valid else None,
            "text_logp": float((batch.token_logps[i] * batch.completion_mask[i]).sum()),
        })
    return records


__all__ = ["init_tiny", "sample"]
