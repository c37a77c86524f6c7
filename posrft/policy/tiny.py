"""Build a tiny, random, LLaVA-architecture image-text model fully offline.

What gets written to ``out_dir`` (all through ``save_pretrained``), loadable with
``AutoModelForImageTextToText.from_pretrained`` / ``AutoProcessor.from_pretrained`` and no network:

* ``LlavaForConditionalGeneration``: a CLIP vision tower (56 px images, 14 px patches → 16 patch
  tokens after dropping CLS) + 2-layer GELU projector + a Qwen2 decoder.
* a byte-level BPE tokenizer trained here with ``tokenizers`` on the built-in template corpus
  (:mod:`posrft.policy.tiny_corpus`), using Qwen2's pre-tokeniser, saved as ``Qwen2Tokenizer``;
  special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos), ``<image>``,
  ``<POSE>``; a ChatML chat template that accepts several images per message.
* ``CLIPImageProcessor`` (PIL backend, 56 px) and ``LlavaProcessor``, which expands each
  ``<image>`` into 16 image tokens.

Determinism: the tokenizer depends on nothing but the corpus (same for every seed); the weights
depend only on ``seed`` (drawn under a forked torch RNG, so the caller's RNG is untouched).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from posrft.policy.checkpoint import atomic_directory
from posrft.policy.prompts import CHATML_TEMPLATE as CHAT_TEMPLATE
from posrft.policy.tiny_corpus import build_corpus

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_TOKEN = "<image>"
POSE_TOKEN = "<POSE>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, IMAGE_TOKEN, POSE_TOKEN)


@functools.lru_cache(maxsize=4)
def _trained_bpe(vocab_size: int, special_tokens: tuple[str, ...] = SPECIAL_TOKENS
                 ) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(vocab, merges) of a byte-level BPE trained on the built-in corpus with
    ``special_tokens`` first (cached per process)."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(build_corpus(), trainer)
    model_json = json.loads(backend.to_str())["model"]
    merges = tuple(tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"])
    return model_json["vocab"], merges


def make_tokenizer(vocab_size: int = 4096, *, bos: str | None = None,
                   extra_special_tokens: Mapping[str, str] | None = None,
                   more_special_tokens: Sequence[str] = (),
                   chat_template: str | None = CHAT_TEMPLATE) -> Qwen2Tokenizer:
    """The tiny BPE as a ``Qwen2Tokenizer`` with the given special tokens and *without*
    ``<POSE>`` (like a released checkpoint; :func:`posrft.policy.pose_token.add_pose_token`
    adds it).

    ``extra_special_tokens`` maps attribute names to tokens (``{"boi_token": "<start_of_image>"}``
    makes ``tokenizer.boi_token`` / ``boi_token_id``, which family processors read); they and
    ``more_special_tokens`` are added after the trained vocabulary. ``bos``: a BOS token (Gemma
    and PaliGemma prompts start with one).
    """
    vocab, merges = _trained_bpe(vocab_size, (PAD_TOKEN, IM_START, IM_END))
    kwargs: dict[str, Any] = {}
    if bos is not None:
        kwargs["bos_token"] = bos
    if extra_special_tokens:
        kwargs["extra_special_tokens"] = dict(extra_special_tokens)
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token=IM_END,
        pad_token=PAD_TOKEN, padding_side="left",  # decoder-only generation pads on the left
        **kwargs,
    )
    extra = [IM_START, *more_special_tokens]
    tokenizer.add_special_tokens({"additional_special_tokens": extra},
                                 replace_extra_special_tokens=False)
    tokenizer.chat_template = chat_template
    return tokenizer


def train_tokenizer(vocab_size: int = 4096) -> Qwen2Tokenizer:
    """Train a byte-level BPE on the built-in corpus and wrap it as a ``Qwen2Tokenizer``.

    The corpus is small, so training stops when no pair occurs twice (≈2.3k tokens for the
    default corpus) if that comes before ``vocab_size``.
    """
    vocab, merges = _trained_bpe(vocab_size)
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token=IM_END,
        pad_token=PAD_TOKEN, extra_special_tokens=[IM_START, IMAGE_TOKEN, POSE_TOKEN],
        padding_side="left",  # decoder-only generation pads on the left; saved in the config
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, *, vocab_size: int = 4096,
                     hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                     num_kv_heads: int = 2, intermediate_size: int = 384,
                     vision_hidden_size: int = 64, vision_layers: int = 2,
                     image_size: int = 56, patch_size: int = 14,
                     tie_word_embeddings: bool = False) -> Path:
    """Write a tiny random LLaVA model + processor to ``out_dir`` and return its path.
    ``tie_word_embeddings``: share the LM head with the input embeddings (as SmolLM2 does).

    ``out_dir`` must not exist or be empty; it is filled atomically (built in a sibling temp
    folder, then renamed). Same ``seed`` → byte-identical files.
    """
    out = _check_out_dir(out_dir)
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")

    tokenizer = train_tokenizer(vocab_size)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
    )
    text_config = _text_config(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads,
                               intermediate_size, tie_word_embeddings)
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=4 * vision_hidden_size,
        num_hidden_layers=vision_layers, num_attention_heads=max(1, vision_hidden_size // 32),
        image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden_size,
    )
    config = LlavaConfig(
        vision_config=vision_config, text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        tie_word_embeddings=tie_word_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def build_tiny_text_model(out_dir: str | os.PathLike, seed: int = 0, *, vocab_size: int = 4096,
                          hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                          num_kv_heads: int = 2, intermediate_size: int = 384,
                          tie_word_embeddings: bool = False) -> Path:
    """Text-only sibling of :func:`build_tiny_model`: a ``Qwen2ForCausalLM`` with the same
    tokenizer (``<POSE>`` included) and chat template, loadable via ``AutoModelForCausalLM``."""
    out = _check_out_dir(out_dir)
    tokenizer = train_tokenizer(vocab_size)
    config = _text_config(tokenizer, hidden_size, num_layers, num_heads, num_kv_heads,
                          intermediate_size, tie_word_embeddings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = _generation_config(tokenizer)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def _check_out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    return out


def _text_config(tokenizer: Qwen2Tokenizer, hidden_size: int, num_layers: int, num_heads: int,
                 num_kv_heads: int, intermediate_size: int,
                 tie_word_embeddings: bool = False) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, max_position_embeddings=2048,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def _generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    # <|endoftext|> also ends a completion, as in Qwen2 checkpoints.
    return GenerationConfig(eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
                            pad_token_id=tokenizer.pad_token_id)
