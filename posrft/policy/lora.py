"""PEFT LoRA on the language model of a :class:`PosePolicy`, and freezing the vision tower.

Trainable after :func:`apply_lora`: the LoRA A/B matrices of the language model's linear layers,
the multimodal projector (as a PEFT ``modules_to_save`` copy, so disabling the adapter restores
the original projector too), the embedding rows of the tokens posrft adds (``<POSE>``: PEFT
``trainable_token_indices``, see :func:`new_token_targets`) and the pose head. Which modules are
the projector and the vision tower, and which linear layers LoRA targets, is the model family's
row in :mod:`posrft.policy.families`. Frozen: the vision tower and all other base LM weights
(the other embedding and LM head rows included). A frozen copy of the pose head becomes the
reference head, so ``with policy.disable_adapter():`` evaluates exactly π_ref (the policy as it
was before LoRA).

Why the new rows train: ``<POSE>`` starts as the mean of the other rows; with the LM head
frozen (tied to the embeddings in SmolLM2 / Qwen2.5-VL-3B, its own matrix in others) a LoRA-only
model never learns to emit it (measured: log p(<POSE>) ≈ -11 after 300 SFT steps).

Only linear layers *inside the language model* are targeted: in LLaVA the CLIP tower also has
``q_proj/k_proj/v_proj/out_proj`` and matching by short name would put LoRA on it as well.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from posrft.policy.families import LM_LINEAR, ModelFamily
from posrft.policy.image_tokens import projector_module_names
from posrft.policy.model import PosePolicy

DEFAULT_TARGETS = LM_LINEAR


def language_model_linear_names(model: nn.Module, short_names: Sequence[str] | None = None,
                                top_layers: int | None = None) -> list[str]:
    """Full names of the ``nn.Linear`` modules inside ``model.get_decoder()`` (LM head excluded),
    optionally only those whose last name component is in ``short_names`` and only in the last
    ``top_layers`` decoder layers."""
    decoder = model.get_decoder()
    inside = {id(m) for m in decoder.modules()}
    keep: set[int] | None = None
    if top_layers is not None:
        layers = getattr(decoder, "layers", None)
        if layers is None:
            raise ValueError(f"{type(decoder).__name__} has no .layers: cannot pick its top layers")
        if not 1 <= top_layers <= len(layers):
            raise ValueError(f"lora_layers must be in [1, {len(layers)}], got {top_layers}")
        keep = {id(m) for layer in list(layers)[-top_layers:] for m in layer.modules()}
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and id(module) in inside
             and (keep is None or id(module) in keep)
             and (short_names is None or name.rsplit(".", 1)[-1] in short_names)]
    if not names:
        raise ValueError(f"no linear layers named {list(short_names or [])} in the language model")
    return names


def freeze_vision_tower(policy: PosePolicy) -> list[str]:
    """``requires_grad=False`` on the family's vision tower (its projector stays trainable);
    returns the frozen parameter names."""
    frozen = []
    for name, p in policy.named_parameters():
        if policy.family.is_vision(name):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def new_token_targets(model: nn.Module, token_ids: Sequence[int]) -> dict[str, list[int]]:
    """PEFT ``trainable_token_indices`` that train the rows ``token_ids`` of the input embedding
    and of the LM head: ``{embedding path: ids}`` when the head is tied to the embedding (PEFT
    then wraps the head with an adapter that shares the embedding's rows, so both see the same
    values), else ``{embedding path: ids, head path: ids}``. A head with a bias is left alone
    (PEFT's trainable-token layer computes ``x Wᵀ`` without it)."""
    ids = sorted({int(i) for i in token_ids})
    inputs, output = model.get_input_embeddings(), model.get_output_embeddings()
    paths = {id(m): name for name, m in model.named_modules()}
    rows = inputs.weight.shape[0]
    bad = [i for i in ids if not 0 <= i < rows]
    if bad:
        raise ValueError(f"trainable_tokens {bad} are outside the embedding's {rows} rows")
    targets = {paths[id(inputs)]: ids}
    if (output is not None and output.weight is not inputs.weight
            and getattr(output, "bias", None) is None and id(output) in paths):
        targets[paths[id(output)]] = ids
    return targets


def _check_tied_head(model: nn.Module, was_tied: bool) -> None:
    """PEFT ties the head's trainable rows to the embedding's only when the model's config says
    ``tie_word_embeddings``; a tied head left unwrapped would keep the old ``<POSE>`` row."""
    from peft.utils.other import TrainableTokensWrapper

    head = model.get_output_embeddings()
    if was_tied and not (isinstance(head, TrainableTokensWrapper)
                         and head.token_adapter.tied_adapter is not None):
        raise RuntimeError("the LM head shares the input embedding's weight but PEFT did not tie "
                           "its trainable token rows (config.tie_word_embeddings is not set?); "
                           "use trainable_tokens=[] or fix the model config")


def apply_lora(policy: PosePolicy, r: int = 16, alpha: float = 32.0, dropout: float = 0.0,
               target_modules: Sequence[str] | None = None,
               train_projector: bool = True,
               projector_name: str | None = None, top_layers: int | None = None,
               trainable_tokens: Sequence[int] | None = None) -> PosePolicy:
    """Wrap ``policy.model`` with PEFT LoRA in place and return the policy.

    ``target_modules``: short names of LM linear layers (default: the family's ``lora_targets``).
    ``top_layers``: put LoRA only in the last N decoder layers: backward then stops below them
    (with the projector frozen), which is most of the update's cost on a CPU.
    ``train_projector``: make the multimodal projector trainable (ignored for text-only models);
    ``projector_name``: its module name, overriding the family's ``projector_modules``.
    ``trainable_tokens``: token ids whose input-embedding and LM-head rows train in full
    (:func:`new_token_targets`); default ``[policy.pose_token_id]``, ``[]`` for none.
    The settings, resolved, go to ``policy.config.lora`` so that ``apply_lora(base, **lora)``
    (an adapter-synced rollout worker) builds the same structure.
    """
    from peft import LoraConfig, get_peft_model

    if policy.is_lora:
        raise ValueError("the policy already has a LoRA adapter")
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    family = policy.family
    if target_modules is None:
        target_modules = family.lora_targets
    model = policy.model
    targets = language_model_linear_names(model, target_modules, top_layers)
    modules_to_save = None
    if policy.multimodal and train_projector:
        if projector_name is not None:
            from dataclasses import replace

            family = replace(family, projector_modules=(projector_name,))
        modules_to_save = projector_module_names(model, family)
        if not modules_to_save:
            raise ValueError(f"no projector module {list(family.projector_modules)} in the "
                             f"{family.title} model (projector_name / the family registry)")
    tokens = [policy.pose_token_id] if trainable_tokens is None else sorted(set(trainable_tokens))
    token_targets = new_token_targets(model, tokens) if tokens else None
    was_tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    lora_config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                             modules_to_save=modules_to_save, bias="none",
                             trainable_token_indices=token_targets)
    policy.set_reference_head()
    policy.model = get_peft_model(model, lora_config)
    if token_targets:
        _check_tied_head(policy.hf_model, was_tied)
    policy.pose_head.requires_grad_(True)
    policy.config.base_model_path = policy.config.base_model_path or policy.source
    policy.config.lora = {"r": r, "alpha": alpha, "dropout": dropout,
                          "target_modules": list(target_modules) if target_modules else None,
                          "train_projector": bool(modules_to_save), "top_layers": top_layers,
                          "trainable_tokens": tokens}
    return policy


def merge_lora(policy: PosePolicy) -> PosePolicy:
    """Fold the LoRA weights (and trained projector) into the base model, in place; the policy
    then saves as a plain HF model with its pose head. The reference head is dropped."""
    if not policy.is_lora:
        raise ValueError("merge_lora: the policy has no LoRA adapter")
    policy.model = policy.model.merge_and_unload()
    policy.ref_pose_head = None
    policy.config.base_model_path = None
    policy.config.lora = None
    return policy


def trainable_parameter_names(policy: PosePolicy) -> list[str]:
    """Names of parameters with ``requires_grad`` (for optimiser set-up and checks)."""
    return [name for name, p in policy.named_parameters() if p.requires_grad]
