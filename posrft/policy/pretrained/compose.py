"""Pieces that turn pretrained bases into a pose policy's HF folder.

* :func:`add_special_tokens`: ``<POSE>`` (and ``<image>``) as single special tokens, embeddings
  resized (new rows drawn from the old rows' mean and covariance, transformers' default, under
  a seeded RNG so the build is reproducible);
* :func:`chatml_template`: a ChatML template whose messages may be strings or lists of
  ``{"type": "image"}`` / ``{"type": "text"}`` parts (posrft's datasets use lists), keeping the
  base model's default system turn (found by rendering its own template);
* :func:`vision_image_processor`: resize (shortest edge) + centre crop to R px + ImageNet
  normalisation, PIL backend (no torchvision);
* :func:`compose_llava`: ``LlavaForConditionalGeneration`` from a causal LM and a vision tower
  with a fresh 2-layer GELU projector (seeded). The projector's output layer is scaled so that,
  on a mid-grey picture, image tokens have the RMS of the LM's token embeddings: a default
  initialisation gives image embeddings far from the scale the frozen LM was trained on.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

IMAGE_TOKEN = "<image>"
POSE_TOKEN = "<POSE>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CHATML_BODY = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def add_special_tokens(model: nn.Module, tokenizer: Any, tokens: list[str], seed: int = 0) -> list[int]:
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
        return _CHATML_BODY
    literal = json.dumps(system_prefix)  # a JSON string is a valid Jinja string literal
    return ("{% if messages[0]['role'] != 'system' %}{{ " + literal + " }}{% endif %}"
            + _CHATML_BODY)


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
                  image_size: int, seed: int = 0, vision_feature_layer: int = -1,
                  image_mean: tuple = IMAGENET_MEAN, image_std: tuple = IMAGENET_STD,
                  ) -> tuple[nn.Module, Any]:
    """(``LlavaForConditionalGeneration``, ``LlavaProcessor``) around the given modules.

    ``text_model``: a ``*ForCausalLM`` (its decoder and LM head are reused, not copied);
    ``vision_model``: a vision ``PreTrainedModel`` with a CLS token (``vision_feature_select_
    strategy="default"`` drops it); images are ``image_size``² px → (image_size/patch)² tokens.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    patch = _patch_size(vision_model.config)
    if image_size % patch:
        raise ValueError(f"image_size {image_size} must be a multiple of the patch size {patch}")
    if not is_chatml(tokenizer):
        raise ValueError("composing an image-text model needs a ChatML tokenizer "
                         f"({IM_START}/{IM_END}); give a ChatML text model or an image-text folder")
    add_special_tokens(text_model, tokenizer, [IMAGE_TOKEN], seed)
    template = chatml_template(default_system_prefix(tokenizer))
    tokenizer.chat_template = template
    config = LlavaConfig(
        vision_config=vision_model.config, text_config=text_model.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(image_size // patch) ** 2, vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer, projector_hidden_act="gelu",
        tie_word_embeddings=text_model.config.tie_word_embeddings)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.language_model = text_model.model
    model.model.vision_tower = vision_model
    model.lm_head = text_model.lm_head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.model.multi_modal_projector = type(model.model.multi_modal_projector)(config)
    model.tie_weights()
    model.generation_config = text_model.generation_config
    processor = LlavaProcessor(
        image_processor=vision_image_processor(image_size, image_mean, image_std),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=template, image_token=IMAGE_TOKEN)
    _match_embedding_scale(model, processor, image_size)
    return model.eval(), processor


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
