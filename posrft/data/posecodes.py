"""Posecodes: elementary, checkable relations between the 3D joints of one pose (PoseScript).

A :class:`Relation` is one measurable statement about SMPL-24 joints with a truth interval,
e.g. "the angle at the left knee is in [75, 105] degrees". Its value is one of

* ``angle``    angle at ``joints[1]`` between ``joints[0]`` and ``joints[2]`` (degrees);
* ``distance`` Euclidean distance between ``joints[0]`` and ``joints[1]`` (metres);
* ``relpos``   ``p[joints[0]] - p[joints[1]]`` along axis ``axis`` of the *body frame* (metres):
  the world frame turned about the vertical so that the body faces +z (x = the body's left,
  y = up, z = forward; see :func:`body_frame`);
* ``vertical`` angle between the segment ``joints[0] -> joints[1]`` and the vertical, folded
  to [0, 90] degrees;
* ``ground``   height above the ground of the lowest support point of ``joints`` (metres),
  the ground being the lowest support point of the body (support points as in
  :mod:`posrft.data.plausibility`: a joint lowered by the thickness of the body under it);
* ``floor``    the same against a floor given per pose (a clip's floor, the prior's floor
  under a jump; :func:`estimate_floor`), or the lowest support point when none is given;
  0 for a point at or below the floor (a noisy frame dipping under it still touches it);
* ``ndistance`` / ``nrelpos``: ``distance`` / ``relpos`` at the stand-in's size: times
  ``STATURE_REF / stature`` (:func:`stature`: bone lengths, so the same in every pose);
* ``sdistance`` ``distance`` in the body's own shoulder widths (:func:`shoulder_width`);
* ``facing``   world-up component of the body's unit axis ``axis`` (0 = left, 2 = forward),
  the body axes being ``left = normalize(l_shoulder - r_shoulder + l_hip - r_hip)``,
  ``up' = normalize(neck - pelvis)``, ``forward = normalize(left x up')``.

A relation *holds* when its value lies in ``[lo, hi]``. A :class:`PosecodeDef` bins one value
into categories (PoseScript's thresholds: angles 45/75/105/135/160 deg, distances 0.2/0.4/0.8 m,
relative positions 0.15 m, vertical/horizontal 10/80 deg, on the ground < 0.08 m). A category is
*detected* only when the value is inside its interval by a margin, so a description never rests
on a borderline measurement. Super-posecodes (kneeling, squatting, lying on the back...) are
conjunctions of relations. Joints are ``(B, 24, 3)`` numpy arrays, metres, y up.

The tables of codes are in :mod:`posrft.data.posecode_defs`: version 1 (metres, the floor under
each pose) and version 2 (the default: measured against the body and the floor, plus codes for
flight, hand heights, leans and crouches). :func:`codeset` gives one, with its extractor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import roma
import torch

from posrft.body.formats import SMPL24_JOINTS
from posrft.data.plausibility import SUPPORT_OFFSET

J = {n: i for i, n in enumerate(SMPL24_JOINTS)}
INF = math.inf
_OFFSET = SUPPORT_OFFSET.numpy().astype(np.float64)
KINDS = ("angle", "distance", "relpos", "vertical", "ground", "facing", "floor", "ndistance",
         "nrelpos", "sdistance")  # fmt: skip


@dataclass(frozen=True)
class Relation:
    """One checkable statement: ``lo <= value(kind, joints, axis) <= hi`` (module docstring)."""

    kind: str
    joints: tuple[str, ...]
    lo: float
    hi: float
    axis: int = -1

    def value(self, joints: np.ndarray, ground: np.ndarray | float | None = None) -> np.ndarray:
        """The measured value per pose, (B,), for joints (B, 24, 3); ``ground``: the floor
        (``floor`` kind only; (B,), a number, or None for the pose's lowest support point)."""
        return measure(self.kind, self.joints, self.axis, _batched(joints), ground)

    def holds(self, joints: np.ndarray, ground: np.ndarray | float | None = None) -> np.ndarray:
        """Boolean (B,): the statement is true of each pose."""
        v = self.value(joints, ground)
        return (v >= self.lo) & (v <= self.hi)


def _batched(joints: np.ndarray) -> np.ndarray:
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim == 2:
        j = j[None]
    if j.ndim != 3 or j.shape[1:] != (24, 3):
        raise ValueError(f"joints shaped {np.shape(joints)}: expected (B, 24, 3) or (24, 3)")
    return j


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def body_axes(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit body axes ``left, up', forward`` (B, 3) each (module docstring, ``facing``)."""
    j = _batched(joints)
    left = _unit(j[:, J["left_shoulder"]] - j[:, J["right_shoulder"]]
                 + j[:, J["left_hip"]] - j[:, J["right_hip"]])  # fmt: skip
    up = _unit(j[:, J["neck"]] - j[:, J["pelvis"]])
    forward = _unit(np.cross(left, up))
    return left, up, forward


def heading(joints: np.ndarray) -> np.ndarray:
    """Yaw (B,) radians in [-pi, pi] of the pelvis about the world vertical.

    The pelvis frame has columns ``x = normalize(l_hip - r_hip)``, ``z = normalize(x x s)``
    with ``s = spine1 - pelvis``, ``y = z x x``; its yaw is the twist of that rotation about
    world y (quaternion ``(v, w)``: ``2 atan2(v_y, w)``), which is well defined for upright
    and lying bodies alike.
    """
    j = _batched(joints)
    x = _unit(j[:, J["left_hip"]] - j[:, J["right_hip"]])
    z = _unit(np.cross(x, j[:, J["spine1"]] - j[:, J["pelvis"]]))
    y = np.cross(z, x)
    r = torch.from_numpy(np.stack([x, y, z], axis=-1))  # (B, 3, 3), columns
    q = roma.rotmat_to_unitquat(r).numpy()  # xyzw; q and -q are the same rotation
    q = np.where(q[:, 3:] < 0, -q, q)
    return 2.0 * np.arctan2(q[:, 1], q[:, 3])


def body_frame(joints: np.ndarray) -> np.ndarray:
    """Joints (B, 24, 3) turned about the vertical through the pelvis by ``-heading``."""
    j = _batched(joints)
    psi = heading(j)
    c, s = np.cos(psi), np.sin(psi)
    # inverse yaw R_y(-psi): x' = c x - s z, z' = s x + c z
    rel = j - j[:, :1]
    out = rel.copy()
    out[..., 0] = c[:, None] * rel[..., 0] - s[:, None] * rel[..., 2]
    out[..., 2] = s[:, None] * rel[..., 0] + c[:, None] * rel[..., 2]
    return out + j[:, :1]


def support_heights(joints: np.ndarray, ground: np.ndarray | float | None = None) -> np.ndarray:
    """(B, 24) height of every joint's support point above the floor: ``y_j - o_j - g`` with
    the floor ``g`` given per pose, else the pose's lowest support point (min 0)."""
    h = _batched(joints)[..., 1] - _OFFSET
    if ground is None:
        return h - h.min(-1, keepdims=True)
    return h - np.broadcast_to(np.asarray(ground, dtype=np.float64), h.shape[:1])[:, None]


def lowest_support(joints: np.ndarray) -> np.ndarray:
    """(B,) height of each pose's lowest support point, ``min_j (y_j - o_j)``."""
    return (_batched(joints)[..., 1] - _OFFSET).min(-1)


def _bone(j: np.ndarray, a: str, b: str) -> np.ndarray:
    return np.linalg.norm(j[:, J[a]] - j[:, J[b]], axis=-1)


def stature(joints: np.ndarray) -> np.ndarray:
    """(B,) body size from bone lengths (pose-invariant): the mean leg (hip-knee-ankle) plus
    the spine, neck and head bones (pelvis-spine1-spine2-spine3-neck-head)."""
    j = _batched(joints)
    leg = 0.5 * sum(_bone(j, f"{s}_hip", f"{s}_knee") + _bone(j, f"{s}_knee", f"{s}_ankle")
                    for s in ("left", "right"))  # fmt: skip
    chain = ("pelvis", "spine1", "spine2", "spine3", "neck", "head")
    return leg + sum(_bone(j, a, b) for a, b in zip(chain, chain[1:]))


def shoulder_width(joints: np.ndarray) -> np.ndarray:
    """(B,) the shoulder girdle's length (pose-invariant): collar to collar plus each collar
    to its shoulder; the distance between the shoulders of a body with level collars."""
    j = _batched(joints)
    return (_bone(j, "left_collar", "right_collar") + _bone(j, "left_collar", "left_shoulder")
            + _bone(j, "right_collar", "right_shoulder"))  # fmt: skip


def _ref_sizes() -> tuple[float, float]:
    from posrft.body.standin import standin_rest_joints

    rest = standin_rest_joints()[None]
    return float(stature(rest)[0]), float(shoulder_width(rest)[0])


STATURE_REF, SHOULDER_REF = _ref_sizes()


def measure(kind: str, joints: tuple[str, ...], axis: int, j: np.ndarray,
            ground: np.ndarray | float | None = None) -> np.ndarray:  # fmt: skip
    """Value of one relation kind (module docstring) for joints ``j`` (B, 24, 3)."""
    idx = [J[n] for n in joints]
    if kind == "angle":
        a = j[:, idx[0]] - j[:, idx[1]]
        b = j[:, idx[2]] - j[:, idx[1]]
        cos = (_unit(a) * _unit(b)).sum(-1)
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    if kind in ("distance", "ndistance", "sdistance"):
        d = np.linalg.norm(j[:, idx[0]] - j[:, idx[1]], axis=-1)
        if kind == "ndistance":
            return d * STATURE_REF / stature(j)
        return d / shoulder_width(j) if kind == "sdistance" else d
    if kind in ("relpos", "nrelpos"):
        f = body_frame(j)
        d = f[:, idx[0], axis] - f[:, idx[1], axis]
        return d * STATURE_REF / stature(j) if kind == "nrelpos" else d
    if kind == "vertical":
        seg = _unit(j[:, idx[1]] - j[:, idx[0]])
        return np.degrees(np.arccos(np.clip(np.abs(seg[:, 1]), 0.0, 1.0)))
    if kind == "ground":
        return support_heights(j)[:, idx].min(-1)
    if kind == "floor":
        return np.maximum(support_heights(j, ground)[:, idx].min(-1), 0.0)
    if kind == "facing":
        left, _, forward = body_axes(j)
        return (left if axis == 0 else forward)[:, 1]
    raise ValueError(f"unknown relation kind {kind!r}")


def estimate_floor(clip: np.ndarray, percentile: float = 10.0) -> float:
    """The floor of a clip (T, 24, 3): the ``percentile``-th percentile over frames of each
    frame's lowest support point. One floor for the whole clip, so a frame in flight is above
    it; the low percentile (not the minimum) keeps one noisy frame from lowering it."""
    lows = lowest_support(clip)
    return float(np.percentile(lows, percentile))


@dataclass(frozen=True)
class PosecodeDef:
    """One measured quantity binned into describable categories.

    ``bins``: ``(category, lo, hi)`` truth intervals; a category is detected when the value is
    in ``[lo + margin, hi - margin]``. ``subject``: the body part it talks about (text);
    ``mirror``: key of the left/right twin (for "both ..."); ``covers``: keys made redundant
    when this one is described.
    """

    key: str
    kind: str
    joints: tuple[str, ...]
    bins: tuple[tuple[str, float, float], ...]
    margin: float
    subject: str
    axis: int = -1
    mirror: str | None = None
    covers: tuple[str, ...] = ()

    def relation(self, category: str) -> Relation:
        for name, lo, hi in self.bins:
            if name == category:
                return Relation(self.kind, self.joints, lo, hi, self.axis)
        raise KeyError(f"posecode {self.key!r} has no category {category!r}")


@dataclass(frozen=True)
class SuperDef:
    """A conjunction of component relations (each with its own detection margin)."""

    key: str
    parts: tuple[tuple[Relation, float], ...]
    subject: str = "body"
    mirror: str | None = None
    covers: tuple[str, ...] = ()

    @property
    def relations(self) -> tuple[Relation, ...]:
        return tuple(r for r, _ in self.parts)

    @property
    def kind(self) -> str:
        return "super"


# the range each kind's value can take: a bound at the range's edge needs no margin
_DOMAIN = {"angle": (0.0, 180.0), "vertical": (0.0, 90.0), "distance": (0.0, INF),
           "ground": (0.0, INF), "relpos": (-INF, INF), "facing": (-1.0, 1.0),
           "floor": (0.0, INF), "ndistance": (0.0, INF), "nrelpos": (-INF, INF),
           "sdistance": (0.0, INF)}  # fmt: skip


def _detect(values: np.ndarray, kind: str, lo: float, hi: float, margin: float) -> np.ndarray:
    """Inside ``[lo, hi]`` by ``margin`` at every bound that is a threshold (not a range edge)."""
    dom_lo, dom_hi = _DOMAIN[kind]
    lo_eff = lo + margin if lo > dom_lo else lo
    hi_eff = hi - margin if hi < dom_hi else hi
    return (values >= lo_eff) & (values <= hi_eff)


class CodeSet:
    """One version's posecodes and super-posecodes, with extraction."""

    def __init__(self, version: int, defs: list[PosecodeDef], supers: list[SuperDef]) -> None:
        self.version = version
        self.defs: tuple[PosecodeDef, ...] = tuple(defs)
        self.supers: tuple[SuperDef, ...] = tuple(supers)
        self._by_key = {d.key: d for d in self.defs} | {d.key: d for d in self.supers}

    def get(self, key: str) -> PosecodeDef | SuperDef:
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"unknown posecode {key!r} (version {self.version})") from None

    def relations_of(self, key: str, category: str) -> tuple[Relation, ...]:
        """The relations a detected ``(key, category)`` asserts."""
        d = self.get(key)
        return d.relations if isinstance(d, SuperDef) else (d.relation(category),)

    def extract(self, joints: np.ndarray, ground: np.ndarray | float | None = None
                ) -> list[dict[str, str]]:  # fmt: skip
        """Detected categories per pose: ``[{posecode key: category}, ...]`` (B entries).

        Elementary posecodes map to their detected category (absent when the value is in no
        category by the margin); super-posecodes map to ``"yes"`` when every component is
        detected. ``ground``: the floor per pose for ``floor`` relations (None: the pose's
        lowest support point).
        """
        j = _batched(joints)
        b = j.shape[0]
        if ground is not None:
            ground = np.broadcast_to(np.asarray(ground, dtype=np.float64), (b,))
        out: list[dict[str, str]] = [{} for _ in range(b)]
        cache: dict[tuple, np.ndarray] = {}

        def val(kind, joints_, axis):
            key = (kind, joints_, axis)
            if key not in cache:
                cache[key] = measure(kind, joints_, axis, j, ground)
            return cache[key]

        for d in self.defs:
            v = val(d.kind, d.joints, d.axis)
            for name, lo, hi in d.bins:
                for i in np.nonzero(_detect(v, d.kind, lo, hi, d.margin))[0]:
                    out[i][d.key] = name
        for d in self.supers:
            ok = np.ones(b, dtype=bool)
            for r, margin in d.parts:
                ok &= _detect(val(r.kind, r.joints, r.axis), r.kind, r.lo, r.hi, margin)
            for i in np.nonzero(ok)[0]:
                out[i][d.key] = "yes"
        return out

    def holds_matrix(self, joints: np.ndarray, ground: np.ndarray | float | None = None
                     ) -> tuple[list[tuple[str, str]], np.ndarray]:  # fmt: skip
        """Truth of every ``(key, category)`` statement on every pose: the codes and a bool
        matrix (B, C) (a super-posecode holds when all its relations hold, no margins)."""
        j = _batched(joints)
        codes, cols = [], []
        for d in self.defs:
            v = measure(d.kind, d.joints, d.axis, j, ground)
            for name, lo, hi in d.bins:
                codes.append((d.key, name))
                cols.append((v >= lo) & (v <= hi))
        for d in self.supers:
            ok = np.ones(j.shape[0], dtype=bool)
            for r in d.relations:
                ok &= r.holds(j, ground)
            codes.append((d.key, "yes"))
            cols.append(ok)
        return codes, np.stack(cols, 1)


@lru_cache(maxsize=2)
def codeset(version: int = 2) -> CodeSet:
    """The posecodes of ``version`` (1 or 2; :mod:`posrft.data.posecode_defs`)."""
    from posrft.data import posecode_defs as t

    if version == 1:
        return CodeSet(1, t.defs_v1(), t.supers_v1())
    if version == 2:
        return CodeSet(2, t.defs_v2(), t.supers_v2())
    raise ValueError(f"posecode version must be 1 or 2, got {version!r}")


def extract(joints: np.ndarray, ground: np.ndarray | float | None = None, *,
            version: int = 2) -> list[dict[str, str]]:  # fmt: skip
    """:meth:`CodeSet.extract` of :func:`codeset` ``(version)``."""
    return codeset(version).extract(joints, ground)


def get_def(key: str, version: int = 2) -> PosecodeDef | SuperDef:
    return codeset(version).get(key)


def relations_of(key: str, category: str, version: int = 2) -> tuple[Relation, ...]:
    return codeset(version).relations_of(key, category)


def __getattr__(name: str):
    # POSECODES / SUPER_POSECODES: the default (version 2) tables, built on first use
    if name == "POSECODES":
        return codeset(2).defs
    if name == "SUPER_POSECODES":
        return codeset(2).supers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
