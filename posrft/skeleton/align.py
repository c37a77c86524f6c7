"""Word alignment of a fresh projector: frame tokens that read as the class's name.

A composed start (a pretrained LM + a pretrained vision tower + a fresh projector) hands the LM
image tokens that lie nowhere near its vocabulary. The action is in them (a linear probe reads
95 % of the 25 seen classes, docs/pretrained.md), but the LM has to learn from scratch how to
read them. LLaVA's first stage trains the projector alone, captioning through the frozen LM.
This is a cheaper form of that, with no LM forward: it compares each image token with the
LM's input embeddings, as the first decoder layer (which RMS-normalises what it reads) sees a
token, and asks the clip's tokens, together, to put their mass on the words of the clip's
class name:

    p_b      = (1/n) Σ_t softmax(s · ê_bt · Êᵀ)              (the clip's bag of words, over V)
    L_words  = −Σ_w q_b(w) log p_b(w)                        (q_b: uniform over the name's tokens)

with ``e_bt`` the clip's ``n`` frame tokens, ``ê = e / ‖e‖``, ``Ê`` the input embeddings with
unit rows and ``s`` a learned logit scale (CLIP's: starts at 1/0.07, at most 100). Each token
may specialise on one word, so the verb, the side and the body part can come from different
tokens, which is what could let an unseen composition of seen words read as its own name.
The loss only sees directions; at the end the projector's last linear layer is rescaled so
the tokens' mean norm over the training clips is the embeddings' mean row norm (a word's size).

The vision tower and the renderer are frozen here, so the projector's inputs are computed once
per clip (:func:`projector_inputs`) and the steps cost only the projector and one ``(n, d) ×
(d, V)`` product.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from posrft.policy.image_tokens import output_linear, projector_module_names, text_embedding_norm
from posrft.skeleton.reader import pool_tokens

log = logging.getLogger("posrft.skeleton")


@dataclass
class AlignResult:
    """What the alignment did: the loss at the first and last step, and the share of training
    clips whose bag of words is closest to their own class's words (:func:`word_class_scores`)."""

    steps: int
    loss_first: float
    loss_last: float
    train_top1: float
    logit_scale: float


def class_word_ids(tokenizer, classes: Sequence[str]) -> list[list[int]]:
    """Per class, the distinct token ids of ``" name"`` as the LM reads a name inside a
    sentence (leading space), in order."""
    out = []
    for c in classes:
        ids = tokenizer(f" {c}", add_special_tokens=False)["input_ids"]
        out.append(list(dict.fromkeys(int(i) for i in ids)))
    return out


def word_targets(word_ids: Sequence[Sequence[int]], vocab: int) -> Tensor:
    """``(C, V)`` rows: uniform over each class's word ids."""
    q = torch.zeros(len(word_ids), vocab)
    for k, ids in enumerate(word_ids):
        if not ids:
            raise ValueError(f"class {k} has no words to align to")
        q[k, list(ids)] = 1.0 / len(ids)
    return q


#: CLIP's logit scale: starts at 1/0.07, clamped at 100
LOGIT_SCALE_INIT, LOGIT_SCALE_MAX = math.log(1 / 0.07), math.log(100.0)


def unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def bag_of_words(tokens: Tensor, unit_embeddings: Tensor, scale: Tensor | float) -> Tensor:
    """``tokens (B, n, d)``, ``unit_embeddings Ê (V, d)``, logit scale ``s`` -> ``p (B, V)``,
    each clip's bag of words (the module docstring)."""
    return torch.softmax(scale * unit_rows(tokens) @ unit_embeddings.T, dim=-1).mean(dim=1)


def bag_of_words_loss(tokens: Tensor, unit_embeddings: Tensor, targets: Tensor,
                      scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """As :func:`bag_of_words`, with ``targets (B, V)`` (rows sum to 1) -> (``L_words``
    averaged over the batch, ``p (B, V)``)."""
    probs = bag_of_words(tokens, unit_embeddings, scale)
    return -(targets * probs.clamp_min(1e-12).log()).sum(-1).mean(), probs


@contextlib.contextmanager
def _in_float32(projector: nn.Module) -> Iterator[None]:
    """Run ``projector`` in float32, then give it back its dtype and its ``requires_grad`` flags."""
    dtype = next(projector.parameters()).dtype
    trainable = [p.requires_grad for p in projector.parameters()]
    projector.float()
    try:
        yield
    finally:
        projector.to(dtype)
        for p, flag in zip(projector.parameters(), trainable):
            p.requires_grad_(flag)


def _projector(model) -> nn.Module:
    names = projector_module_names(model.hf_model, model.family)
    if len(names) != 1:
        raise ValueError(f"word alignment needs exactly one projector module, found {names}")
    return dict(model.hf_model.named_modules())[names[0]]


@torch.no_grad()
def projector_inputs(model, clips: np.ndarray, batch: int = 8) -> Tensor:
    """``clips (N, T, J, 3)`` rendered by the current renderer in ``eval()`` mode (the
    segment-middle frames, as evaluation reads them) -> what the projector receives for each
    of their frames, ``(N · T', ...)`` float32 (captured with a forward pre-hook; DINOv2-small
    at 112 px: 64 × 384 floats per frame, 265 MB for 450 clips of 6 frames)."""
    projector = _projector(model)
    was_training = model.renderer.training
    model.renderer.eval()
    store: list[Tensor] = []

    def keep(_module, args):
        store.append(args[0].detach().float())

    handle = projector.register_forward_pre_hook(keep)
    try:
        for i in range(0, len(clips), batch):
            model.image_tokens(model.pixels(torch.from_numpy(clips[i:i + batch])))
    finally:
        handle.remove()
        model.renderer.train(was_training)
    return torch.cat(store)


def frame_tokens(model, projector: nn.Module, inputs: Tensor, frames: int) -> Tensor:
    """Projector inputs of ``B · frames`` frames -> ``(B, frames · tokens, d)``, pooled like
    :meth:`SkeletonLLM.image_tokens` (whose optional norm pin changes sizes, not directions)."""
    out = projector(inputs)
    feats = pool_tokens(out.reshape(inputs.shape[0], -1, out.shape[-1]), model.settings.token_pool or 1)
    return feats.reshape(-1, frames * feats.shape[1], feats.shape[2])


def clip_tokens(model, projector: nn.Module, inputs: Tensor, chunk: int = 64) -> Iterator[Tensor]:
    """:func:`frame_tokens` of every clip in ``inputs`` (``N · T'`` frames), ``chunk`` clips at a time."""
    frames = model.num_frames
    for i in range(0, inputs.shape[0] // frames, chunk):
        yield frame_tokens(model, projector, inputs[i * frames:(i + chunk) * frames], frames)


def align_projector(model, clips: np.ndarray, labels: Sequence[str], classes: Sequence[str], *,
                    steps: int, learning_rate: float = 1e-3, batch: int = 16, seed: int = 0,
                    inputs: Tensor | None = None) -> AlignResult:
    """Train ``model``'s projector alone for ``steps`` AdamW steps of ``batch`` clips on the
    word-alignment loss (the logit scale at 10× ``learning_rate``), then rescale its output to
    a word's norm (module docstring); everything else, and which parameters train, stays as it
    is. ``labels[i]`` is clip ``i``'s class, one of ``classes``; ``inputs``:
    :func:`projector_inputs` of ``clips`` if already computed."""
    if steps < 1:
        raise ValueError(f"align steps must be >= 1, got {steps}")
    index = {c: k for k, c in enumerate(classes)}
    missing = sorted(set(labels) - set(index))
    if missing:
        raise ValueError(f"labels {missing} are not among the classes to align to")
    frames = model.num_frames
    inputs = projector_inputs(model, clips) if inputs is None else inputs
    projector = _projector(model)
    unit = unit_rows(model.hf_model.get_input_embeddings().weight.detach().float())
    targets = word_targets(class_word_ids(model.tokenizer, classes), unit.shape[0]).to(unit.device)
    y = torch.tensor([index[c] for c in labels])
    log_scale = torch.tensor(LOGIT_SCALE_INIT, device=unit.device, requires_grad=True)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    with _in_float32(projector):
        projector.requires_grad_(True)
        opt = torch.optim.AdamW([{"params": list(projector.parameters())},
                                 {"params": [log_scale], "lr": 10 * learning_rate}],
                                lr=learning_rate, weight_decay=0.0)  # fmt: skip
        for step in range(steps):
            pick = torch.randperm(len(y), generator=gen)[:batch]
            rows = (pick[:, None] * frames + torch.arange(frames)).flatten()
            scale = log_scale.clamp(max=LOGIT_SCALE_MAX).exp()
            loss, _ = bag_of_words_loss(frame_tokens(model, projector, inputs[rows.to(inputs.device)], frames),
                                        unit, targets[y[pick].to(unit.device)], scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (step + 1) % 25 == 0:
                log.info("align step %d/%d: loss %.4f, logit scale %.1f", step + 1, steps,
                         float(np.mean(losses[-25:])), scale.item())
        with torch.no_grad():
            size = torch.cat([t.norm(dim=-1).flatten() for t in clip_tokens(model, projector, inputs)]).mean()
            last = output_linear(projector)
            factor = text_embedding_norm(model.hf_model) / size.item()
            last.weight.mul_(factor)
            last.bias.mul_(factor)
    scale = log_scale.detach().clamp(max=LOGIT_SCALE_MAX).exp()
    scores = word_class_scores(model, inputs, targets, scale)
    top1 = (scores.argmax(-1) == y).float().mean().item()
    return AlignResult(steps, losses[0], losses[-1], top1, scale.item())


@torch.no_grad()
def word_class_scores(model, inputs: Tensor, targets: Tensor, scale: Tensor | float = 1 / 0.07,
                      batch: int = 64) -> Tensor:
    """Projector inputs of ``N · T'`` frames and ``targets (C, V)`` -> ``(N, C)``: each clip's
    mean log-probability of class ``k``'s words under its bag of words ``p`` at logit scale
    ``scale`` (the module docstring), i.e. ``−L_words`` against every class (on the CPU)."""
    projector = _projector(model)
    unit = unit_rows(model.hf_model.get_input_embeddings().weight.detach().float())
    targets = targets.to(unit.device)
    out = []
    with _in_float32(projector):
        for tokens in clip_tokens(model, projector, inputs, batch):
            probs = bag_of_words(tokens, unit, scale)
            out.append((probs.clamp_min(1e-12).log() @ targets.T).cpu())
    return torch.cat(out)
