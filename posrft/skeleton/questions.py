"""Question/answer builders for the SkeletonLLM stages (prompts never depend on the renderer).

* multiple choice (warm-up, refinement, evaluation): K options including the true class,
  shuffled by the caller's RNG; the answer is the option text.
* YES/NO (Disc-FT): "Is the action '<label>'?"; a NO question asks about a hard negative, one
  of the ``topk`` classes most similar to the true one, by cosine similarity of the classes'
  description embeddings (MiniLM) or by a confusion matrix (how often the model mistakes the true
  class for it).
* CR-Distill: a fixed prompt that never names a class; the target is the teacher's rationale
  (ending "Label: <label>"). Clips whose rationale is ``None`` (teacher failed) are skipped.
* captioning: "Describe the action."; the target is the class description.
* naming: "What action is shown?" with no options; the target is the class name. Unlike
  multiple choice it cannot be answered by copying a listed option, so all of its loss must be
  removed by reading the frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

MC_PROMPT = "Which action is shown? Options: {options}. Answer with one option."
YESNO_PROMPT = "Is the action '{label}'? Answer yes or no."
CR_PROMPT = "Describe how the body moves, step by step, then name the action."
CAPTION_PROMPT = "Describe the action."
NAME_PROMPT = "What action is shown? Answer with its name."
YES, NO = "yes", "no"


@dataclass(frozen=True)
class Question:
    """One training/eval row: ``clip`` indexes the clip array; ``options`` only for MC."""

    clip: int
    prompt: str
    target: str
    kind: str
    options: tuple[str, ...] = ()


def mc_prompt(options: Sequence[str]) -> str:
    return MC_PROMPT.format(options="; ".join(options))


def mc_options(label: str, classes: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    """``label`` plus ``k - 1`` other classes drawn without replacement, shuffled."""
    others = [c for c in classes if c != label]
    if label not in classes:
        raise ValueError(f"label {label!r} is not among the option classes {list(classes)}")
    if k - 1 > len(others):
        raise ValueError(f"num_choices={k} but only {len(others) + 1} classes to choose from")
    picked = [others[i] for i in rng.choice(len(others), size=k - 1, replace=False)] + [label]
    return [picked[i] for i in rng.permutation(k)]


def multiple_choice(clips: Sequence[int], labels: Sequence[str], classes: Sequence[str], k: int,
                    rng: np.random.Generator) -> list[Question]:
    """One MC question per clip (``labels[i]`` is clip ``clips[i]``'s class)."""
    out = []
    for c, y in zip(clips, labels):
        opts = mc_options(y, classes, k, rng)
        out.append(Question(int(c), mc_prompt(opts), y, "mc", tuple(opts)))
    return out


def description_similarity(classes: Sequence[str], descriptions: Mapping[str, str],
                           embed: Callable[[list[str]], torch.Tensor]) -> np.ndarray:
    """``(C, C)`` cosine similarity of the classes' description embeddings."""
    missing = [c for c in classes if c not in descriptions]
    if missing:
        raise ValueError(f"no description for class(es) {missing}")
    e = embed([descriptions[c] for c in classes]).float()
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (e @ e.T).numpy().astype(np.float64)


def hard_negatives(classes: Sequence[str], similarity: np.ndarray, topk: int) -> dict[str, list[str]]:
    """Per class, the ``topk`` *other* classes with the highest ``similarity[i, j]``, most
    similar first (ties broken by class order). ``similarity`` may be a description cosine
    matrix or a confusion matrix (row = true class, column = predicted)."""
    n = len(classes)
    if similarity.shape != (n, n):
        raise ValueError(f"similarity must be ({n}, {n}) for {n} classes, got {similarity.shape}")
    if n < 2:
        raise ValueError("hard negatives need at least 2 classes")
    out = {}
    for i, c in enumerate(classes):
        order = sorted((j for j in range(n) if j != i), key=lambda j: (-similarity[i, j], j))
        out[c] = [classes[j] for j in order[: min(topk, n - 1)]]
    return out


def yes_no(clips: Sequence[int], labels: Sequence[str], negatives: Mapping[str, Sequence[str]],
           rng: np.random.Generator, positive_fraction: float = 0.5) -> list[Question]:
    """YES (about the true class) with probability ``positive_fraction``, else NO about a hard
    negative drawn uniformly from ``negatives[label]``."""
    out = []
    for c, y in zip(clips, labels):
        if rng.random() < positive_fraction:
            out.append(Question(int(c), YESNO_PROMPT.format(label=y), YES, "yesno"))
        else:
            negs = negatives[y]
            neg = negs[int(rng.integers(len(negs)))]
            out.append(Question(int(c), YESNO_PROMPT.format(label=neg), NO, "yesno"))
    return out


def cr_distill(clips: Sequence[int], labels: Sequence[str],
               rationales: Sequence[str | None]) -> tuple[list[Question], int]:
    """CR-Distill rows and the number of clips skipped because their rationale is ``None``.

    The prompt is :data:`CR_PROMPT` for every clip, so it never contains the label (checked).
    """
    out, skipped = [], 0
    for c, y, r in zip(clips, labels, rationales):
        if r is None:
            skipped += 1
            continue
        if y.lower() in CR_PROMPT.lower():  # guard against a class named like the prompt
            raise ValueError(f"the CR-Distill prompt contains the label {y!r}")
        out.append(Question(int(c), CR_PROMPT, r, "crdistill"))
    return out, skipped


def captioning(clips: Sequence[int], labels: Sequence[str],
               descriptions: Mapping[str, str]) -> list[Question]:
    return [Question(int(c), CAPTION_PROMPT, descriptions[y], "caption") for c, y in zip(clips, labels)]


def naming(clips: Sequence[int], labels: Sequence[str]) -> list[Question]:
    return [Question(int(c), NAME_PROMPT, y, "name") for c, y in zip(clips, labels)]


def confusion_matrix(true: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """``(C, C)`` row-normalised counts: ``M[i, j]`` = share of class ``i`` predicted as ``j``."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)))
    for t, p in zip(true, pred):
        m[index[t], index[p]] += 1
    return m / np.maximum(m.sum(1, keepdims=True), 1)
