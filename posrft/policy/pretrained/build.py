"""``posrft model init-pretrained OUT --text smollm2|PATH [--vision dinov2-small|PATH|none]``.

One code path for every start:

1. resolve the bases: a built-in name is converted once from its registry package and cached
   (:mod:`posrft.policy.pretrained.sources`), a path is a local HF folder the user has;
2. load them: a causal LM (+ tokenizer), or an image-text model (+ processor) when ``--text``
   is already one (then ``--vision`` must be ``none``);
3. with ``--vision``: compose a LLaVA model (vision tower + fresh projector + the causal LM,
   :func:`posrft.policy.pretrained.compose.compose_llava`);
4. add ``<POSE>`` (resize embeddings), make sure the chat template renders posrft's prompts,
   and write the policy folder through :meth:`PosePolicy.save_pretrained` (atomic): HF weights
   (safetensors) + tokenizer/processor + a seeded pose head + ``posrft_config.json``.

The folder loads with ``AutoModelForCausalLM`` / ``AutoModelForImageTextToText`` +
``AutoProcessor`` and with :meth:`PosePolicy.from_pretrained`; no network is used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from posrft.policy.image_tokens import text_embedding_norm
from posrft.policy.pretrained.compose import (
    POSE_TOKEN,
    add_special_tokens,
    chatml_template,
    compose_llava,
    default_system_prefix,
    is_chatml,
)
from posrft.policy.pretrained.sources import resolve_text, resolve_vision

#: default images of a composed model: 224 px (16×16 DINOv2 patches) pixel-shuffled 4×4 →
#: 16 LM tokens per image; benchmarks/probe_vision.py measures what 224/112/56 px and pooling
#: cost in pose accuracy (224 px pooled to 16 tokens reads the pose best of those tried)
DEFAULT_IMAGE_SIZE = 224
DEFAULT_POOL = 4


def _load_text(path: Path) -> tuple[nn.Module, Any, bool]:
    """(model, tokenizer or processor, is_image_text) of a local HF folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = AutoConfig.from_pretrained(path)
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
        return model, AutoProcessor.from_pretrained(path), True
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except ValueError as err:
        raise ValueError(f"--text {path}: not a causal LM or image-text model that transformers "
                         f"knows ({config.model_type}): {err}") from err
    return model, AutoTokenizer.from_pretrained(path), False


def _load_vision(path: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32)
    if getattr(config, "patch_size", None) is None:
        raise ValueError(f"--vision {path}: {config.model_type} is not a ViT-style vision tower")
    return model.eval()


def _ensure_text_template(tokenizer: Any, where: Path) -> None:
    """posrft's prompts are message lists whose content may be a list of parts: a ChatML model
    gets the multi-part ChatML template (its default system turn kept); another model keeps its
    own template, which must exist."""
    if is_chatml(tokenizer):
        tokenizer.chat_template = chatml_template(default_system_prefix(tokenizer))
    elif not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"--text {where}: the tokenizer has no chat template and is not ChatML; "
                         f"set tokenizer.chat_template in that folder first")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per part (shared tensors counted once)."""
    def count(module: nn.Module | None) -> int:
        if module is None:
            return 0
        return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())

    inner = getattr(model, "model", model)
    parts = {"total": count(model)}
    if hasattr(inner, "vision_tower"):
        parts.update(language_model=count(inner.language_model),
                     vision_tower=count(inner.vision_tower),
                     projector=count(inner.multi_modal_projector))
    return parts


def _image_token_norm(value: float | str | None, model: nn.Module, composed: bool,
                      image_text: bool) -> float | None:
    """The ``image_token_norm`` a start is saved with (:func:`init_pretrained`)."""
    if isinstance(value, str):
        if value != "text":
            raise ValueError(f"image_token_norm: expected 'text', a number or None, got {value!r}")
        # only a fresh projector is pinned: a trained one's scale is part of the model
        return round(text_embedding_norm(model), 4) if composed else None
    if value is not None and not (composed or image_text):
        raise ValueError(f"image_token_norm={value}: a text-only start has no image tokens")
    return None if value is None else float(value)


def init_pretrained(out_dir: str | os.PathLike, text: str | os.PathLike = "smollm2",
                    vision: str | os.PathLike | None = "none", *,
                    image_size: int = DEFAULT_IMAGE_SIZE, pool: int = DEFAULT_POOL, seed: int = 0,
                    vision_feature_layer: int = -1,
                    image_token_norm: float | str | None = None,
                    head_reads_image: bool = False) -> dict[str, Any]:
    """Write a pretrained pose-policy folder to ``out_dir`` (module docstring); a summary dict.

    ``text``: ``"smollm2"`` or a local HF folder (causal LM or image-text model);
    ``vision``: ``"none"``, ``"dinov2-small"`` or a local HF vision-tower folder;
    ``image_size``: pixels per side of a composed model's images; ``pool``: f×f patches per LM
    token (1: plain LLaVA); ``seed``: projector, new embedding rows and pose head;
    ``image_token_norm``: pin each image token the projector emits to this L2 norm
    (:mod:`posrft.policy.image_tokens`): ``None`` (default) unpinned, ``"text"`` a composed
    model's fresh projector at the language model's mean embedding-row norm (an image-text
    model given as ``text`` keeps its trained projector's scale), a number that norm. Not the
    default: the pin stops the norm growth SFT causes but measured no gain in accuracy
    (docs/pretrained.md, "The image-token norm"). ``head_reads_image``: the pose head also
    attends to the image tokens (:mod:`posrft.policy.image_reader`; multimodal starts only).
    """
    from posrft.policy.config import PosePolicyConfig
    from posrft.policy.model import PosePolicy

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    t0 = time.perf_counter()
    text_dir, vision_dir = resolve_text(text), resolve_vision(vision)
    t_resolve = time.perf_counter() - t0
    model, processing, image_text = _load_text(text_dir)
    if image_text and vision_dir is not None:
        raise ValueError(f"--text {text} is already an image-text model; use --vision none")
    pin = _image_token_norm(image_token_norm, model, composed=vision_dir is not None,
                            image_text=image_text)
    if vision_dir is not None:
        model, processing = compose_llava(model, processing, _load_vision(vision_dir),
                                          image_size=image_size, pool=pool, seed=seed,
                                          vision_feature_layer=vision_feature_layer)
    elif not image_text:
        _ensure_text_template(processing, text_dir)
    tokenizer = getattr(processing, "tokenizer", processing)
    add_special_tokens(model, tokenizer, [POSE_TOKEN], seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    config = PosePolicyConfig(head_seed=seed, image_token_norm=pin, head_reads_image=head_reads_image)
    policy = PosePolicy(model.eval(), processing, config,
                        source=str(text_dir))
    policy.save_pretrained(out)
    return {
        "out": str(out), "text": str(text_dir), "vision": str(vision_dir) if vision_dir else None,
        "multimodal": policy.multimodal, "parameters": count_parameters(model),
        "pose_head_parameters": sum(p.numel() for p in policy.pose_head.parameters()),
        "vocab": len(tokenizer), "pose_token_id": policy.pose_token_id,
        "image_token_norm": config.image_token_norm, "head_reads_image": head_reads_image,
        "image_tokens": (image_size // model.config.vision_config.patch_size // pool) ** 2
        if vision_dir is not None else None,
        "resolve_s": round(t_resolve, 2), "total_s": round(time.perf_counter() - t0, 2),
    }
