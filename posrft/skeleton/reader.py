"""How the MLLM reads rendered frames: image tokens, the decoder, answer log-probabilities.

The path of a LLaVA-layout model (``llava``, ``aya_vision``) taken apart so that the pieces
that do not depend on the renderer can be shared or skipped:

    pixels (M, 3, S, S) --vision tower + projector (the model's own get_image_features)-->
        (M, g², d) --average pool p×p over the g×g token grid--> (M, (g/p)², d)
    token embeddings of the prompt, image placeholders replaced by those rows (row-major)
        --decoder--> hidden (N, L, d)
    log p(a_t) only at answer positions: the LM head runs on the few rows that predict a
    target token, not on all L (the head is 49k × 576 for SmolLM2, a quarter of its FLOPs)

:func:`option_logprobs` scores K candidate answers of the same prompt with one prefix pass:
the prompt (system turn, T' frames, question) is run once per clip with a KV cache, the cache
is indexed per option, and only the option tokens run again. Exact (same numbers as the
per-option forward up to float rounding; tests/test_skeleton_reader.py checks it against the
model's own ``forward``) whenever the weights do not change in between, i.e. in evaluation.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def decoder_of(hf_model: nn.Module) -> nn.Module:
    """The decoder stack (embeddings → layers → final norm) of an image-text model."""
    inner = getattr(hf_model, "model", None)
    lm = getattr(inner, "language_model", None)
    if lm is None:
        raise ValueError(f"{type(hf_model).__name__} has no model.language_model (not a LLaVA layout)")
    return lm


def head_of(hf_model: nn.Module) -> nn.Module:
    head = hf_model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(hf_model).__name__} has no output embeddings (LM head)")
    return head


def logit_scale(hf_model: nn.Module) -> float:
    """AyaVision multiplies its logits by ``text_config.logit_scale`` (a Cohere field)."""
    if hf_model.config.model_type != "aya_vision":
        return 1.0
    return float(getattr(hf_model.config.text_config, "logit_scale", 1.0) or 1.0)


def image_features(hf_model: nn.Module, pixels: Tensor) -> Tensor:
    """``(M, 3, S, S)`` normalised pixels -> ``(M, n, d)`` image-token embeddings (the model's
    ``get_image_features`` with its configured feature layer and CLS strategy)."""
    cfg = hf_model.config
    out = hf_model.model.get_image_features(
        pixel_values=pixels, vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    if isinstance(feats, (list, tuple)):
        feats = torch.stack(list(feats))
    return feats.reshape(pixels.shape[0], -1, feats.shape[-1])


def pool_tokens(feats: Tensor, pool: int) -> Tensor:
    """Average ``pool × pool`` blocks of the square token grid: ``(M, g², d) -> (M, (g/p)², d)``."""
    if pool == 1:
        return feats
    m, n, d = feats.shape
    g = int(round(n ** 0.5))
    if g * g != n or g % pool:
        raise ValueError(f"token_pool {pool}: {n} image tokens per frame are not a square grid "
                         f"divisible by {pool}")
    x = feats.transpose(1, 2).reshape(m, d, g, g)
    x = F.avg_pool2d(x, pool)
    return x.flatten(2).transpose(1, 2)


def embed_with_images(hf_model: nn.Module, input_ids: Tensor, image_rows: Tensor) -> Tensor:
    """Token embeddings of ``input_ids (N, L)`` with the image placeholders of row ``n`` replaced,
    in order, by ``image_rows[n] (n_img, d)``; every row must hold exactly ``n_img`` placeholders."""
    embeds = hf_model.get_input_embeddings()(input_ids)
    mask = input_ids == hf_model.config.image_token_id
    counts = mask.sum(1)
    if image_rows.shape[0] != input_ids.shape[0] or (counts != image_rows.shape[1]).any():
        raise ValueError(f"image placeholders per row {counts.tolist()} do not match the "
                         f"{image_rows.shape[1]} image tokens given for each of "
                         f"{image_rows.shape[0]} rows")
    return embeds.masked_scatter(mask[..., None], image_rows.to(embeds.dtype))


def _cache_kwarg(decoder: nn.Module) -> str:
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_decoder(decoder: nn.Module, embeds: Tensor, attention_mask: Tensor,
                position_ids: Tensor | None = None, cache: Any = None) -> Tensor:
    """Last hidden states ``(N, L, d)``; ``cache`` (a ``DynamicCache``) is filled/extended in place."""
    kwargs = {"inputs_embeds": embeds, "attention_mask": attention_mask, "use_cache": cache is not None}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None:
        kwargs[_cache_kwarg(decoder)] = cache
    return decoder(**kwargs).last_hidden_state


def target_logprobs(hf_model: nn.Module, hidden: Tensor, input_ids: Tensor,
                    target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(Σ_t m_t log p(x_t | x_<t), Σ_t m_t)`` per row, the head applied only where
    ``m_t = target_mask[:, t]`` (t ≥ 1) is set: position ``t - 1`` predicts token ``t``."""
    mask = target_mask[:, 1:].to(hidden.device)
    rows, cols = mask.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows, cols]  # (n_targets, d)
    logits = head_of(hf_model)(h).float() * logit_scale(hf_model)
    tokens = input_ids[:, 1:].to(hidden.device)[rows, cols]
    logp = logits.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    total = torch.zeros(input_ids.shape[0], dtype=logp.dtype, device=hidden.device)
    total = total.index_add(0, rows, logp)
    return total, mask.sum(1).to(total.dtype)


def _positions(attention_mask: Tensor) -> Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def option_logprobs(hf_model: nn.Module, prefix_embeds: Tensor, prefix_mask: Tensor,
                    option_ids: Tensor, option_mask: Tensor,
                    clip_index: Tensor) -> tuple[Tensor, Tensor]:
    """Summed log-probability of every option and its token count, with one prefix pass.

    ``prefix_embeds (B, Lp, d)`` / ``prefix_mask (B, Lp)``: the prompts, **left**-padded (so
    the last position of every row is its last prompt token); ``option_ids (N, Lo)`` /
    ``option_mask (N, Lo)``: the answers (EOS included), right-padded; ``clip_index (N,)``: the
    prompt row of each option. Row ``n``'s answer token ``t`` is predicted by the prompt's last
    hidden state (``t = 0``) or by the option's own hidden state at ``t - 1``.
    """
    from transformers import DynamicCache

    decoder = decoder_of(hf_model)
    device = prefix_embeds.device
    prefix_mask = prefix_mask.to(device)
    cache = DynamicCache(config=decoder.config)
    h_prefix = run_decoder(decoder, prefix_embeds, prefix_mask, _positions(prefix_mask), cache)
    clip_index = clip_index.to(device)
    cache.batch_select_indices(clip_index)
    option_ids, option_mask = option_ids.to(device), option_mask.to(device)
    mask = torch.cat([prefix_mask[clip_index], option_mask.to(prefix_mask.dtype)], 1)
    start = prefix_mask.sum(1)[clip_index]
    positions = start[:, None] + torch.arange(option_ids.shape[1], device=device)[None]
    embeds = hf_model.get_input_embeddings()(option_ids)
    h_option = run_decoder(decoder, embeds, mask, positions, cache)
    hidden = torch.cat([h_prefix[clip_index, -1:], h_option], 1)  # (N, 1 + Lo, d)
    ids = torch.cat([option_ids.new_zeros(option_ids.shape[0], 1), option_ids], 1)
    tgt = torch.cat([option_mask.new_zeros(option_mask.shape[0], 1), option_mask], 1).bool()
    return target_logprobs(hf_model, hidden, ids, tgt)


@torch.no_grad()
def greedy_decode(hf_model: nn.Module, prefix_embeds: Tensor, prefix_mask: Tensor,
                  max_new_tokens: int, eos_token_id: int, banned_ids: tuple[int, ...] = ()) -> Tensor:
    """Greedy continuation ``(B, ≤ max_new_tokens)`` of left-padded prompt embeddings (what
    ``generate(do_sample=False)`` returns after the prompt; a finished row is padded with EOS).
    ``banned_ids`` are never chosen (the image placeholder)."""
    from transformers import DynamicCache

    decoder = decoder_of(hf_model)
    head = head_of(hf_model)
    scale = logit_scale(hf_model)
    device = prefix_embeds.device
    mask = prefix_mask.to(device)
    cache = DynamicCache(config=decoder.config)
    hidden = run_decoder(decoder, prefix_embeds, mask, _positions(mask), cache)[:, -1]
    done = torch.zeros(prefix_embeds.shape[0], dtype=torch.bool, device=device)
    out = []
    for _ in range(max_new_tokens):
        logits = head(hidden).float() * scale
        if banned_ids:
            logits[:, list(banned_ids)] = float("-inf")
        token = torch.where(done, torch.full_like(done, eos_token_id, dtype=torch.long),
                            logits.argmax(-1))
        out.append(token)
        done = done | (token == eos_token_id)
        if done.all():
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = mask.sum(1, keepdim=True) - 1
        embeds = hf_model.get_input_embeddings()(token[:, None])
        hidden = run_decoder(decoder, embeds, mask, pos, cache)[:, -1]
    return torch.stack(out, 1) if out else prefix_mask.new_zeros(prefix_embeds.shape[0], 0)
