"""Prompt formatting: chat messages (+ images) → left-padded model inputs.

A prompt is either a string (one user turn) or a list of chat messages
``[{"role": ..., "content": str | [{"type": "image"}, {"type": "text", "text": ...}, ...]}]``.
Images are given per prompt (``None``, one PIL image or a list); for a string prompt they are
placed before the text as ``{"type": "image"}`` parts, for a message list the number of image
parts must equal the number of images given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

Prompt = Union[str, list[dict[str, Any]]]


@dataclass
class EncodedPrompts:
    """input_ids / attention_mask (N, P) left-padded; pixel_values (M, C, H, W) for the M images
    of all prompts in order, or None; image_counts (N,) images per prompt."""

    input_ids: Tensor
    attention_mask: Tensor
    pixel_values: Tensor | None
    image_counts: Tensor


def _image_list(images: Any, index: int) -> list:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    if hasattr(images, "convert"):  # a single PIL image
        return [images]
    raise TypeError(f"images[{index}]: expected None, a PIL image or a list of them, got "
                    f"{type(images).__name__}")


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    """Number of ``{"type": "image"}`` parts over all messages."""
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image")
    return count


def to_messages(prompt: Prompt, num_images: int, index: int) -> list[dict[str, Any]]:
    """Chat messages for one prompt; errors name the prompt index."""
    if isinstance(prompt, str):
        if num_images == 0:
            return [{"role": "user", "content": prompt}]
        parts = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": prompt}]
        return [{"role": "user", "content": parts}]
    if not isinstance(prompt, list) or not all(isinstance(m, dict) and "role" in m for m in prompt):
        raise TypeError(f"prompts[{index}]: expected a string or a list of chat messages "
                        f"({{'role': ..., 'content': ...}}), got {type(prompt).__name__}")
    found = count_image_parts(prompt)
    if found != num_images:
        raise ValueError(f"prompts[{index}] has {found} image part(s) but {num_images} image(s) "
                         f"were given for it")
    return prompt


def encode_prompts(processing: Any, prompts: Sequence[Prompt], images: Sequence[Any] | None,
                   multimodal: bool) -> EncodedPrompts:
    """Apply the chat template (with generation prompt) and tokenise, left-padded.

    ``processing`` is an HF processor (multimodal) or a tokenizer (text-only model).
    """
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"images has {len(images)} entries but there are {len(prompts)} prompts "
                         f"(give one entry, possibly None, per prompt)")
    per_prompt = [_image_list(images[i] if images is not None else None, i) for i in range(len(prompts))]
    if not multimodal and any(per_prompt):
        first = next(i for i, imgs in enumerate(per_prompt) if imgs)
        raise ValueError(f"images[{first}] given, but the policy's model is text-only")
    tokenizer = getattr(processing, "tokenizer", processing)
    if getattr(processing, "chat_template", None) is None and tokenizer.chat_template is None:
        raise ValueError("the processor/tokenizer has no chat_template; set one before rollouts")
    texts = [processing.apply_chat_template(to_messages(p, len(per_prompt[i]), i),
                                            add_generation_prompt=True, tokenize=False)
             for i, p in enumerate(prompts)]
    flat = [img for imgs in per_prompt for img in imgs]
    tokenizer.padding_side = "left"
    kwargs = dict(padding=True, return_tensors="pt", add_special_tokens=False)
    if multimodal:
        enc = processing(text=texts, images=flat or None, **kwargs)
    else:
        enc = processing(texts, **kwargs)
    return EncodedPrompts(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
        pixel_values=enc.get("pixel_values") if flat else None,
        image_counts=torch.tensor([len(imgs) for imgs in per_prompt], dtype=torch.long),
    )
