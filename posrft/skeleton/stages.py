"""What each SkeletonLLM stage asks: a question source per stage (DESIGN §1 curriculum).

A source maps the clip indices of one micro-batch and an RNG to :class:`Question` rows:

* warmup / refine: multiple choice among ``num_choices`` seen classes; a share
  ``caption_fraction`` asks for the class description and a share ``naming_fraction`` for the
  class name without options instead.
* discft: YES/NO with hard negatives (description similarity, or the current model's confusion
  matrix on the training clips).
* crdistill: the teacher's rationale for the clip (computed once up front, cached on disk);
  clips whose rationale is ``None`` are never drawn, and their count is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from posrft.skeleton.config import SkeletonConfig
from posrft.skeleton.data import ActionData, ClipSet
from posrft.skeleton.model import SkeletonLLM
from posrft.skeleton.questions import (
    Question,
    captioning,
    confusion_matrix,
    cr_distill,
    description_similarity,
    hard_negatives,
    multiple_choice,
    naming,
    yes_no,
)

log = logging.getLogger("posrft.skeleton")


@dataclass
class QuestionSource:
    """``source(indices, rng) -> questions`` over ``pool`` (the clip indices it may draw)."""

    build: Callable[[Sequence[int], np.random.Generator], list[Question]]
    pool: list[int]
    stats: dict = field(default_factory=dict)

    def __call__(self, indices: Sequence[int], rng: np.random.Generator) -> list[Question]:
        return self.build(indices, rng)


def mc_source(cfg: SkeletonConfig, train: ClipSet, data: ActionData) -> QuestionSource:
    def build(idx, rng):
        out = []
        for i in idx:
            r = rng.random()
            if r < cfg.caption_fraction:
                out += captioning([i], [train.labels[i]], data.descriptions)
            elif r < cfg.caption_fraction + cfg.naming_fraction:
                out += naming([i], [train.labels[i]])
            else:
                out += multiple_choice([i], [train.labels[i]], data.seen, cfg.num_choices, rng)
        return out

    return QuestionSource(build, list(range(len(train))))


def negatives_for(cfg: SkeletonConfig, model: SkeletonLLM, train: ClipSet,
                  data: ActionData) -> dict[str, list[str]]:
    """Hard negatives among the seen classes (see :mod:`posrft.skeleton.questions`)."""
    if cfg.negative_source == "description":
        from posrft.eval.sentence import shared_embedder

        sim = description_similarity(data.seen, data.descriptions, shared_embedder())
    else:
        from posrft.skeleton.evaluate import full_predictions

        rng = np.random.default_rng(cfg.seed)
        pick = rng.choice(len(train), size=min(len(train), 8 * len(data.seen)), replace=False)
        pred = full_predictions(model, train.clips[pick], data.seen)
        sim = confusion_matrix([train.labels[i] for i in pick], pred, data.seen)
    return hard_negatives(data.seen, sim, cfg.negative_topk)


def yesno_source(cfg: SkeletonConfig, model: SkeletonLLM, train: ClipSet,
                 data: ActionData) -> QuestionSource:
    negatives = negatives_for(cfg, model, train, data)

    def build(idx, rng):
        return yes_no(idx, [train.labels[i] for i in idx], negatives, rng, cfg.positive_fraction)

    return QuestionSource(build, list(range(len(train))), {"negatives": negatives})


def rationale_source(cfg: SkeletonConfig, train: ClipSet, data: ActionData,
                     is_main: bool, wait: Callable[[], None]) -> QuestionSource:
    """Teacher rationales for every training clip (rank 0 asks the teacher and fills the cache;
    the other ranks then read the same cache)."""
    from posrft.skeleton.teachers import TeacherRequest, distill_rationales, make_teacher

    cache = Path(cfg.rationale_cache or Path(cfg.output_dir) / "rationales.jsonl")
    requests = [TeacherRequest(joints=train.clips[i], fmt=train.fmt, label=y,
                               candidates=tuple(data.seen), description=data.descriptions.get(y, ""))
                for i, y in enumerate(train.labels)]  # fmt: skip
    teacher = make_teacher(cfg.teacher_spec)
    if is_main:
        rationales, stats = distill_rationales(teacher, requests, cache)
    wait()
    if not is_main:
        rationales, stats = distill_rationales(teacher, requests, cache, cache_only=True)
    rows, skipped = cr_distill(range(len(train)), train.labels, rationales)
    by_clip = {q.clip: q for q in rows}
    if not by_clip:
        raise ValueError(f"the teacher {cfg.teacher_spec} gave no rationale for any of the "
                         f"{len(train)} training clips: nothing to distill")
    log.info("crdistill: %d rationales, %d clips without one (skipped)", len(by_clip), skipped)

    def build(idx, rng):
        return [by_clip[i] for i in idx]

    return QuestionSource(build, sorted(by_clip), {"skipped": skipped, "teacher": dict(stats)})


def make_source(cfg: SkeletonConfig, model: SkeletonLLM, train: ClipSet, data: ActionData,
                is_main: bool = True, wait: Callable[[], None] = lambda: None) -> QuestionSource:
    if cfg.stage in ("warmup", "refine"):
        return mc_source(cfg, train, data)
    if cfg.stage == "discft":
        return yesno_source(cfg, model, train, data)
    return rationale_source(cfg, train, data, is_main, wait)
