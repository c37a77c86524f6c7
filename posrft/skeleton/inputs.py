"""Multi-image chat prompts for SkeletonLLM: T' ``<image>`` parts, then the question.

The rendered frames never pass through the HF image processor (they are tensors with a
gradient), so the text side is built here exactly as :class:`~transformers.LlavaProcessor`
builds it: the chat template writes one ``<image>`` per frame, and each is expanded into
``image_seq_length`` copies (16 for the tiny model: (56 / 14)² patches, CLS dropped).

Two encodings:

* :func:`encode_targets` — prompt + answer + EOS, right-padded, with ``target_mask`` marking the
  answer tokens (and the EOS that ends it): used for the loss and for option scoring.
* :func:`encode_generation_prompts` — prompt with the generation header, left-padded: used for
  greedy captioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor


@dataclass
class TextBatch:
    """input_ids / attention_mask / target_mask ``(N, L)``; target_mask is True on answer tokens."""

    input_ids: Tensor
    attention_mask: Tensor
    target_mask: Tensor


def chat_prompt(processor: Any, question: str, num_images: int) -> str:
    """Chat-template text of one user turn (``num_images`` image parts, then ``question``) with
    the assistant header, ``<image>`` not yet expanded."""
    parts = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": parts}],
                                         add_generation_prompt=True, tokenize=False)


def expand_image_tokens(text: str, image_token: str, image_seq_length: int) -> str:
    """Each ``image_token`` -> ``image_seq_length`` copies (what LlavaProcessor does)."""
    return text.replace(image_token, image_token * image_seq_length)


def image_token_of(processor: Any) -> str:
    return getattr(processor, "image_token", None) or "<image>"


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def encode_prompt_ids(processor: Any, questions: Sequence[str], num_images: int,
                      image_seq_length: int) -> list[list[int]]:
    """Token ids of every expanded prompt (no padding)."""
    tok = _tokenizer(processor)
    token = image_token_of(processor)
    texts = [expand_image_tokens(chat_prompt(processor, q, num_images), token, image_seq_length)
             for q in questions]
    return tok(texts, add_special_tokens=False)["input_ids"]


def encode_targets(processor: Any, questions: Sequence[str], targets: Sequence[str],
                   num_images: int, image_seq_length: int, max_target_tokens: int) -> TextBatch:
    """Right-padded prompt + target + EOS rows; targets longer than ``max_target_tokens`` are
    cut (the EOS is then dropped too: a cut rationale has not ended)."""
    if len(questions) != len(targets):
        raise ValueError(f"{len(questions)} questions but {len(targets)} targets")
    tok = _tokenizer(processor)
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token (needed to end answers)")
    prompts = encode_prompt_ids(processor, questions, num_images, image_seq_length)
    answers = tok(list(targets), add_special_tokens=False)["input_ids"]
    rows, masks = [], []
    for p, a in zip(prompts, answers):
        a = a[:max_target_tokens] if len(a) >= max_target_tokens else a + [tok.eos_token_id]
        rows.append(p + a)
        masks.append([False] * len(p) + [True] * len(a))
    length = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    att = torch.zeros((len(rows), length), dtype=torch.long)
    tgt = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
        tgt[i, : len(r)] = torch.tensor(m)
    return TextBatch(ids, att, tgt)


def encode_generation_prompts(processor: Any, questions: Sequence[str], num_images: int,
                              image_seq_length: int) -> tuple[Tensor, Tensor]:
    """Left-padded ``(input_ids, attention_mask)`` of the prompts, for ``generate``."""
    tok = _tokenizer(processor)
    prompts = encode_prompt_ids(processor, questions, num_images, image_seq_length)
    length = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    att = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(p)
        att[i, length - len(p):] = 1
    return ids, att


def encode_answers(processor: Any, answers: Sequence[str], max_target_tokens: int) -> tuple[Tensor, Tensor]:
    """Right-padded ``(ids, mask)`` of answers + EOS, cut like :func:`encode_targets` (the
    answer half of its rows: prompt and answer are tokenized apart there too)."""
    tok = _tokenizer(processor)
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token (needed to end answers)")
    rows = [a[:max_target_tokens] if len(a) >= max_target_tokens else a + [tok.eos_token_id]
            for a in tok(list(answers), add_special_tokens=False)["input_ids"]]
    length = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask
