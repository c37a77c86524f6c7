"""SkeletonLLM question builders: multiple choice, YES/NO hard negatives, CR-Distill, captions."""

from __future__ import annotations

import numpy as np
import pytest

from posrft.data.action_classes import DESCRIPTIONS, action_names, zero_shot_split
from posrft.skeleton.questions import (
    CR_PROMPT,
    NO,
    YES,
    captioning,
    confusion_matrix,
    cr_distill,
    description_similarity,
    hard_negatives,
    mc_options,
    multiple_choice,
    yes_no,
)

SEEN, UNSEEN = zero_shot_split("16/4")


def test_mc_options_hold_the_label_k_distinct_and_shuffle_by_seed():
    orders = set()
    for seed in range(20):
        opts = mc_options("squat", SEEN, 4, np.random.default_rng(seed))
        assert len(opts) == len(set(opts)) == 4 and "squat" in opts and set(opts) <= set(SEEN)
        orders.add(opts.index("squat"))
    assert orders == {0, 1, 2, 3}  # the true option is not always in one place
    q = multiple_choice([7], ["bow"], SEEN, 3, np.random.default_rng(0))[0]
    assert q.clip == 7 and q.target == "bow" and all(o in q.prompt for o in q.options)
    with pytest.raises(ValueError, match="num_choices=17"):
        mc_options("squat", SEEN, 17, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not among"):
        mc_options("wave left hand", SEEN, 4, np.random.default_rng(0))


def test_hard_negatives_are_the_most_similar_descriptions():
    from posrft.eval.sentence import shared_embedder

    embed = shared_embedder()
    sim = description_similarity(SEEN, DESCRIPTIONS, embed)
    negs = hard_negatives(SEEN, sim, 3)
    # independent cosine: raw embeddings, numpy normalisation, full argsort
    e = embed([DESCRIPTIONS[c] for c in SEEN]).numpy().astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    cos = e @ e.T
    for i, c in enumerate(SEEN):
        order = [SEEN[j] for j in np.argsort(-cos[i], kind="stable") if j != i]
        assert negs[c] == order[:3]
        assert c not in negs[c]
    # the mirrored one-sided class is a hard negative of its partner when both are seen
    assert "squat" in negs["sit down"] or "squat" in negs["stand up"] or "sit down" in negs["squat"]


def test_confusion_matrix_negatives_follow_the_mistakes():
    classes = ["a", "b", "c"]
    m = confusion_matrix(["a", "a", "a", "b", "c"], ["c", "c", "a", "a", "b"], classes)
    np.testing.assert_allclose(m[0], [1 / 3, 0, 2 / 3])
    assert hard_negatives(classes, m, 1) == {"a": ["c"], "b": ["a"], "c": ["b"]}
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        hard_negatives(classes, np.zeros((2, 2)), 1)


def test_yes_no_is_about_half_positive_and_negatives_come_from_the_list():
    negs = {c: [SEEN[(i + 1) % len(SEEN)]] for i, c in enumerate(SEEN)}
    labels = [SEEN[i % len(SEEN)] for i in range(400)]
    qs = yes_no(range(400), labels, negs, np.random.default_rng(0), 0.5)
    pos = [q for q in qs if q.target == YES]
    assert 0.42 < len(pos) / len(qs) < 0.58
    for q, y in zip(qs, labels):
        asked = q.prompt.split("'")[1]
        assert asked == (y if q.target == YES else negs[y][0])
        assert q.target in (YES, NO)


def test_cr_distill_prompt_never_names_a_class_and_counts_missing_rationales():
    labels = action_names()
    rationales = [f"The knees bend. Label: {y}" if i % 3 else None for i, y in enumerate(labels)]
    qs, skipped = cr_distill(range(len(labels)), labels, rationales)
    assert skipped == sum(r is None for r in rationales) and len(qs) == len(labels) - skipped
    for q in qs:
        assert q.prompt == CR_PROMPT
        assert not any(name in q.prompt.lower() for name in labels)
        assert q.target.endswith(f"Label: {labels[q.clip]}")


def test_captioning_targets_are_class_descriptions():
    qs = captioning([0, 1], ["bow", "squat"], DESCRIPTIONS)
    assert [q.target for q in qs] == [DESCRIPTIONS["bow"], DESCRIPTIONS["squat"]]
