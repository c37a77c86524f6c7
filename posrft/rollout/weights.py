"""The learner's weights in the key space of a plain (non-LoRA) ``PosePolicy``.

Rollout workers hold a plain policy loaded from the base model folder; the learner may hold a
PEFT LoRA policy (:func:`posrft.policy.lora.apply_lora`). :func:`merged_state_dict` gives the
tensors that make the worker's policy compute exactly the learner's function:

* every LoRA layer ``L`` (key ``model.<path>.weight`` in the plain policy):
  W = W₀ + Σ_a ΔW_a with ΔW_a = scaling_a · B_a A_a (PEFT's ``get_delta_weight``; transposed
  for ``fan_in_fan_out`` layers), summed over the layer's active adapters, computed out of place
  so the learner's modules are untouched;
* every ``modules_to_save`` wrapper (the trained multimodal projector): the active adapter's
  copy, under the wrapped module's own path;
* every trainable-token wrapper (the ``<POSE>`` rows of the input embedding and, untied, of the
  LM head): W with the active adapter's rows written in (PEFT's ``get_merged_weights``), under
  ``model.<path>.weight``. A head tied to the embedding is skipped: the plain model ties it too,
  so its embedding tensor is its head;
* the pose head (``pose_head.*``) and any other trainable parameter, with PEFT's name infixes
  (``base_model.model.``, ``.base_layer``) removed.

PEFT names, for reference (policy keys): ``model.base_model.model.<path>.base_layer.weight``,
``...<path>.lora_A.<adapter>.weight``, ``...<path>.modules_to_save.<adapter>.<param>`` and
``...<path>.original_module.<param>``, ``...<path>.token_adapter.trainable_tokens_delta.<adapter>``
(the new rows themselves, not a difference) and ``...<path>.token_adapter.base_layer.weight``;
the plain model's key is ``model.<path>.<param>``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from posrft.policy.model import PosePolicy

_PEFT_INFIXES = ("lora_", "base_layer", "modules_to_save", "original_module", "base_model.model.",
                 "token_adapter")


def _unwrap(module: nn.Module) -> nn.Module:
    """Peel DDP/DeepSpeed-engine style wrappers (``.module``) off a learner model."""
    seen = 0
    while not isinstance(module, PosePolicy) and hasattr(module, "module") and seen < 4:
        module, seen = module.module, seen + 1
    if not isinstance(module, PosePolicy):
        raise TypeError(f"merged_state_dict needs a PosePolicy (or a DDP/DeepSpeed wrapper of "
                        f"one; pass accelerator.unwrap_model(model)), got {type(module).__name__}")
    return module


def _check_not_partitioned(policy: PosePolicy) -> None:
    for name, p in policy.named_parameters():
        if hasattr(p, "ds_id"):  # set on every ZeRO-3 parameter
            raise RuntimeError(
                f"parameter {name!r} is partitioned (DeepSpeed ZeRO-3): gather the parameters on "
                f"all ranks first (deepspeed.zero.GatheredParameters) or use ZeRO stage <= 2")


def _lora_weights(hf_model: nn.Module, prefix: str) -> tuple[dict[str, Tensor], set[int]]:
    """Merged weights of LoRA layers, active ``modules_to_save`` copies and trainable-token
    wrappers, plus the ids of the parameters they cover (so the generic pass skips them)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    out: dict[str, Tensor] = {}
    covered: set[int] = set()
    for path, module in hf_model.named_modules():
        if isinstance(module, TrainableTokensWrapper):
            covered.update(id(p) for p in module.parameters())
            layer = module.token_adapter
            weight = layer.get_base_layer().weight.detach()
            tied = layer.tied_adapter
            if tied is not None and tied.get_base_layer().weight is layer.get_base_layer().weight:
                continue  # the tied head: the embedding's entry is its weight too
            if not layer.disable_adapters and not layer.merged:
                adapters = [a for a in layer.active_adapters if a in layer.token_indices]
                weight = layer.get_merged_weights(adapters).detach()
            out[f"{prefix}{path}.weight"] = weight
            continue
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            covered.update(id(p) for p in module.parameters())
            weight = base.weight.detach()
            if not module.disable_adapters and not module.merged:
                for adapter in module.active_adapters:
                    embedding_a = getattr(module, "lora_embedding_A", {})
                    if adapter not in module.lora_A and adapter not in embedding_a:
                        continue
                    if adapter in getattr(module, "lora_variant", {}):
                        raise ValueError(
                            f"{path}: LoRA variant {type(module.lora_variant[adapter]).__name__} "
                            f"(e.g. DoRA) cannot be merged as W + scale·B·A; use plain LoRA")
                    weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
            out[f"{prefix}{path}.weight"] = weight
            if getattr(base, "bias", None) is not None and base.bias.requires_grad:
                out[f"{prefix}{path}.bias"] = base.bias.detach()
        elif isinstance(module, ModulesToSaveWrapper):
            covered.update(id(p) for p in module.parameters())
            adapters = [a for a in module.active_adapters if a in module.modules_to_save]
            use_copy = bool(adapters) and not module.disable_adapters
            active = module.modules_to_save[adapters[0]] if use_copy else module.original_module
            for key, value in active.state_dict().items():
                out[f"{prefix}{path}.{key}"] = value.detach()
    return out, covered


@torch.no_grad()
def merged_state_dict(policy: nn.Module, trainable_only: bool = True) -> dict[str, Tensor]:
    """Detached tensors (on the learner's device) that a plain ``PosePolicy`` loaded from the
    base folder needs to equal ``policy``; keys are that plain policy's ``state_dict`` keys.

    LoRA policy: merged LoRA layers + active ``modules_to_save`` copies + trainable parameters
    (pose head). Non-LoRA policy: the trainable parameters (``trainable_only=True``, the least
    traffic; frozen weights are already on the workers) or the whole state dict. The reference
    pose head is never included (rollouts use the current head). ``policy`` may be wrapped in
    DDP / a DeepSpeed engine; ZeRO-3-partitioned parameters raise ``RuntimeError``.
    """
    policy = _unwrap(policy)
    _check_not_partitioned(policy)
    if not policy.is_lora:
        if trainable_only:
            return {n: p.detach() for n, p in policy.named_parameters()
                    if p.requires_grad and not n.startswith("ref_pose_head.")}
        return {n: t.detach() for n, t in policy.state_dict().items()
                if not n.startswith("ref_pose_head.")}
    if not trainable_only:
        raise ValueError("trainable_only=False is for plain policies; for a LoRA policy the frozen "
                         "base weights are the workers' own, only merged layers are sent")
    # hf_model is PEFT's base_model.model: its module paths are the plain model's paths
    out, covered = _lora_weights(policy.hf_model, "model.")
    for name, p in policy.named_parameters():
        if not p.requires_grad or id(p) in covered or name.startswith("ref_pose_head."):
            continue
        plain = name.replace("model.base_model.model.", "model.", 1)
        if any(infix in plain for infix in _PEFT_INFIXES):
            raise ValueError(f"trainable parameter {name!r} has no plain-model name")
        out[plain] = p.detach()
    return out


@torch.no_grad()
def adapter_state_dict(policy: nn.Module) -> dict[str, Tensor]:
    """The adapter-only sync of a LoRA policy: detached tensors keyed like the policy's own
    (PEFT) ``state_dict``, for workers that hold the same LoRA structure on top of the base
    (``RolloutWorker(lora=policy.config.lora)``) and so keep the base weights themselves.

    Holds every trainable parameter except the reference pose head: the LoRA ``A``/``B``
    matrices (r·(d_in + d_out) values per adapted layer instead of d_in·d_out for the merged
    layer), the active ``modules_to_save`` copies (the trained projector) and the pose head.
    """
    policy = _unwrap(policy)
    _check_not_partitioned(policy)
    if not policy.is_lora:
        raise ValueError("adapter_state_dict needs a LoRA policy (use_peft: true); a plain policy "
                         "syncs its trainable tensors with merged_state_dict")
    return {n: p.detach() for n, p in policy.named_parameters()
            if p.requires_grad and not n.startswith("ref_pose_head.")}
