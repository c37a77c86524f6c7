"""Automatic pose captions from posecodes (PoseScript's pipeline, compact).

``caption_pose(joints, rng)`` runs, for one pose (24, 3):

1. **extraction** -- detected posecodes and super-posecodes (:func:`posecodes.extract`);
2. **selection** (:mod:`posrft.data.caption_select`) -- drop codes made redundant by a
   detected super-posecode or implied by another (hand above the head => above the shoulder);
   draw ``k ~ U{min_codes..max_codes}``; version 2 (the default) states, step by step, the
   code that rules out the largest rarity-weighted share of a reference sample of the prior
   (the pose's nearest poses weighted up; a referring expression), version 1 the rarest
   codes; at most one whole-body code (kneeling, lying...);
3. **aggregation** -- a left and a right code of the same category become one "both ..."
   clause (when only one side was drawn, its detected twin joins it half of the time), and
   codes of the same kind and category on different joints share one clause 70 % of the time
   ("the left elbow and both knees are bent at a right angle");
4. **phrasing** -- every code has several templates (copula predicates, so each can be said
   as "the left knee is bent" or, after "with"/"has", as "the left knee bent"); clauses are
   shuffled into 1-3 sentences with varied subjects and connectors.

Every :class:`Clause` keeps the ``(key, category)`` codes and the :class:`Relation`s it asserts,
so each statement can be re-checked on the pose (with the caption's ``ground``, the floor the
``floor`` relations were measured against). Randomness comes only from the ``rng`` argument
(``numpy.random.Generator``); :func:`caption_poses` seeds one per pose from ``(seed, index)``.

Versions: 1 is the first captioner (PoseScript's posecodes in metres, the floor under each
pose, rarity selection); 2 (the default) measures against the body (shoulder widths, stature)
and a floor given per pose or estimated per clip (:func:`caption_clip`), can say that the body
is in the air, and selects distinctive statements (:mod:`posrft.data.posecode_defs`,
:mod:`posrft.data.caption_select`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posrft.data import caption_select as sel
from posrft.data import posecodes as pc
from posrft.data.caption_select import code_frequencies  # noqa: F401  (re-exported)

VERSIONS = (1, 2)


@dataclass(frozen=True)
class Clause:
    """One statement: its text (copula form) and the relations it asserts."""

    text: str
    with_text: str
    codes: tuple[tuple[str, str], ...]
    relations: tuple[pc.Relation, ...]
    whole_body: bool = False


@dataclass(frozen=True)
class Caption:
    """A caption: its text, its clauses, and the floor its ``floor`` relations used (None:
    each pose's own lowest support point)."""

    text: str
    clauses: tuple[Clause, ...]
    ground: float | None = None

    @property
    def relations(self) -> tuple[pc.Relation, ...]:
        return tuple(r for c in self.clauses for r in c.relations)

    @property
    def codes(self) -> tuple[tuple[str, str], ...]:
        return tuple(code for c in self.clauses for code in c.codes)


SUBJECTS = ("The person", "Someone", "This person", "The figure", "The subject", "A person",
            "The human")  # fmt: skip

ANGLE_TEXT = {
    "completely bent": ("completely bent", "fully bent", "bent as far as it goes"),
    "almost completely bent": ("almost completely bent", "strongly bent", "sharply bent"),
    "bent at a right angle": ("bent at a right angle", "bent at about ninety degrees",
                              "bent in an L shape"),
    "partially bent": ("partially bent", "somewhat bent", "half bent"),
    "slightly bent": ("slightly bent", "a little bent", "barely bent"),
    "straight": ("straight", "extended", "unbent"),
}  # fmt: skip
PAIR_TEXT = {
    "close": ("close together", "near each other", "together"),
    "shoulder width": ("about shoulder width apart", "roughly shoulder-width apart"),
    "spread": ("spread apart", "apart from each other", "held apart"),
    "wide": ("wide apart", "far apart", "spread wide"),
}
NEAR_TEXT = ("close to {x}", "near {x}", "next to {x}")
VERT_TEXT = {
    "vertical": ("vertical", "perpendicular to the ground"),
    "horizontal": ("horizontal", "parallel to the ground", "level with the ground"),
    "upright": ("upright", "vertical", "held straight up"),
}
GROUND_TEXT = {
    "on the ground": ("on the ground", "touching the ground", "resting on the floor",
                      "on the floor"),
    "off the ground": ("off the ground", "lifted off the ground", "raised off the floor",
                       "up in the air"),
}  # fmt: skip
REL_TEXT = {
    ("hand", "head", "above"): ("above the head", "raised above the head", "higher than the head"),
    ("hand", "shoulder", "above"): ("above the {s} shoulder", "raised above the {s} shoulder",
                                    "higher than the {s} shoulder"),
    ("hand", "hip", "below"): ("below the {s} hip", "lower than the {s} hip"),
    ("hand", "back", "behind"): ("behind the back", "behind the body"),
    ("hand", "front", "in front"): ("stretched out in front of the body",
                                    "reaching out in front", "far in front of the body"),
    ("foot", "hip", "above"): ("raised above the {s} hip", "higher than the {s} hip"),
    ("knee", "hip", "above"): ("raised above the {s} hip", "higher than the {s} hip"),
    ("foot", "body", "in front"): ("far in front of the body", "placed well forward"),
    ("foot", "body", "behind"): ("far behind the body", "stretched back behind the body"),
    ("hand", "chest", "yes"): ("in front of the chest", "held in front of the chest"),
}  # fmt: skip
LEVEL_TEXT = {
    "head": ("at head height", "raised to head height", "level with the head"),
    "shoulder": ("at shoulder height", "held at shoulder height"),
    "chest": ("at chest height", "held at chest height"),
    "hip": ("at hip height", "level with the hips"),
}
# relative positions phrased against the same side's joint cannot merge into "both ..."
_SIDE_REFERENCED = {"shoulder", "hip"}
PAIR_REL_TEXT = {
    "above": ("higher than the {o}", "above the {o}"),
    "below": ("lower than the {o}", "below the {o}"),
    "in front": ("in front of the {o}", "further forward than the {o}"),
    "behind": ("behind the {o}", "further back than the {o}"),
    "crossed": ("crossed", "crossed over each other"),
}
WHOLE_BODY_TEXT = {
    "lying:back": ("is lying on their back", "is lying face up", "lies on the back"),
    "lying:front": ("is lying face down", "is lying on their stomach", "lies on the front"),
    "lying:left_side": ("is lying on their left side", "lies on the left side"),
    "lying:right_side": ("is lying on their right side", "lies on the right side"),
    "kneeling": ("is kneeling", "is kneeling on both knees", "kneels on the ground"),
    "kneel:left": ("is kneeling on the left knee", "is down on the left knee"),
    "kneel:right": ("is kneeling on the right knee", "is down on the right knee"),
    "squatting": ("is squatting", "is in a squat", "crouches down"),
    "sitting:ground": ("is sitting on the ground", "sits on the floor"),
    "one_leg:left": ("is standing on the left leg", "balances on the left leg",
                     "stands on the left foot only"),
    "one_leg:right": ("is standing on the right leg", "balances on the right leg",
                      "stands on the right foot only"),
    "lean:forward": ("is leaning forward", "bends forward", "leans the upper body forward"),
    "lean:backward": ("is leaning backward", "leans back"),
    "lean:left": ("is leaning to their left", "leans to the left side"),
    "lean:right": ("is leaning to their right", "leans to the right side"),
    "airborne": ("is in the air", "is in mid-air", "has left the ground"),
    "jumping": ("is jumping", "is in mid-air in a jump", "is jumping off the ground"),
    "lean:forward_far": ("is bent far forward", "leans far forward",
                         "leans the upper body far forward"),
    "crouching": ("is crouching with the torso leaning forward", "is in a half crouch, "
                  "leaning forward", "crouches, leaning the upper body forward"),
    "half_squat": ("is in a half squat", "is half squatting", "stands with the knees bent "
                   "in a half squat"),
}  # fmt: skip
_PLURAL = {"knee": "knees", "elbow": "elbows", "hand": "hands", "foot": "feet", "thigh": "thighs",
           "shin": "shins", "upper arm": "upper arms", "forearm": "forearms"}  # fmt: skip
_NEAR_TARGET = {"head": ("the head", "the head"), "hip": (None, "the hips"),
                "knee": (None, "the knees"), "foot": (None, "the feet"),
                "shoulder": (None, None), "elbow": (None, None)}  # fmt: skip


def _side_part(subject: str) -> tuple[str | None, str]:
    for s in ("left", "right"):
        if subject.startswith(s + " "):
            return s, subject[len(s) + 1 :]
    return None, subject


def _predicates(key: str, category: str, plural: bool, version: int = 2) -> tuple[str, ...]:
    """Template predicates (after "is/are") for one code."""
    d = pc.get_def(key, version)
    kind, parts = d.kind, key.split(":")
    if kind == "angle":
        return ANGLE_TEXT[category]
    if key.startswith("dist:"):
        return PAIR_TEXT[category]
    if key.startswith("level:"):
        return LEVEL_TEXT[parts[2]]
    if key.startswith("near:"):
        target = parts[2]
        side, part = _side_part(target.replace("_", " "))
        single, many = _NEAR_TARGET[part]
        x = (many if plural else single) or f"the {target.replace('_', ' ')}"
        return tuple(t.format(x=x) for t in NEAR_TEXT)
    if kind == "vertical":
        return VERT_TEXT[category]
    if kind in ("ground", "floor"):
        return GROUND_TEXT[category]
    if key.startswith("rel:") and len(parts) == 3 and parts[1] in ("hands", "feet", "knees"):
        other = {"hands": "right hand", "feet": "right foot", "knees": "right knee"}[parts[1]]
        return tuple(t.format(o=other) for t in PAIR_REL_TEXT[category])
    if key.startswith("rel:"):
        side, part = _side_part(parts[1].replace("_", " "))
        return tuple(t.format(s=side) for t in REL_TEXT[(part, parts[2], category)])
    raise KeyError(f"no template for posecode {key!r}")


def _subject_text(subject: str, rng: np.random.Generator, both: bool) -> tuple[str, bool]:
    """Noun phrase for a body part and whether it is plural."""
    side, part = _side_part(subject)
    det = "the" if rng.random() < 0.7 else "their"
    if both:
        word = _PLURAL.get(part, part + "s")
        return (f"both {word}" if rng.random() < 0.5 else f"{det} {word}"), True
    plural = part in ("hands", "feet", "knees", "elbows", "legs")
    return f"{det} {subject}", plural


def _clause(groups: list[list[tuple[str, str]]], rng: np.random.Generator,
            version: int = 2) -> Clause:  # fmt: skip
    """One clause for one or more subject groups sharing a category.

    A group is one code or a left+right pair ("both knees"); several groups share one
    predicate when their kind's templates do not depend on the joint ("the left elbow and
    both knees are bent at a right angle").
    """
    codes = [c for g in groups for c in g]
    key, cat = codes[0]
    rels = tuple(r for k, c in codes for r in pc.relations_of(k, c, version))
    if key in WHOLE_BODY_TEXT:
        pred = str(rng.choice(WHOLE_BODY_TEXT[key]))
        return Clause(pred, pred, tuple(codes), rels, whole_body=True)
    nouns, plural = [], len(groups) > 1
    for g in groups:
        noun, many = _subject_text(pc.get_def(g[0][0], version).subject, rng, len(g) == 2)
        nouns.append(noun)
        plural |= many
    noun = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
    pred = str(rng.choice(_predicates(key, cat, len(groups[0]) == 2, version)))
    be = "are" if plural else "is"
    return Clause(f"{noun} {be} {pred}", f"{noun} {pred}", tuple(codes), rels)


def _group(
    chosen: list[tuple[str, str]], detected: dict[str, str], rng: np.random.Generator,
    version: int = 2,
) -> list[list[tuple[str, str]]]:
    """Pair left/right codes of the same category (adding a detected twin half of the time)."""
    groups, used = [], set()
    for key, cat in chosen:
        if key in used:
            continue
        used.add(key)
        d = pc.get_def(key, version)
        twin = d.mirror
        pairable = twin is not None and key not in WHOLE_BODY_TEXT and _mergeable(key)
        if pairable and detected.get(twin) == cat and (
            (twin, cat) in chosen or rng.random() < 0.5
        ):
            used.add(twin)
            groups.append([(key, cat), (twin, cat)])
        else:
            groups.append([(key, cat)])
    return groups


# kinds whose templates do not name the joint, so different joints can share one clause
_SHARED_PREDICATE_KINDS = ("angle", "vertical", "ground", "floor")


def _merge_same(groups: list[list[tuple[str, str]]], rng: np.random.Generator, p: float = 0.7,
                version: int = 2):  # fmt: skip
    """Entity aggregation: groups of the same kind and category become one clause (prob ``p``)."""
    buckets: dict[tuple[str, str], list[int]] = {}
    for i, g in enumerate(groups):
        key, cat = g[0]
        if key in WHOLE_BODY_TEXT:
            continue
        kind = pc.get_def(key, version).kind
        if kind in _SHARED_PREDICATE_KINDS:
            buckets.setdefault((kind, cat), []).append(i)
    merged_into: dict[int, int] = {}
    for idx in buckets.values():
        if len(idx) > 1 and rng.random() < p:
            for i in idx[1:]:
                merged_into[i] = idx[0]
    out: dict[int, list] = {}
    for i, g in enumerate(groups):
        out.setdefault(merged_into.get(i, i), []).append(g)
    return [out[i] for i in sorted(out)]


def _mergeable(key: str) -> bool:
    if key.startswith("rel:") and key.split(":")[-1] in _SIDE_REFERENCED:
        return False
    if key.startswith("near:"):
        part = _side_part(key.split(":")[2].replace("_", " "))[1]
        return _NEAR_TARGET[part][1] is not None
    return True


def _join(parts: list[str], rng: np.random.Generator, bare: bool = False) -> str:
    """Join clauses; ``bare`` clauses (no verb, after "with"/"has") only take "and"."""
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        links = [" and ", ", and "] if bare else [" and ", ", while ", ", and ", "; "]
        return f"{parts[0]}{rng.choice(links)}{parts[1]}"
    return ", ".join(parts[:-1]) + ", and " + parts[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _compose(clauses: list[Clause], rng: np.random.Generator) -> str:
    """Clauses into 1-3 sentences: "<Subject> <whole-body> with ..." or "<Subject> has ..."."""
    whole = [c for c in clauses if c.whole_body]
    parts = [clauses[i] for i in rng.permutation(len(clauses)) if not clauses[i].whole_body]
    subject = str(rng.choice(SUBJECTS))
    if whole:
        take = min(len(parts), int(rng.integers(0, 3)))
        first = f"{subject} {whole[0].text}"
        if take:
            first += str(rng.choice([", with ", " with "]))
            first += _join([c.with_text for c in parts[:take]], rng, bare=True)
    else:
        take = min(len(parts), int(rng.integers(1, 3)))
        first = f"{subject} has " + _join([c.with_text for c in parts[:take]], rng, bare=True)
    sentences, later = [first], parts[take:]
    while later:
        n = 1 if len(later) == 1 else int(rng.integers(1, 3))
        sentences.append(_cap(_join([c.text for c in later[:n]], rng)))
        later = later[n:]
    return " ".join(f"{x}." for x in sentences)


def caption_from_codes(
    detected: dict[str, str],
    rng: np.random.Generator,
    *,
    min_codes: int = 2,
    max_codes: int = 5,
    version: int = 2,
    distractors: tuple[sel.ContrastPool, np.ndarray] | None = None,
    ground: float | None = None,
) -> Caption:
    """Caption from a pose's detected codes (one entry of :func:`posecodes.extract`).

    ``distractors``: ``(pool, weights (N,))``, the contrast pool and this pose's distractor
    weights (:mod:`posrft.data.caption_select`), for the distinctive selection; without them
    (or with ``version=1``) the codes are chosen by rarity. ``ground``: recorded in the
    caption.
    """
    if not 1 <= min_codes <= max_codes:
        raise ValueError(f"need 1 <= min_codes <= max_codes, got {min_codes}, {max_codes}")
    if version not in VERSIONS:
        raise ValueError(f"captioner version must be one of {VERSIONS}, got {version!r}")
    whole = frozenset(WHOLE_BODY_TEXT)
    if version == 2 and distractors is not None:
        pool, weights = distractors
        chosen = sel.select_distinctive(detected, rng, min_codes, max_codes, whole, pool,
                                        weights)  # fmt: skip
    else:
        chosen = sel.select_by_rarity(detected, rng, min_codes, max_codes, whole, version)
    if not chosen:
        raise ValueError("caption: no posecode detected for this pose")
    groups = _merge_same(_group(chosen, detected, rng, version), rng, version=version)
    clauses = [_clause(gs, rng, version) for gs in groups]
    return Caption(_compose(clauses, rng), tuple(clauses), ground)


def _check_joints(joints: np.ndarray) -> np.ndarray:
    j = np.asarray(joints)
    if j.ndim != 3 or j.shape[1:] != (24, 3):
        raise ValueError(f"joints shaped {j.shape}: expected (B, 24, 3)")
    return j


def _grounds(ground, n: int) -> np.ndarray | None:
    if ground is None:
        return None
    g = np.broadcast_to(np.asarray(ground, dtype=np.float64), (n,))
    if not np.isfinite(g).all():
        raise ValueError("ground: expected finite floor heights")
    return g


def caption_poses(
    joints: np.ndarray,
    seed: int = 0,
    *,
    ground: np.ndarray | float | None = None,
    version: int = 2,
    pool: sel.ContrastPool | None = None,
    salt: tuple[int, ...] = (),
    **kw,
) -> list[Caption]:
    """Captions for poses (B, 24, 3); pose ``i`` uses ``default_rng([seed, i, *salt])``.

    ``ground``: the floor per pose (B,) or one number (None: each pose's lowest support point;
    version 1 always uses that). ``pool``: the contrast pool of the distinctive selection
    (default :func:`caption_select.default_pool`). Other keywords go to
    :func:`caption_from_codes`.
    """
    j = _check_joints(joints)
    if version not in VERSIONS:
        raise ValueError(f"captioner version must be one of {VERSIONS}, got {version!r}")
    g = _grounds(ground, len(j)) if version == 2 else None
    codes = pc.extract(j, g, version=version)
    out = []
    if version == 2:
        pool = pool or sel.default_pool()
        weights = pool.distractors(j)
    for i, c in enumerate(codes):
        dis = (pool, weights[i]) if version == 2 else None
        out.append(caption_from_codes(
            c, np.random.default_rng([seed, i, *salt]), version=version, distractors=dis,
            ground=None if g is None else float(g[i]), **kw))  # fmt: skip
    return out


def caption_pose(joints: np.ndarray, rng: np.random.Generator, *, ground: float | None = None,
                 version: int = 2, **kw) -> Caption:  # fmt: skip
    """Caption one pose (24, 3) (module docstring); every clause is true of the pose."""
    j = _check_joints(np.asarray(joints)[None])
    g = _grounds(ground, 1) if version == 2 else None
    codes = pc.extract(j, g, version=version)[0]
    dis = None
    if version == 2:
        pool = sel.default_pool()
        dis = (pool, pool.distractors(j)[0])
    return caption_from_codes(codes, rng, version=version, distractors=dis,
                              ground=None if g is None else float(g[0]), **kw)  # fmt: skip


def caption_clip(clip: np.ndarray, seed: int = 0, *, ground: float | None = None,
                 **kw) -> list[Caption]:  # fmt: skip
    """Captions of every frame of a clip (T, 24, 3) against ONE floor: ``ground`` or
    :func:`posecodes.estimate_floor` of the clip, so frames in flight are "in the air"."""
    c = _check_joints(clip)
    floor = pc.estimate_floor(c) if ground is None else float(ground)
    return caption_poses(c, seed, ground=floor, **kw)
