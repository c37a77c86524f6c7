"""The multimodal projector's output scale: find the projector, optionally pin its token norm.

A freshly initialised projector (the composed pretrained start) emits image tokens at about the
norm of the text embeddings, but SFT grows them without bound: measured on the image→pose
start (SmolLM2-135M + DINOv2-small), the mean image-token norm went from 3.2 to 312 after 200
steps with the projector at lr 1e-4 and to 3·10⁴ at 1e-3, against 2.8 for text embeddings. In a
pre-norm decoder such a token's residual stream is its input embedding for every layer, so the
language model can no longer transform it, only read it linearly. ``image_token_norm`` fixes
each token's L2 norm:

    e'_i = c · e_i / ‖e_i‖        e_i (…, H): one projected image token, c = image_token_norm

(a parameter-free RMS norm with gain c/√H), applied as a forward hook on the family's projector
modules, so the HF weights, their names and ``save_pretrained`` are unchanged. It is an option,
off by default: pinned at the text-embedding norm, the image→pose and SkeletonLLM pilots scored
no better than unpinned ones (docs/pretrained.md, "The image-token norm"), so the growth is a
symptom of what keeps the composed model from reading its images, not the cause.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from posrft.policy.families import ModelFamily

_ATTR = "posrft_image_token_norm"


def projector_module_names(model: nn.Module, family: ModelFamily) -> list[str]:
    """Full names of the family's projector modules in ``model`` (outermost matches; a
    ``ModuleList`` of projectors stands for its members, which PEFT can wrap one by one)."""
    names: list[str] = []
    for name, module in model.named_modules():
        if not name or not family.is_projector(name) or any(name.startswith(n + ".") for n in names):
            continue
        if isinstance(module, nn.ModuleList):
            names += [f"{name}.{child}" for child, _ in module.named_children()]
        else:
            names.append(name)
    return names


def text_embedding_norm(model: nn.Module) -> float:
    """Mean L2 norm of the rows of ``model``'s input-embedding table: the scale the language
    model's own tokens enter the decoder at (SmolLM2-135M: 3.20)."""
    weight = model.get_input_embeddings().weight.detach()
    return float(weight.float().norm(dim=-1).mean())


def pin_token_norm(tokens: Tensor, norm: float) -> Tensor:
    """``(…, H)`` tokens, each rescaled to L2 norm ``norm`` (computed in at least fp32)."""
    x = tokens.to(torch.promote_types(tokens.dtype, torch.float32))
    return (x * (norm / x.norm(dim=-1, keepdim=True).clamp(min=1e-6))).to(tokens.dtype)


def _pin_norm(module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"image_token_norm needs a projector that returns one tensor; "
                        f"{type(module).__name__} returned {type(output).__name__}")  # fmt: skip
    return pin_token_norm(output, getattr(module, _ATTR))


def set_image_token_norm(model: nn.Module, family: ModelFamily, norm: float) -> list[str]:
    """Pin the L2 norm of every token the projector(s) of ``model`` emit to ``norm``; returns the
    hooked module names. Idempotent: a module hooked before only gets the new value. A PEFT
    ``modules_to_save`` copy made later is a deep copy and keeps the hook."""
    if not norm > 0:
        raise ValueError(f"image_token_norm must be > 0, got {norm!r}")
    names = projector_module_names(model, family)
    if not names:
        raise ValueError(f"image_token_norm: no projector module {list(family.projector_modules)} in the model")
    for name in names:
        module = model.get_submodule(name)
        if not hasattr(module, _ATTR):
            module.register_forward_hook(_pin_norm)
        setattr(module, _ATTR, float(norm))
    return names
