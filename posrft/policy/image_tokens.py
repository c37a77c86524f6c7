"""The multimodal projector's output: find the projector, standardise its tokens, pin their norm.

**Standardisation** (``standardize_image_tokens``). A freshly composed projector (the pretrained
start: DINOv2-small → fresh projector → SmolLM2) emits tokens that are almost the same vector
for every picture: over 256 training pictures of the image→pose set each channel varies by
0.008 (median standard deviation) around means up to 0.27, while the text embeddings have an
RMS of 0.13 per channel. The picture is a 3 % ripple on a constant, and the language model's
RMS norms see the constant. Readers trained with Adam on these tokens only learn the
pose once each channel is standardised (benchmarks/image_readout.py, docs/pretrained.md). The
fix is the affine map

    e' = c · (e − m) / s        m, s (H,): each channel's mean and std over the training
                                pictures' tokens; c = ‖text embedding‖ / √H

folded into the projector's output layer (W ← diag(c/s) W, b ← c (b − m) / s), so the model
stays a plain HF model whose tokens start at the text embeddings' scale with all of their
variance between pictures. An option, off by default: the image→pose SFT and the SkeletonLLM
warm-up pilots on standardised tokens scored no better than without (docs/pretrained.md).

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

import logging
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from posrft.policy.families import ModelFamily

_ATTR = "posrft_image_token_norm"
log = logging.getLogger("posrft.policy")


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


# ------------------------------------------------------------------------------ standardisation
def output_linear(projector: nn.Module, name: str = "projector") -> nn.Linear:
    """The projector's last ``nn.Linear`` (registration order), which must have a bias: the
    layer the standardisation folds into. Whether it is really the projector's last operation
    is checked on real outputs by :func:`standardize_image_tokens`."""
    linears = [m for m in projector.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"standardize_image_tokens: {name} has no nn.Linear to fold into")
    if linears[-1].bias is None:
        raise ValueError(f"standardize_image_tokens: the last linear layer of {name} has no bias, "
                         "so the channel means cannot be folded into it")  # fmt: skip
    return linears[-1]


@torch.no_grad()
def fold_standardization(linear: nn.Linear, mean: Tensor, std: Tensor, scale: float) -> None:
    """Rewrite ``linear`` so that its output ``y`` becomes ``scale · (y − mean) / std``
    (``mean``, ``std``: ``(out_features,)``): W ← diag(scale/std) W, b ← scale (b − mean) / std."""
    if mean.shape != (linear.out_features,) or std.shape != mean.shape:
        raise ValueError(f"mean and std must be ({linear.out_features},); got {tuple(mean.shape)} "
                         f"and {tuple(std.shape)}")  # fmt: skip
    if not bool((std > 0).all()):
        raise ValueError("standardize_image_tokens: a channel has zero spread over the pictures "
                         "(are they all the same?)")  # fmt: skip
    gain = (scale / std.double())
    linear.weight.copy_((linear.weight.double() * gain[:, None]).to(linear.weight.dtype))
    linear.bias.copy_(((linear.bias.double() - mean.double()) * gain).to(linear.bias.dtype))


class _Stop(Exception):
    """Raised after the last projector ran: the statistics need no language-model pass."""


@torch.no_grad()
def standardize_image_tokens(model: nn.Module, family: ModelFamily, run_batches: Iterable[Callable[[], object]],
                             scale: float | None = None) -> dict[str, dict[str, float]]:
    """Standardise every channel of the tokens each projector of ``model`` emits (module
    docstring), with statistics over the batches: each item of ``run_batches`` runs ``model``
    forward on a batch of pictures (it is stopped once the decoder is reached). ``scale``: the
    target std of a channel (default: the text embeddings' RMS per channel). Returns, per
    projector, the spread before (median channel std, largest |mean|) and the scale used."""
    names = projector_module_names(model, family)
    if not names:
        raise ValueError(f"standardize_image_tokens: no projector module {list(family.projector_modules)} in the model")
    if scale is None:
        scale = text_embedding_norm(model) / model.get_input_embeddings().weight.shape[1] ** 0.5
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    last: dict[str, list[Tensor]] = {n: [] for n in names}
    linears = {n: output_linear(model.get_submodule(n), n) for n in names}

    def keep(store: list[Tensor]) -> Callable:
        def hook(module: nn.Module, _args: tuple, out: object) -> None:
            if not isinstance(out, Tensor):
                raise TypeError(f"standardize_image_tokens needs a projector that returns one tensor; "
                                f"{type(module).__name__} returned {type(out).__name__}")  # fmt: skip
            store.append(out.detach().float().reshape(-1, out.shape[-1]))

        return hook

    def stop(*_: object, **__: object) -> None:
        raise _Stop

    hooks = [model.get_submodule(n).register_forward_hook(keep(seen[n])) for n in names]
    hooks += [linears[n].register_forward_hook(keep(last[n])) for n in names]
    hooks.append(model.get_decoder().layers[0].register_forward_pre_hook(stop, with_kwargs=True))
    try:
        for run in run_batches:
            try:
                run()
            except _Stop:
                pass
    finally:
        for h in hooks:
            h.remove()
    report = {}
    for n in names:
        if not seen[n]:
            raise ValueError(f"standardize_image_tokens: {n} never ran (no pictures in the batches?)")
        tokens, out = torch.cat(seen[n]), torch.cat(last[n])
        if tokens.shape != out.shape or not torch.allclose(tokens, out, rtol=1e-4, atol=1e-6):
            raise ValueError(f"standardize_image_tokens: {n}'s output is not its last linear layer's, "
                             "so there is no layer to fold the standardisation into")  # fmt: skip
        mean, std = tokens.double().mean(0), tokens.double().std(0)
        fold_standardization(linears[n], mean, std, scale)
        report[n] = {"tokens": len(tokens), "median_std_before": float(std.median()),
                     "max_abs_mean_before": float(mean.abs().max()), "scale": float(scale)}  # fmt: skip
        log.info("standardised the tokens of %s over %d image tokens: channel std %.3g (median), "
                 "|mean| up to %.3g → std %.3g, mean 0", n, len(tokens), report[n]["median_std_before"],
                 report[n]["max_abs_mean_before"], scale)  # fmt: skip
    return report
