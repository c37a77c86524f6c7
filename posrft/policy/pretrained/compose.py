"""Pieces that turn pretrained bases into a pose policy's HF folder.

* :func:`add_special_tokens`: ``<POSE>`` (and ``<image>``) as single special tokens, embeddings
  resized (new rows drawn from the old rows' mean and covariance, transformers' default, under
  a seeded RNG so the build is reproducible);
* :func:`chatml_template`: a ChatML template whose messages may be strings or lists of
  ``{"type": "image"}`` / ``{"type": "text"}`` parts (posrft's datasets use lists), keeping the
  base model's default system turn (found by rendering its own template);
* :func:`vision_image_processor`: resize (shortest edge) + centre crop to R px + ImageNet
  normalisation, PIL backend (no torchvision);
* :func:`compose_llava`: a LLaVA-architecture model (vision tower → fresh projector → causal
  LM), seeded. ``pool=1``: ``LlavaForConditionalGeneration`` (2-layer GELU projector, one LM token
  per patch). ``pool=f>1``: ``AyaVisionForConditionalGeneration``, the same layout whose
  projector first pixel-shuffles each f×f block of patches into one token (concatenated
  features → LayerNorm → SwiGLU MLP), so a 224-px DINOv2 grid of 16×16 patches becomes 4×4 = 16
  LM tokens with f = 4. Its first layer starts as "average the f² patches, then project"
  (every block of columns the same matrix / f²): the probe (benchmarks/probe_vision.py) finds
  average-pooled 224-px features read the pose better than 112-px or 56-px inputs at the same
  token count, and training may move away from the average. Either way the projector's output
  layer is scaled so that, on a mid-grey picture, image tokens have the RMS of the LM's token
  embeddings (a default initialisation is far from the scale the frozen LM was trained on).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from posrft.policy.prompts import CHATML_TEMPLATE

IMAGE_TOKEN = "<image>"
POSE_TOKEN = "<POSE>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def add_special_tokens(model: nn.Module, tokenizer: Any, tokens: list[str],
                       seed: int = 0) -> list[int]:
    """Add the missing ``tokens`` as special tokens, resize the model's embeddings; their ids."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing],
                             special_tokens=True)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    for token, i in zip(tokens, ids):
        if tokenizer.encode(token, add_special_tokens=False) != [i]:
            raise ValueError(f"{token!r} does not encode as one token after adding it")
    return ids


def is_chatml(tokenizer: Any) -> bool:
    vocab = tokenizer.get_vocab()
    return IM_START in vocab and IM_END in vocab


def default_system_prefix(tokenizer: Any) -> str:
    """What the tokenizer's own template renders before the first user turn when no system
    message is given (SmolLM2: its default system turn); '' without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    marker = "\u2063posrft-probe\u2063"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    head = text.split(marker)[0]
    start = head.rfind(f"{IM_START}user")
    return head[:start] if start > 0 else ""


def chatml_template(system_prefix: str = "") -> str:
    """ChatML for string or multi-part (image/text) messages; ``system_prefix`` is rendered
    before the first message unless that message is a system turn."""
    if not system_prefix:
        return CHATML_TEMPLATE
    literal = json.dumps(system_prefix)  # a JSON string is a valid Jinja string literal
    return ("{% if messages[0]['role'] != 'system' %}{{ " + literal + " }}{% endif %}"
            + CHATML_TEMPLATE)


def vision_image_processor(size: int, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD):
    """Resize the shortest edge to ``size``, centre-crop ``size``², rescale, normalise (PIL)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(mean), image_std=list(std), resample=3, do_convert_rgb=True)


def _patch_size(vision_config: Any) -> int:
    patch = getattr(vision_config, "patch_size", None)
    if not isinstance(patch, int):
        raise ValueError(f"vision tower config {type(vision_config).__name__} has no integer "
                         f"patch_size; only ViT-style towers (DINOv2, CLIP, SigLIP) are supported")
    return patch


def compose_llava(text_model: nn.Module, tokenizer: Any, vision_model: nn.Module, *,
                  image_size: int, pool: int = 1, seed: int = 0, vision_feature_layer: int = -1,
                  image_mean: tuple = IMAGENET_MEAN, image_std: tuple = IMAGENET_STD,
                  ) -> tuple[nn.Module, Any]:
    """(image-text model, ``LlavaProcessor``) around the given modules (module docstring).

    ``text_model``: a ``*ForCausalLM`` (its decoder and LM head are reused, not copied);
    ``vision_model``: a ViT-style ``PreTrainedModel`` with a CLS token (dropped:
    ``vision_feature_select_strategy="default"``); images are ``image_size``² px →
    (image_size / patch / pool)² LM tokens.
    """
    from transformers import LlavaProcessor

    patch = _patch_size(vision_model.config)
    if image_size % patch or (image_size // patch) % pool:
        raise ValueError(f"image_size {image_size} must be a multiple of patch size {patch} × "
                         f"pool {pool} (= {patch * pool})")
    if not is_chatml(tokenizer):
        raise ValueError("composing an image-text model needs a ChatML tokenizer "
                         f"({IM_START}/{IM_END}); give a ChatML text model or an image-text folder")
    add_special_tokens(text_model, tokenizer, [IMAGE_TOKEN], seed)
    template = chatml_template(default_system_prefix(tokenizer))
    tokenizer.chat_template = template
    config = _config(text_model.config, vision_model.config, pool,
                     image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                     vision_feature_select_strategy="default",
                     vision_feature_layer=vision_feature_layer,
                     tie_word_embeddings=text_model.config.tie_word_embeddings)
    model_class = _model_class(pool)
    with torch.device("meta"):
        model = model_class(config)
    model.model.language_model = text_model.model
    model.model.vision_tower = vision_model
    model.lm_head = text_model.lm_head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = type(model.model.multi_modal_projector)(config)
        if pool > 1:
            _average_init(projector.linear_1, pool * pool)
    model.model.multi_modal_projector = projector
    model.tie_weights()
    model.generation_config = text_model.generation_config
    processor = LlavaProcessor(
        image_processor=vision_image_processor(image_size, image_mean, image_std),
        tokenizer=tokenizer, patch_size=patch * pool, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=template, image_token=IMAGE_TOKEN)
    _match_embedding_scale(model, processor, image_size)
    return model.eval(), processor


def _config(text_config: Any, vision_config: Any, pool: int, **kwargs: Any) -> Any:
    if pool == 1:
        from transformers import LlavaConfig

        return LlavaConfig(vision_config=vision_config, text_config=text_config,
                           projector_hidden_act="gelu", **kwargs)
    from transformers import AyaVisionConfig

    # AyaVision multiplies the logits by text_config.logit_scale (a Cohere field): 1 = unchanged
    text_config.logit_scale = 1.0
    return AyaVisionConfig(vision_config=vision_config, text_config=text_config,
                           downsample_factor=pool, **kwargs)


def _model_class(pool: int) -> type:
    from transformers import AyaVisionForConditionalGeneration, LlavaForConditionalGeneration

    return LlavaForConditionalGeneration if pool == 1 else AyaVisionForConditionalGeneration


@torch.no_grad()
def _average_init(linear: nn.Linear, blocks: int) -> None:
    """W = [A A … A] / blocks: the layer sees the mean of the ``blocks`` concatenated patches."""
    width = linear.in_features // blocks
    first = linear.weight[:, :width].clone()
    linear.weight.copy_(first.repeat(1, blocks) / blocks)


@torch.no_grad()
def _match_embedding_scale(model: nn.Module, processor: Any, image_size: int) -> float:
    """Scale the projector's last layer so a mid-grey picture's image tokens have the RMS of
    the text embedding rows; returns the factor."""
    from PIL import Image

    grey = Image.new("RGB", (image_size, image_size), (128, 128, 128))
    pixels = processor.image_processor(images=[grey], return_tensors="pt")["pixel_values"]
    feats = model.model.get_image_features(
        pixel_values=pixels, vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output
    image_rms = torch.cat(list(feats)).pow(2).mean().sqrt()
    text_rms = model.get_input_embeddings().weight.pow(2).mean().sqrt()
    factor = float(text_rms / image_rms)
    last = model.model.multi_modal_projector.linear_2
    last.weight.mul_(factor)
    last.bias.mul_(factor)
    return factor
