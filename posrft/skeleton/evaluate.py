"""SkeletonLLM evaluation: recognition by option likelihood, captioning, cross-format transfer.

Recognition is multiple choice without free generation: for clip ``x`` with options ``o_1..o_K``
(shown in the prompt, shuffled per clip by a fixed seed) the prediction is

    argmax_k  (1 / |o_k|) Σ_t log p(o_k,t | x, prompt, o_k,<t)      (EOS included in |o_k|)

the length-normalised log-likelihood of each option as the answer. Reported:

* ``unseen_top1``: options = all unseen classes, clips of unseen classes (zero-shot).
* ``seen_top1``: K options among the seen classes, clips of seen classes.
* ``cross_format_top1``: as ``seen_top1`` on clips of another skeleton format, rendered by the
  trained renderer carried over with :func:`~posrft.skeleton.transfer.transfer_renderer`.
* captioning: greedy answer to "Describe the action.", embedded with MiniLM; ``caption_acc`` is
  the share whose nearest class description (cosine) is the true class's, ``caption_cos`` the
  mean cosine to the true description.

Everything runs with the renderer in ``eval()`` mode (segment-middle frames: deterministic).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from posrft.skeleton.data import ClipSet
from posrft.skeleton.inputs import encode_generation_prompts, encode_targets
from posrft.skeleton.model import SkeletonLLM
from posrft.skeleton.questions import CAPTION_PROMPT, mc_options, mc_prompt
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
    """
    joints = torch.as_tensor(np.asarray(joints), dtype=torch.float32)
    if len(options) != joints.shape[0]:
        raise ValueError(f"{joints.shape[0]} clips but {len(options)} option lists")
    prompts = list(prompts) if prompts is not None else [mc_prompt(o) for o in options]
    out: list[np.ndarray] = []
    with eval_mode(model):
        for s in range(0, joints.shape[0], batch_clips):
            pix = model.pixels(joints[s:s + batch_clips])
            qs, ts, idx = [], [], []
            for b in range(pix.shape[0]):
                for o in options[s + b]:
                    qs.append(prompts[s + b])
                    ts.append(o)
                    idx.append(b)
            enc = encode_targets(model.processor, qs, ts, model.num_frames, model.image_seq_length,
                                 max_target_tokens)
            total, count = model.answer_logprobs(pix, enc.input_ids, enc.attention_mask,
                                                 enc.target_mask, torch.tensor(idx))
            scores = (total / count.clamp_min(1)).cpu().numpy()
            pos = 0
            for b in range(pix.shape[0]):
                k = len(options[s + b])
                out.append(scores[pos:pos + k])
                pos += k
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
            gen = model.hf_model.generate(
                input_ids=ids.to(model.device), attention_mask=att.to(model.device),
                pixel_values=pix.flatten(0, 1).to(model.device), max_new_tokens=max_new_tokens,
                do_sample=False, bad_words_ids=[[image_id]], pad_token_id=tok.pad_token_id,
            )  # fmt: skip
            texts += tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
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


def evaluate_all(model: SkeletonLLM, data, *, split: str, fmt: str, cross_format: str | None,
                 num_choices: int, seed: int = 0, captions: bool = False,
                 max_clips_per_class: int | None = None,
                 unseen_splits: Sequence[str] | None = None) -> dict:
    """Every metric of the module docstring on ``split`` of ``data`` (an
    :class:`~posrft.skeleton.data.ActionData`); ``max_clips_per_class`` caps clips per class.
    ``unseen_splits``: take the unseen-class clips from these splits together (unseen classes
    are never trained on, so every split is a fair test for them); default ``[split]``."""
    def cap(clipset):
        if max_clips_per_class is None:
            return clipset.clips, clipset.labels
        idx, count = [], {}
        for i, y in enumerate(clipset.labels):
            if count.get(y, 0) < max_clips_per_class:
                idx.append(i)
                count[y] = count.get(y, 0) + 1
        return clipset.clips[idx], [clipset.labels[i] for i in idx]

    main = data.get(split, fmt)
    parts = [data.get(s, fmt).subset(data.unseen) for s in (unseen_splits or [split])]
    x_u, y_u = cap(ClipSet(np.concatenate([p.clips for p in parts]),
                           [y for p in parts for y in p.labels], fmt))
    x_s, y_s = cap(main.subset(data.seen))
    unseen = mc_accuracy(model, x_u, y_u, data.unseen, k=None, seed=seed)
    seen = mc_accuracy(model, x_s, y_s, data.seen, k=num_choices, seed=seed)
    confusion: dict[str, dict[str, int]] = {c: {} for c in data.unseen}
    for y, p in zip(y_u, unseen["pred"]):
        confusion[y][p] = confusion[y].get(p, 0) + 1
    out = {"unseen_top1": unseen["top1"], "seen_top1": seen["top1"],
           "unseen_confusion": confusion,
           "chance": {"unseen": unseen["chance"], "seen": seen["chance"]},
           "n": {"unseen": unseen["n"], "seen": seen["n"]}}
    if cross_format is not None:
        x_c, y_c = cap(data.get(split, cross_format).subset(data.seen))
        cross = cross_format_accuracy(model, cross_format, x_c, y_c, data.seen, num_choices, seed)
        out["cross_format_top1"] = cross["top1"]
        out["chance"]["cross_format"] = cross["chance"]
        out["n"]["cross_format"] = cross["n"]
    if captions:
        from posrft.eval.sentence import shared_embedder

        texts = generate_captions(model, x_s)
        cap_scores = caption_scores(texts, y_s, data.seen, data.descriptions, shared_embedder())
        out["caption_acc"] = cap_scores["caption_acc"]
        out["caption_cos"] = cap_scores["caption_cos"]
        out["chance"]["caption"] = cap_scores["chance"]
        out["caption_examples"] = [{"label": y, "caption": t} for y, t in list(zip(y_s, texts))[:4]]
    return out
