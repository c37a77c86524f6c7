"""The model-family registry: what each MLLM family needs from the policy, in one table.

A :class:`ModelFamily` says, for the HF ``model_type`` s it covers:

* ``processor``: the transformers processor class; ``image_only`` builds it without its video
  processor (:mod:`posrft.policy.processors`; those need torchvision, absent on CPU machines);
* ``inputs``: every extra tensor the processor returns and its :class:`~posrft.policy.mm_inputs.Layout`
  (a key the processor returns that is neither listed nor in ``ignored_outputs`` is an error,
  never silently dropped; PaliGemma's processor adds training ``labels`` we do not use);
* ``positions``: how the learner's forward builds position ids so that they match
  ``generate`` and do not depend on left padding: ``"mask"`` (count attended tokens),
  ``"mask+1"`` (PaliGemma counts from 1), ``"mrope"`` (Qwen-VL: the model derives 3-D M-RoPE
  positions from ``mm_token_type_ids``/``image_grid_thw`` and the mask);
* chat-template quirks: ``chat_template=False`` means prompts are plain text with the image
  placeholders in front (PaliGemma is a prefix-LM without a chat template; its processor adds
  BOS and the ``\\n`` separator, so the tokenizer must have a BOS token, and every prompt needs
  an image: ``image_required``); SmolVLM's image-only processor renders with
  ``ProcessorMixin``'s method (its own reads video defaults);
* ``vision_modules``: the vision tower (frozen when ``freeze_vision_tower``; never LoRA-adapted);
  ``projector_modules``: the vision→text projector (trained in full next to LoRA, as a PEFT
  ``modules_to_save`` copy); ``lora_targets``: short names of the language model's linear layers;
  names match a module whose dotted name equals or ends with ``.<name>``;
* ``requires``: Python modules the processor imports (``num2words`` for SmolVLM).

Supported in transformers 5.25 and tested offline with tiny random models
(``tests/test_families.py``): see ``FAMILIES`` and the README's "Supported model families".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posrft.policy.mm_inputs import InputSpec, Layout

LM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_PIXELS = {"pixel_values": InputSpec(Layout.IMAGE)}
_QWEN = {"pixel_values": InputSpec(Layout.PATCH), "image_grid_thw": InputSpec(Layout.IMAGE),
         "mm_token_type_ids": InputSpec(Layout.PROMPT, 0)}
_IDEFICS = {"pixel_values": InputSpec(Layout.SAMPLE),
            "pixel_attention_mask": InputSpec(Layout.SAMPLE)}


@dataclass(frozen=True)
class ModelFamily:
    """One row of the registry (see the module docstring for each field)."""

    name: str
    title: str
    model_types: tuple[str, ...]
    processor: str | None = None
    image_only: bool = False
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    ignored_outputs: tuple[str, ...] = ()
    positions: str = "mask"
    chat_template: bool = True
    needs_bos: bool = False
    image_required: bool = False
    vision_modules: tuple[str, ...] = ()
    projector_modules: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] = LM_LINEAR
    requires: tuple[str, ...] = ()

    @property
    def multimodal(self) -> bool:
        return self.processor is not None

    def check_requirements(self) -> None:
        """ImportError naming the family and the missing Python module(s)."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(f"the {self.title} processor needs the Python package(s) "
                              f"{missing} (pip install {' '.join(missing)}; posrft's 'families' "
                              f"extra installs them)")

    def processor_class(self) -> type:
        """The processor class to build/load (the image-only variant where ``image_only``)."""
        if self.processor is None:
            raise ValueError(f"{self.title} is a text-only family: it has no processor")
        import transformers

        from posrft.policy.processors import image_only_processor

        base = getattr(transformers, self.processor)
        return image_only_processor(base) if self.image_only else base

    def load_processor(self, path: str | Path) -> Any:
        """Processor (image-text) or tokenizer (text-only) of the HF folder ``path``."""
        self.check_requirements()
        if self.processor is None:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path)
        return self.processor_class().from_pretrained(path)

    def is_vision(self, name: str) -> bool:
        """``name`` (a parameter or module name) lies in the vision tower, projector excluded."""
        return _under(name, self.vision_modules) and not _under(name, self.projector_modules)

    def is_projector(self, name: str) -> bool:
        return _under(name, self.projector_modules)


def _under(name: str, modules: tuple[str, ...]) -> bool:
    """Does dotted ``name`` lie inside a module called ``m`` (``m`` a dotted suffix path)?"""
    padded = f".{name}."
    return any(f".{m}." in padded for m in modules)


_LLAVA_PARTS = dict(vision_modules=("vision_tower",), projector_modules=("multi_modal_projector",))
_QWEN_PARTS = dict(vision_modules=("visual",), projector_modules=("visual.merger",))

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("text", "causal LM (text only: Qwen2/3, Llama, Gemma, SmolLM2, ...)", ()),
    ModelFamily("llava", "LLaVA (1.5)", ("llava",), "LlavaProcessor", inputs=_PIXELS,
                **_LLAVA_PARTS),
    # the LLaVA layout with a pixel-shuffle projector, as `posrft model init-pretrained --pool F`
    # (F > 1) composes it, with a LlavaProcessor; Aya Vision checkpoints' own processor (crops
    # to tiles) is not covered
    ModelFamily("aya_vision", "LLaVA layout with pixel-shuffle projector (AyaVision classes)",
                ("aya_vision",), "LlavaProcessor", inputs=_PIXELS, **_LLAVA_PARTS),
    ModelFamily("llava_next", "LLaVA-NeXT", ("llava_next",), "LlavaNextProcessor",
                inputs={"pixel_values": InputSpec(Layout.IMAGE),
                        "image_sizes": InputSpec(Layout.IMAGE)}, **_LLAVA_PARTS),
    ModelFamily("llava_onevision", "LLaVA-OneVision", ("llava_onevision",),
                "LlavaOnevisionProcessor", image_only=True,
                inputs={"pixel_values": InputSpec(Layout.IMAGE),
                        "image_sizes": InputSpec(Layout.IMAGE),
                        "batch_num_images": InputSpec(Layout.SAMPLE)}, **_LLAVA_PARTS),
    ModelFamily("qwen2_vl", "Qwen2-VL", ("qwen2_vl",), "Qwen2VLProcessor", image_only=True,
                inputs=_QWEN, positions="mrope", **_QWEN_PARTS),
    ModelFamily("qwen2_5_vl", "Qwen2.5-VL", ("qwen2_5_vl",), "Qwen2_5_VLProcessor",
                image_only=True, inputs=_QWEN, positions="mrope", **_QWEN_PARTS),
    ModelFamily("qwen3_vl", "Qwen3-VL", ("qwen3_vl",), "Qwen3VLProcessor", image_only=True,
                inputs=_QWEN, positions="mrope", vision_modules=("visual",),
                projector_modules=("visual.merger", "visual.deepstack_merger_list")),
    ModelFamily("gemma3", "Gemma 3", ("gemma3",), "Gemma3Processor",
                inputs={"pixel_values": InputSpec(Layout.IMAGE),
                        "token_type_ids": InputSpec(Layout.PROMPT, 0)}, **_LLAVA_PARTS),
    ModelFamily("paligemma", "PaliGemma (1/2)", ("paligemma",), "PaliGemmaProcessor",
                inputs={"pixel_values": InputSpec(Layout.IMAGE),
                        "token_type_ids": InputSpec(Layout.PROMPT, 1)},
                ignored_outputs=("labels",), positions="mask+1", chat_template=False, needs_bos=True, image_required=True,
                **_LLAVA_PARTS),
    ModelFamily("idefics3", "Idefics3", ("idefics3",), "Idefics3Processor", inputs=_IDEFICS,
                vision_modules=("vision_model",), projector_modules=("connector",)),
    ModelFamily("smolvlm", "SmolVLM (1/2)", ("smolvlm",), "SmolVLMProcessor", image_only=True,
                inputs=_IDEFICS, vision_modules=("vision_model",),
                projector_modules=("connector",), requires=("num2words",)),
    ModelFamily("internvl", "InternVL (2.5/3)", ("internvl",), "InternVLProcessor",
                image_only=True, inputs=_PIXELS, **_LLAVA_PARTS),
)}

_BY_MODEL_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_for_model_type(model_type: str, image_text: bool) -> ModelFamily:
    """The family of an HF ``model_type``. Text-only models (``image_text`` False) are all the
    ``text`` family; an image-text type outside the registry raises, naming what is supported."""
    if not image_text:
        return FAMILIES["text"]
    if model_type not in _BY_MODEL_TYPE:
        known = sorted(_BY_MODEL_TYPE)
        raise ValueError(f"image-text model_type {model_type!r} is not in posrft's family registry "
                         f"(posrft.policy.families); supported: {known}. Add a ModelFamily row "
                         f"naming its processor, input layouts, vision tower and projector")
    return _BY_MODEL_TYPE[model_type]


def family_for_processing(processing: Any, multimodal: bool) -> ModelFamily:
    """The family whose processor class ``processing`` is (``text`` for a tokenizer)."""
    if not multimodal:
        return FAMILIES["text"]
    name = type(processing).__name__
    for family in FAMILIES.values():
        if family.processor == name:
            return family
    raise ValueError(f"processor class {name!r} belongs to no family in posrft's registry "
                     f"(posrft.policy.families); supported: "
                     f"{sorted(f.processor for f in FAMILIES.values() if f.processor)}")
