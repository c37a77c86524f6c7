"""Image-only variants of the HF processors that also own a video processor.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM, LLaVA-OneVision and InternVL processors take a
``video_processor``; building one needs torchvision (absent on CPU-only machines), and
``ProcessorMixin`` refuses ``video_processor=None`` because it checks every attribute named in
``__init__``'s signature. posrft feeds images only, so each class here is the base with
``video_processor`` dropped from ``__init__``: the mixin then neither asks for nor loads one.
Every other constructor argument is spelled out (``ProcessorMixin.from_dict`` keeps only the
arguments it finds in ``__init__``'s code object, and ``to_dict`` saves only those), so
``image_seq_len``, ``num_image_tokens``, ... survive a save/load round trip;
``tests/test_families.py`` checks the signatures still match the installed transformers.

Each class keeps the base's ``__name__``, so ``processor_config.json`` and
``tokenizer_config.json`` name the real class (``Qwen2VLProcessor``): a saved folder stays an
ordinary HF checkpoint that ``AutoProcessor`` loads wherever torchvision exists.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    InternVLProcessor,
    LlavaOnevisionProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    Qwen3VLProcessor,
    SmolVLMProcessor,
)
from transformers.processing_utils import ProcessorMixin


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlySmolVLMProcessor(SmolVLMProcessor):
    def __init__(self, image_processor, tokenizer, image_seq_len: int = 169,
                 chat_template: str | None = None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len,
                         chat_template=chat_template, **kwargs)

    def apply_chat_template(self, conversation: Any, chat_template: Any = None, **kwargs: Any) -> Any:
        # SmolVLM's own fills num_frames/fps from the video processor before rendering
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs: Any):
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy,
                         chat_template=chat_template, image_token=image_token,
                         video_token=video_token, vision_aspect_ratio=vision_aspect_ratio, **kwargs)


class ImageOnlyInternVLProcessor(InternVLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256,
                 chat_template=None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, None, image_seq_length=image_seq_length,
                         chat_template=chat_template, **kwargs)


IMAGE_ONLY: dict[type, type] = {}
for _cls in (ImageOnlyQwen2VLProcessor, ImageOnlyQwen2_5_VLProcessor, ImageOnlyQwen3VLProcessor,
             ImageOnlySmolVLMProcessor, ImageOnlyLlavaOnevisionProcessor, ImageOnlyInternVLProcessor):
    _base = _cls.__mro__[1]
    _cls.__name__ = _base.__name__  # saved configs name the real class (see the docstring)
    IMAGE_ONLY[_base] = _cls


def image_only_processor(base: type) -> type:
    """The image-only variant of processor class ``base``."""
    if base not in IMAGE_ONLY:
        raise ValueError(f"no image-only variant of {base.__name__} in posrft.policy.processors")
    return IMAGE_ONLY[base]
