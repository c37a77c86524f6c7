"""Tiny random models of every supported MLLM family, built offline (tests, smoke runs).

``build_tiny_family(name, out_dir)`` writes an HF model folder of family ``name`` (see
:mod:`posrft.policy.families`): the family's own ``*ForConditionalGeneration`` class with a
2-layer text model (hidden 32) and a 2-layer vision tower on small images, the family's real
processor class with its PIL image processor, and the byte-level BPE tokenizer of
:mod:`posrft.policy.tiny` extended with the family's special tokens (image placeholder, BOS,
``<POSE>``) under the attribute names the processor reads (``boi_token``, ``image_token``, ...).
Each family's chat template writes its image placeholder the way the real checkpoints do.

The folder loads with :meth:`PosePolicy.from_pretrained` like a real checkpoint of the family;
the weights depend only on ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from posrft.policy.checkpoint import atomic_directory
from posrft.policy.families import get_family
from posrft.policy.pose_token import add_pose_token
from posrft.policy.tiny import POSE_TOKEN, make_tokenizer

#: small text-model settings shared by every family (hidden 32, 2 layers, head_dim 8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2)
#: vision towers: 2 layers, hidden 32
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _chatml(image: str, bos: str = "") -> str:
    """ChatML with ``image`` written for every image part (Qwen, InternVL, LLaVA-NeXT/OV)."""
    return (
        bos + "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image +
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


# Gemma's turn format: <bos><start_of_turn>user ... <end_of_turn>, the assistant is "model".
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# Idefics3 / SmolVLM: "User:<image>question<end_of_utterance>\nAssistant:"
IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _qwen_tokens() -> dict[str, Any]:
    return dict(extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                       "vision_start_token": "<|vision_start|>",
                       "vision_end_token": "<|vision_end|>"})


def _qwen_ids(tok: Any) -> dict[str, int]:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"),
                vision_end_token_id=ids("<|vision_end|>"))


def _text(tok: Any, **extra: Any) -> dict[str, Any]:
    return dict(TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                tie_word_embeddings=False, **extra)


def _qwen_image_processor(patch: int) -> Any:
    from transformers import Qwen2VLImageProcessorPil

    # between 2 x 2 and 6 x 6 patches (1 to 9 tokens after the 2 x 2 merge), so that images of
    # different sizes get different grids, as with real checkpoints
    return Qwen2VLImageProcessorPil(size={"shortest_edge": (2 * patch) ** 2, "longest_edge": (6 * patch) ** 2},
                                    patch_size=patch, merge_size=2, temporal_patch_size=2)


# ----------------------------------------------------------------------------- the families
def _qwen2_vl(tok: Any) -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(
        text_config=_text(tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        **_qwen_ids(tok))
    return Qwen2VLForConditionalGeneration(config), _qwen_image_processor(14)


def _qwen2_5_vl(tok: Any) -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=_text(tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                           out_hidden_size=32, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        **_qwen_ids(tok))
    return Qwen2_5_VLForConditionalGeneration(config), _qwen_image_processor(14)


def _qwen3_vl(tok: Any) -> tuple[Any, Any]:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(
        text_config=_text(tok, head_dim=8, rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
            "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                           out_hidden_size=32, patch_size=16, spatial_merge_size=2,
                           temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0]),
        **_qwen_ids(tok))
    return Qwen3VLForConditionalGeneration(config), _qwen_image_processor(16)


def _gemma3(tok: Any) -> tuple[Any, Any]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil

    ids = tok.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=_text(tok, head_dim=8, query_pre_attn_scalar=8, sliding_window=64,
                          layer_types=["sliding_attention", "full_attention"]),
        vision_config=dict(VISION, image_size=56, patch_size=14, model_type="siglip_vision_model"),
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
        tie_word_embeddings=False)
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises its image projection to zero, so a fresh model ignores its images;
    # a released one has trained weights there
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.1)
    return model, Gemma3ImageProcessorPil(size={"height": 56, "width": 56})


def _idefics3(tok: Any, smolvlm: bool = False) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessorPil,
    )

    cfg_cls, model_cls, ip_cls = ((SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil)
                                  if smolvlm else (Idefics3Config, Idefics3ForConditionalGeneration,
                                                   Idefics3ImageProcessorPil))
    config = cfg_cls(
        text_config=dict(_text(tok), model_type="llama"),
        vision_config=dict(VISION, image_size=56, patch_size=14),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
        tie_word_embeddings=False)
    # 112 px longest edge split into 56 px tiles: 2 x 2 tiles + the global view per image
    ip = ip_cls(size={"longest_edge": 112}, max_image_size={"longest_edge": 56},
                do_image_splitting=True)
    return model_cls(config), ip


def _paligemma(tok: Any) -> tuple[Any, Any]:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipImageProcessorPil

    config = PaliGemmaConfig(
        text_config=dict(_text(tok, head_dim=8), model_type="gemma"),
        vision_config=dict(VISION, image_size=28, patch_size=14, model_type="siglip_vision_model",
                           projection_dim=32),
        image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32,
        tie_word_embeddings=False)
    ip = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    ip.image_seq_length = 4  # (28 / 14)^2 patch tokens per image
    return PaliGemmaForConditionalGeneration(config), ip


def _clip(image_size: int) -> dict[str, Any]:
    return dict(VISION, image_size=image_size, patch_size=14, model_type="clip_vision_model",
                projection_dim=32)


def _llava_next(tok: Any) -> tuple[Any, Any]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil

    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    config = LlavaNextConfig(
        text_config=dict(_text(tok), model_type="qwen2"), vision_config=_clip(28),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        tie_word_embeddings=False)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                    image_grid_pinpoints=pinpoints)
    return LlavaNextForConditionalGeneration(config), ip


def _llava_onevision(tok: Any) -> tuple[Any, Any]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    config = LlavaOnevisionConfig(
        text_config=dict(_text(tok), model_type="qwen2"),
        vision_config=dict(VISION, image_size=28, patch_size=14, model_type="siglip_vision_model"),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False)
    ip = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                         image_grid_pinpoints=pinpoints)
    return LlavaOnevisionForConditionalGeneration(config), ip


def _internvl(tok: Any) -> tuple[Any, Any]:
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    config = InternVLConfig(
        text_config=dict(_text(tok), model_type="qwen2"),
        vision_config=dict(VISION, image_size=[28, 28], patch_size=[14, 14]),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=1,
        downsample_ratio=0.5, tie_word_embeddings=False)
    # tiles of 28 px: a 56 px image becomes 2 x 2 tiles + a thumbnail
    ip = GotOcr2ImageProcessorPil(size={"height": 28, "width": 28}, crop_to_patches=True,
                                  min_patches=1, max_patches=4)
    return InternVLForConditionalGeneration(config), ip


#: name -> (model + image processor builder, tokenizer extras, chat template, processor kwargs)
_BUILDERS: dict[str, tuple[Callable[[Any], tuple[Any, Any]], dict[str, Any], str | None, dict[str, Any]]] = {
    "qwen2_vl": (_qwen2_vl, _qwen_tokens(), _chatml("<|vision_start|><|image_pad|><|vision_end|>"), {}),
    "qwen2_5_vl": (_qwen2_5_vl, _qwen_tokens(), _chatml("<|vision_start|><|image_pad|><|vision_end|>"), {}),
    "qwen3_vl": (_qwen3_vl, _qwen_tokens(), _chatml("<|vision_start|><|image_pad|><|vision_end|>"), {}),
    "gemma3": (_gemma3, dict(bos="<bos>", extra={"boi_token": "<start_of_image>",
                                                  "eoi_token": "<end_of_image>",
                                                  "image_token": "<image_soft_token>"}),
               GEMMA_TEMPLATE, {"image_seq_length": 4}),
    "idefics3": (_idefics3, dict(extra={"image_token": "<image>"},
                                 more=["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
                                 + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]),
                 IDEFICS_TEMPLATE, {"image_seq_len": 4}),
    "smolvlm": (lambda tok: _idefics3(tok, smolvlm=True),
                dict(extra={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                            "global_image_token": "<global-img>",
                            "end_of_utterance_token": "<end_of_utterance>", "video_token": "<video>"},
                     more=[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]),
                IDEFICS_TEMPLATE, {"image_seq_len": 4}),
    "paligemma": (_paligemma, dict(bos="<bos>", extra={"image_token": "<image>"}), None, {}),
    "llava_next": (_llava_next, dict(extra={"image_token": "<image>"}), _chatml("<image>\n"),
                   {"patch_size": 14, "vision_feature_select_strategy": "default",
                    "num_additional_image_tokens": 1}),
    "llava_onevision": (_llava_onevision, dict(extra={"image_token": "<image>", "video_token": "<video>"}),
                        _chatml("<image>\n"),
                        {"num_image_tokens": 4, "vision_feature_select_strategy": "full"}),
    "internvl": (_internvl, dict(extra={"start_image_token": "<img>", "end_image_token": "</img>",
                                        "context_image_token": "<IMG_CONTEXT>",
                                        "video_token": "<video>"}),
                 _chatml("<IMG_CONTEXT>\n"), {"image_seq_length": 1}),
}

TINY_FAMILIES = tuple(sorted(_BUILDERS))


def build_tiny_family(name: str, out_dir: str | os.PathLike, seed: int = 0,
                      pose_token: bool = True) -> Path:
    """Write a tiny random model of family ``name`` (+ its processor) to ``out_dir``.

    ``out_dir`` must not exist or be empty. The folder is an ordinary HF folder of that family
    (``config.json``, safetensors weights, processor files). ``pose_token``: add ``<POSE>`` with
    :func:`~posrft.policy.pose_token.add_pose_token` (off: the folder is like a released
    checkpoint, which has none).
    """
    if name not in _BUILDERS:
        raise ValueError(f"no tiny builder for family {name!r}; choose one of {list(TINY_FAMILIES)} "
                         f"(the LLaVA tiny model is posrft.policy.tiny.build_tiny_model)")
    from transformers import GenerationConfig

    family = get_family(name)
    family.check_requirements()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    build, tokens, template, proc_kwargs = _BUILDERS[name]
    tok = make_tokenizer(bos=tokens.get("bos"), extra_special_tokens=tokens.get("extra"),
                         more_special_tokens=tokens.get("more", ()), chat_template=template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, image_processor = build(tok)
    processor = family.processor_class()(image_processor=image_processor, tokenizer=tok,
                                         chat_template=template, **proc_kwargs)
    # processors may add tokens (PaliGemma's <loc>/<seg> tokens): embeddings must cover them
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            model.resize_token_embeddings(len(tok), mean_resizing=False)
    eos = [tok.eos_token_id, tok.pad_token_id]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id)
    if pose_token:
        add_pose_token(model, processor, POSE_TOKEN)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out
