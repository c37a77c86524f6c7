"""Prompt formatting: chat messages (+ images) → left-padded model inputs of any family.

A prompt is either a string (one user turn) or a list of chat messages
``[{"role": ..., "content": str | [{"type": "image"}, {"type": "text", "text": ...}, ...]}]``.
Images are given per prompt (``None``, one PIL image or a list, any number per prompt: a
SkeletonLLM clip is T′ frames of one prompt); for a string prompt they are placed before the
text as ``{"type": "image"}`` parts, for a message list the number of image parts must equal the
number of images given.

Each prompt goes through the processor on its own (a batch of one, so the rows every sample
owns in each extra input are known exactly, whatever the family's layout), then the samples are
joined: ``input_ids``/``attention_mask`` left-padded, the extra inputs by
:meth:`MultimodalInputs.concat`. For a family without a chat template (PaliGemma) the prompt is
its text with one image placeholder per image in front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

# ChatML; a message's content is a string or a list of {"type": "image"} / {"type": "text"} parts,
# any number of images per message, each rendered as one <image> line (the tiny models' template,
# and the body of the one init-pretrained writes).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

from posrft.policy.families import ModelFamily, family_for_processing
from posrft.policy.mm_inputs import MultimodalInputs

Prompt = Union[str, list[dict[str, Any]]]


@dataclass
class EncodedPrompts:
    """input_ids / attention_mask (N, P) left-padded; mm_inputs: every other model input the
    processor returned (pixels, grids, token types, ...); image_counts (N,) images per prompt."""

    input_ids: Tensor
    attention_mask: Tensor
    mm_inputs: MultimodalInputs
    image_counts: Tensor

    @property
    def pixel_values(self) -> Tensor | None:
        return self.mm_inputs.get("pixel_values")


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


def _plain_text(messages: list[dict[str, Any]]) -> str:
    """Text parts of all messages, in order (families without a chat template)."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(t for t in texts if t)


def prompt_text(processing: Any, family: ModelFamily, prompt: Prompt, num_images: int,
                index: int) -> str:
    """The text one prompt becomes before tokenisation (chat template with the generation
    header, or the family's plain format), image placeholders not yet expanded."""
    messages = to_messages(prompt, num_images, index)
    if family.chat_template:
        return processing.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    token = getattr(processing, "image_token", None) or "<image>"
    return token * num_images + _plain_text(messages)


def _check_template(processing: Any, family: ModelFamily) -> None:
    if not family.chat_template:
        if family.needs_bos and getattr(getattr(processing, "tokenizer", processing), "bos_token", None) is None:
            raise ValueError(f"{family.title} prompts start with a BOS token, but the tokenizer has "
                             f"none: set tokenizer.bos_token (its processor places BOS after the "
                             f"image tokens)")
        return
    tokenizer = getattr(processing, "tokenizer", processing)
    if getattr(processing, "chat_template", None) is None and tokenizer.chat_template is None:
        raise ValueError("the processor/tokenizer has no chat_template; set one before rollouts")


def _left_pad(rows: Sequence[Tensor], value: int) -> Tensor:
    width = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, width - r.shape[0]:] = r
    return out


def encode_prompts(processing: Any, prompts: Sequence[Prompt], images: Sequence[Any] | None,
                   multimodal: bool, family: ModelFamily | None = None) -> EncodedPrompts:
    """Apply the chat template (with generation prompt) and tokenise, left-padded.

    ``processing`` is an HF processor (multimodal) or a tokenizer (text-only model); ``family``
    (default: the one whose processor class ``processing`` is) says how to format and which
    extra inputs to keep.
    """
    if family is None:
        family = family_for_processing(processing, multimodal)
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"images has {len(images)} entries but there are {len(prompts)} prompts "
                         f"(give one entry, possibly None, per prompt)")
    per_prompt = [_image_list(images[i] if images is not None else None, i) for i in range(len(prompts))]
    if not multimodal and any(per_prompt):
        first = next(i for i, imgs in enumerate(per_prompt) if imgs)
        raise ValueError(f"images[{first}] given, but the policy's model is text-only")
    _check_template(processing, family)
    tokenizer = getattr(processing, "tokenizer", processing)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, masks, extras = [], [], []
    for i, prompt in enumerate(prompts):
        text = prompt_text(processing, family, prompt, len(per_prompt[i]), i)
        if multimodal:
            if not per_prompt[i] and family.image_required:
                raise ValueError(f"prompts[{i}] has no image, but {family.title} takes at least "
                                 f"one image per prompt")
            enc = processing(text=[text], images=[per_prompt[i]] if per_prompt[i] else None,
                             return_tensors="pt", add_special_tokens=False)
            extras.append(MultimodalInputs.from_sample(enc, family.inputs, family.title,
                                                      family.ignored_outputs, len(per_prompt[i])))
        else:
            enc = processing([text], return_tensors="pt", add_special_tokens=False)
            extras.append(MultimodalInputs(1))
        ids.append(enc["input_ids"][0])
        masks.append(enc["attention_mask"][0] if "attention_mask" in enc
                     else torch.ones_like(enc["input_ids"][0]))
    input_ids = _left_pad(ids, pad_id)
    return EncodedPrompts(
        input_ids=input_ids, attention_mask=_left_pad(masks, 0),
        mm_inputs=MultimodalInputs.concat(extras, input_ids.shape[1]),
        image_counts=torch.tensor([len(imgs) for imgs in per_prompt], dtype=torch.long),
    )
