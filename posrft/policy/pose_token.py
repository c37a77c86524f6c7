"""Adding the ``<POSE>`` token to a pretrained model of any family.

A released checkpoint (Qwen2.5-VL, InternVL3, ...) has no ``<POSE>`` token. :func:`add_pose_token`
adds it to the tokenizer as one special token and gives it an embedding row (input and output)
equal to the mean of the existing rows, so its first logits and hidden states are those of an
"average" token rather than of random noise. Checkpoints whose embedding matrix already has
spare rows past the tokenizer (Qwen pads its vocabulary to a multiple of 128) reuse the first
spare row instead of growing the matrix; otherwise the embeddings are resized.

:func:`add_pose_token_to_folder` does the same for a model folder and writes a new one,
leaving the source untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posrft.policy.checkpoint import atomic_directory


def add_pose_token(model: nn.Module, processing: Any, token: str = "<POSE>") -> int:
    """Add ``token`` to ``processing``'s tokenizer and a mean-initialised row for it to the
    model's input and output embeddings, in place; returns its id (existing id if present)."""
    tokenizer = getattr(processing, "tokenizer", processing)
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return vocab[token]
    tokenizer.add_special_tokens({"additional_special_tokens": [token]},
                                 replace_extra_special_tokens=False)
    token_id = tokenizer.convert_tokens_to_ids(token)
    if tokenizer.encode(token, add_special_tokens=False) != [token_id]:
        raise RuntimeError(f"the tokenizer still splits {token!r} after adding it")
    embeddings = model.get_input_embeddings()
    if token_id >= embeddings.weight.shape[0]:
        # no spare row: grow by one (transformers keeps tied heads tied and resizes both)
        model.resize_token_embeddings(token_id + 1, mean_resizing=False)
    with torch.no_grad():
        inputs = model.get_input_embeddings().weight
        inputs[token_id] = inputs[:token_id].float().mean(0).to(inputs.dtype)
        output = model.get_output_embeddings()
        if output is not None and output.weight is not inputs:
            output.weight[token_id] = output.weight[:token_id].float().mean(0).to(output.weight.dtype)
            bias = getattr(output, "bias", None)
            if bias is not None:
                bias[token_id] = bias[:token_id].float().mean()
    return token_id


def add_pose_token_to_folder(src: str | os.PathLike, dst: str | os.PathLike,
                             token: str = "<POSE>") -> dict[str, Any]:
    """Load the HF folder ``src`` (its family's processor), add ``token``, write ``dst``
    atomically; returns ``{"path", "token_id", "vocab_rows"}``."""
    from posrft.policy.model import load_hf

    model, processing = load_hf(src)
    token_id = add_pose_token(model, processing, token)
    with atomic_directory(Path(dst), overwrite=False) as tmp:
        model.save_pretrained(tmp)
        processing.save_pretrained(tmp)
    return {"path": str(dst), "token_id": token_id,
            "vocab_rows": int(model.get_input_embeddings().weight.shape[0])}
