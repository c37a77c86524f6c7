"""Catalogue of the procedural action classes: names, descriptions, zero-shot splits, motions.

Every class is an :class:`ActionClass` (``name``, one-sentence ``description``) in the fixed
order of :data:`ACTION_CLASSES`; a class's label id is its index there. Names and descriptions
are *compositional*: built from one small vocabulary of body parts (left / right / both, hand,
arm, leg, foot, knees, head, torso, hips) and motions (raise, lower, swing, bend, rotate, move up
and down), so the words of a class held out for zero-shot recognition also occur in the classes
that are seen (``wave left hand`` <- ``wave right hand`` + ``kick left leg``).

Zero-shot splits (:func:`zero_shot_split`): the presets ``"16/4"`` and ``"12/8"`` give exactly
that many seen / unseen classes (so they use 20 of the classes; the others take no part in
that protocol), chosen so that every word of an unseen class's name and description occurs in
some seen class (:func:`uncovered_words` is empty). Their unseen classes are mostly mirror
images of seen ones (``wave left hand`` / ``wave right hand``). ``"novel"`` holds out five
verb x body-part compositions none of which is a mirror of a seen class (``swing left leg``
with ``swing right arm``, ``kick left leg`` seen; :func:`mirrored_unseen` is empty), and
``"novel/mirror"`` four mirror images under the same seen classes. ``"random:K:SEED"`` holds out
``K`` random classes (all others are seen) under the same word-coverage rule.

The motion script of each class is in :mod:`posrft.data.action_motions`;
:mod:`posrft.data.actions` turns it into joints by forward kinematics.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ActionClass:
    """One action class: ``name`` (the label text) and a one-sentence ``description``."""

    name: str
    description: str


def _pair(template: str, text: str) -> tuple[ActionClass, ActionClass]:
    """The left and right version of a one-sided class (``{s}`` = side, ``{o}`` = other side)."""
    return tuple(
        ActionClass(template.format(s=s, o=o), text.format(s=s, o=o))
        for s, o in (("left", "right"), ("right", "left"))
    )  # type: ignore[return-value]


ACTION_CLASSES: tuple[ActionClass, ...] = (
    *_pair("wave {s} hand", "raise the {s} arm and shake the {s} hand from side to side"),
    ActionClass("clap hands", "bring both hands together in front of the body again and again"),
    ActionClass("squat", "bend both knees to lower the hips as if to sit then stand up again"),
    ActionClass("jump up", "start with both knees bent then push off so both feet leave the "
                "ground and land again"),  # fmt: skip
    *_pair("kick {s} leg", "swing the {s} leg forward and up then lower the {s} leg"),
    *_pair("punch {s} hand", "move the {s} hand forward fast with a straight {s} arm again "
           "and again"),  # fmt: skip
    ActionClass("bow", "bend the torso forward from the hips then raise the torso up again"),
    ActionClass("raise both arms", "raise both arms up over the head then lower both arms"),
    ActionClass("turn around", "rotate the whole body to the left until the body faces back"),
    ActionClass("walk in place", "raise the left knee and the right knee in turn while both "
                "arms swing"),  # fmt: skip
    ActionClass("sit down", "bend both knees and lower the hips as if to sit then stay low"),
    ActionClass("stand up", "start low with both knees bent then raise the hips up and stand "
                "straight"),  # fmt: skip
    *_pair("raise {s} arm", "raise the {s} arm up over the head then lower the {s} arm"),
    ActionClass("touch toes", "bend the torso forward and down so both hands move to the feet"),
    ActionClass("arm circles", "hold both arms out to the side and circle both arms round and "
                "round"),  # fmt: skip
    *_pair("bend torso {s}", "bend the torso to the {s} side with the {o} arm over the head "
           "then raise the torso up again"),  # fmt: skip
    *_pair("lunge {s} leg", "step the {s} leg forward and bend both knees to lower the hips"),
    *_pair("hop on {s} foot", "raise the {o} foot and move the body up and down on the {s} "
           "foot"),  # fmt: skip
    ActionClass("nod head", "bend the head forward and down then raise the head up again and "
                "again"),  # fmt: skip
    ActionClass("twist torso", "rotate the torso to the left and to the right while the hips "
                "stay still"),  # fmt: skip
    # verb x body-part compositions (the "novel" zero-shot split holds some of them out)
    *_pair("swing {s} arm", "swing the straight {s} arm forward and back again and again"),
    *_pair("swing {s} leg", "swing the {s} leg forward and back again and again on the {o} "
           "foot"),  # fmt: skip
    *_pair("raise {s} leg", "raise the straight {s} leg forward and up then lower the {s} leg"),
    *_pair("circle {s} arm", "hold the {s} arm out to the side and circle the {s} arm round and "
           "round"),  # fmt: skip
    ActionClass("shake head", "turn the head to the left and to the right again and again"),
    ActionClass("swing both arms", "swing both straight arms forward and back together again and "
                "again"),  # fmt: skip
)

ACTION_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(ACTION_CLASSES)}
DESCRIPTIONS: dict[str, str] = {c.name: c.description for c in ACTION_CLASSES}


def action_names() -> list[str]:
    """Class names in label-id order."""
    return [c.name for c in ACTION_CLASSES]


def check_class_list(names: Sequence[str]) -> list[str]:
    """``names`` as a list after checking it is non-empty, without duplicates and all known.

    Raises ``ValueError`` naming every duplicate and every unknown name (with close matches).
    """
    if isinstance(names, str):
        raise ValueError(
            f"class list: expected a sequence of class names, got the string {names!r}"
        )
    names = list(names)
    if not names:
        raise ValueError("class list is empty: expected at least one action class name")
    problems = []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"duplicate class names {dupes}")
    for n in names:
        if n not in ACTION_INDEX:
            close = difflib.get_close_matches(str(n), list(ACTION_INDEX), n=2)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            problems.append(f"unknown class name {n!r}{hint}")
    if problems:
        raise ValueError(
            "class list: " + "; ".join(problems) + f". Known classes: {', '.join(ACTION_INDEX)}"
        )
    return names


# ------------------------------------------------------------------------------ zero-shot splits


def class_words(name: str) -> set[str]:
    """Lower-case words of a class's name and description."""
    text = f"{name} {DESCRIPTIONS[name]}".lower()
    return set(re.findall(r"[a-z]+", text))


def uncovered_words(seen: Sequence[str], unseen: Sequence[str]) -> dict[str, list[str]]:
    """Per unseen class, the words of its name/description that no seen class uses (sorted)."""
    vocab = set().union(*(class_words(n) for n in check_class_list(seen)))
    out = {}
    for n in check_class_list(unseen):
        missing = sorted(class_words(n) - vocab)
        if missing:
            out[n] = missing
    return out


_UNSEEN_4 = ("wave left hand", "kick right leg", "raise right arm", "lunge right leg")
_SEEN_16 = (
    "wave right hand", "kick left leg", "raise left arm", "lunge left leg", "clap hands",
    "squat", "jump up", "punch right hand", "bow", "raise both arms", "turn around",
    "walk in place", "sit down", "touch toes", "bend torso left", "hop on left foot",
)  # fmt: skip
_UNSEEN_8 = (
    "wave left hand", "kick right leg", "raise right arm", "lunge right leg",
    "punch left hand", "bend torso right", "hop on right foot", "stand up",
)  # fmt: skip
_SEEN_12 = (
    "wave right hand", "kick left leg", "raise left arm", "lunge left leg",
    "punch right hand", "bend torso left", "hop on left foot", "squat", "sit down",
    "raise both arms", "bow", "jump up",
)  # fmt: skip
#: "novel": the unseen classes are verb x body-part compositions that no seen class shows, and
#: none is the mirror image of a seen class (their mirror twins take no part); every word of
#: their names occurs in the seen classes (swing: swing left/right arm; raise; circle: arm
#: circles; shake: wave; leg, arm, head, both). "novel/mirror" has the same seen classes and
#: holds out mirror images of seen ones instead, so one training run is tested on both.
_SEEN_NOVEL = (
    "wave right hand", "clap hands", "squat", "jump up", "kick left leg", "punch right hand",
    "bow", "raise both arms", "turn around", "walk in place", "sit down", "stand up",
    "raise left arm", "raise right arm", "touch toes", "arm circles", "bend torso left",
    "bend torso right", "lunge left leg", "hop on left foot", "hop on right foot", "nod head",
    "twist torso", "swing left arm", "swing right arm",
)  # fmt: skip
_UNSEEN_NOVEL = ("swing left leg", "raise right leg", "circle right arm", "shake head",
                 "swing both arms")  # fmt: skip
_UNSEEN_MIRROR = ("wave left hand", "kick right leg", "punch left hand", "lunge right leg")
ZERO_SHOT_SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "16/4": (_SEEN_16, _UNSEEN_4),
    "12/8": (_SEEN_12, _UNSEEN_8),
    "novel": (_SEEN_NOVEL, _UNSEEN_NOVEL),
    "novel/mirror": (_SEEN_NOVEL, _UNSEEN_MIRROR),
}


def mirror_of(name: str) -> str | None:
    """The class whose name swaps ``left`` and ``right`` (``None`` for a symmetric class)."""
    swap = {"left": "right", "right": "left"}
    words = name.split()
    if not any(w in swap for w in words):
        return None
    other = " ".join(swap.get(w, w) for w in words)
    return other if other in ACTION_INDEX else None


def mirrored_unseen(seen: Sequence[str], unseen: Sequence[str]) -> list[str]:
    """The unseen classes whose mirror image is a seen class (what side-blind recognition of
    the seen classes already names correctly, up to the side)."""
    keep = set(seen)
    return [u for u in unseen if mirror_of(u) in keep]


def zero_shot_split(name: str = "16/4") -> tuple[list[str], list[str]]:
    """``(seen, unseen)`` class names of a preset (``"16/4"``, ``"12/8"``, ``"novel"``,
    ``"novel/mirror"``) or ``"random:K:SEED"``.

    Random splits hold out ``K`` classes drawn with ``numpy.random.default_rng(SEED)`` (the
    first draw, out of at most 10,000, whose unseen words are all covered); every other class
    is seen. Both lists are in label-id order.
    """
    order = ACTION_INDEX.__getitem__
    if name in ZERO_SHOT_SPLITS:
        seen, unseen = ZERO_SHOT_SPLITS[name]
        return sorted(seen, key=order), sorted(unseen, key=order)
    m = re.fullmatch(r"random:(\d+):(-?\d+)", str(name))
    if m is None:
        raise ValueError(
            f"zero-shot split {name!r}: expected one of {list(ZERO_SHOT_SPLITS)} or "
            "'random:K:SEED' (e.g. 'random:5:0')"
        )
    k, seed = int(m.group(1)), int(m.group(2))
    n = len(ACTION_CLASSES)
    if not 1 <= k < n:
        raise ValueError(f"zero-shot split {name!r}: K must be in [1, {n - 1}], got {k}")
    rng = np.random.default_rng(seed)
    names = action_names()
    for _ in range(10_000):
        held = set(rng.choice(n, size=k, replace=False).tolist())
        unseen = [names[i] for i in sorted(held)]
        seen = [names[i] for i in range(n) if i not in held]
        if not uncovered_words(seen, unseen):
            return seen, unseen
    raise ValueError(
        f"zero-shot split {name!r}: found no {k} unseen classes whose words all occur in the "
        "seen classes; use a smaller K"
    )
