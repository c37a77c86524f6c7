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
* ``facing``   world-up component of the body's unit axis ``axis`` (0 = left, 2 = forward),
  the body axes being ``left = normalize(l_shoulder - r_shoulder + l_hip - r_hip)``,
  ``up' = normalize(neck - pelvis)``, ``forward = normalize(left x up')``.

A relation *holds* when its value lies in ``[lo, hi]``. A :class:`PosecodeDef` bins one value
into categories (PoseScript's thresholds: angles 45/75/105/135/160 deg, distances 0.2/0.4/0.8 m,
relative positions 0.15 m, vertical/horizontal 10/80 deg, on the ground < 0.08 m). A category is
*detected* only when the value is inside its interval by a margin, so a description never rests
on a borderline measurement. Super-posecodes (kneeling, squatting, lying on the back...) are
conjunctions of relations. Joints are ``(B, 24, 3)`` numpy arrays, metres, y up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import roma
import torch

from posrft.body.formats import SMPL24_JOINTS
from posrft.data.plausibility import SUPPORT_OFFSET

J = {n: i for i, n in enumerate(SMPL24_JOINTS)}
INF = math.inf
_OFFSET = SUPPORT_OFFSET.numpy().astype(np.float64)
GROUND_JOINTS = {
    "left_foot": ("left_ankle", "left_foot"), "right_foot": ("right_ankle", "right_foot"),
    "left_knee": ("left_knee",), "right_knee": ("right_knee",),
    "left_hand": ("left_wrist", "left_hand"), "right_hand": ("right_wrist", "right_hand"),
    "seat": ("left_hip", "right_hip"),
    "trunk": ("pelvis", "spine1", "spine2", "spine3", "left_hip", "right_hip", "left_shoulder",
              "right_shoulder"),
}  # fmt: skip


@dataclass(frozen=True)
class Relation:
    """One checkable statement: ``lo <= value(kind, joints, axis) <= hi`` (module docstring)."""

    kind: str
    joints: tuple[str, ...]
    lo: float
    hi: float
    axis: int = -1

    def value(self, joints: np.ndarray) -> np.ndarray:
        """The measured value per pose, (B,), for joints (B, 24, 3)."""
        return measure(self.kind, self.joints, self.axis, _batched(joints))

    def holds(self, joints: np.ndarray) -> np.ndarray:
        """Boolean (B,): the statement is true of each pose."""
        v = self.value(joints)
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


def support_heights(joints: np.ndarray) -> np.ndarray:
    """(B, 24) height of every joint's support point above the ground (min 0)."""
    h = _batched(joints)[..., 1] - _OFFSET
    return h - h.min(-1, keepdims=True)


def measure(kind: str, joints: tuple[str, ...], axis: int, j: np.ndarray) -> np.ndarray:
    """Value of one relation kind (module docstring) for joints ``j`` (B, 24, 3)."""
    idx = [J[n] for n in joints]
    if kind == "angle":
        a = j[:, idx[0]] - j[:, idx[1]]
        b = j[:, idx[2]] - j[:, idx[1]]
        cos = (_unit(a) * _unit(b)).sum(-1)
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    if kind == "distance":
        return np.linalg.norm(j[:, idx[0]] - j[:, idx[1]], axis=-1)
    if kind == "relpos":
        f = body_frame(j)
        return f[:, idx[0], axis] - f[:, idx[1], axis]
    if kind == "vertical":
        seg = _unit(j[:, idx[1]] - j[:, idx[0]])
        return np.degrees(np.arccos(np.clip(np.abs(seg[:, 1]), 0.0, 1.0)))
    if kind == "ground":
        return support_heights(j)[:, idx].min(-1)
    if kind == "facing":
        left, _, forward = body_axes(j)
        return (left if axis == 0 else forward)[:, 1]
    raise ValueError(f"unknown relation kind {kind!r}")


@dataclass(frozen=True)
class PosecodeDef:
    """One measured quantity binned into describable categories.

    ``bins``: ``(category, lo, hi)`` truth intervals; a category is detected when the value is
    in ``[lo + margin, hi - margin]``. ``subject``: the body part it talks about (text);
    ``mirror``: key of the left/right twin (for "both ..."); ``parts``: for super-posecodes
    the component relations per category (the value is then 1 when all hold with margins).
    """

    key: str
    kind: str
    joints: tuple[str, ...]
    bins: tuple[tuple[str, float, float], ...]
    margin: float
    subject: str
    axis: int = -1
    mirror: str | None = None
    covers: tuple[str, ...] = ()  # keys made redundant when this one is described

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


ANGLE_BINS = (("completely bent", 0, 45), ("almost completely bent", 45, 75),
              ("bent at a right angle", 75, 105), ("partially bent", 105, 135),
              ("slightly bent", 135, 160), ("straight", 160, 180))  # fmt: skip
PAIR_BINS = (("close", 0, 0.2), ("shoulder width", 0.2, 0.4), ("spread", 0.4, 0.8),
             ("wide", 0.8, INF))  # fmt: skip
CLOSE = (("close", 0, 0.15),)
VERT_BINS = (("vertical", 0, 10), ("horizontal", 80, 90))
GROUND_BINS = (("on the ground", 0, 0.08), ("off the ground", 0.25, INF))
ABOVE, BELOW = ("above", 0.15, INF), ("below", -INF, -0.15)
FRONT, BEHIND = ("in front", 0.15, INF), ("behind", -INF, -0.15)


def _side(name: str, s: str) -> str:
    return name.replace("{s}", s).replace("{o}", "right" if s == "left" else "left")


def _defs() -> list[PosecodeDef]:
    out: list[PosecodeDef] = [
        PosecodeDef("dist:hands", "distance", ("left_hand", "right_hand"), PAIR_BINS, 0.03, "hands"),
        PosecodeDef("dist:feet", "distance", ("left_foot", "right_foot"), PAIR_BINS, 0.03, "feet"),
        PosecodeDef("dist:knees", "distance", ("left_knee", "right_knee"),
                    (PAIR_BINS[0], PAIR_BINS[2], PAIR_BINS[3]), 0.03, "knees"),
        PosecodeDef("dist:elbows", "distance", ("left_elbow", "right_elbow"),
                    (PAIR_BINS[0], PAIR_BINS[3]), 0.03, "elbows"),
        PosecodeDef("rel:hands:y", "relpos", ("left_hand", "right_hand"), (ABOVE, BELOW), 0.03,
                    "left hand", axis=1),
        PosecodeDef("rel:hands:z", "relpos", ("left_hand", "right_hand"), (FRONT, BEHIND), 0.03,
                    "left hand", axis=2),
        PosecodeDef("rel:hands:x", "relpos", ("left_hand", "right_hand"),
                    (("crossed", -INF, -0.05),), 0.03, "hands", axis=0),
        PosecodeDef("rel:feet:y", "relpos", ("left_foot", "right_foot"), (ABOVE, BELOW), 0.03,
                    "left foot", axis=1),
        PosecodeDef("rel:feet:z", "relpos", ("left_foot", "right_foot"), (FRONT, BEHIND), 0.03,
                    "left foot", axis=2),
        PosecodeDef("rel:feet:x", "relpos", ("left_foot", "right_foot"),
                    (("crossed", -INF, -0.05),), 0.03, "legs", axis=0),
        PosecodeDef("rel:knees:y", "relpos", ("left_knee", "right_knee"), (ABOVE, BELOW), 0.03,
                    "left knee", axis=1),
        PosecodeDef("vert:torso", "vertical", ("pelvis", "neck"),
                    (("upright", 0, 20), ("horizontal", 70, 90)), 5, "torso"),
    ]  # fmt: skip
    for s in ("left", "right"):
        o = "right" if s == "left" else "left"
        m = lambda key: key.replace(s, o)  # noqa: E731
        rows = [
            (f"angle:{s}_knee", "angle", (f"{s}_hip", f"{s}_knee", f"{s}_ankle"), ANGLE_BINS, 5, f"{s} knee"),
            (f"angle:{s}_elbow", "angle", (f"{s}_shoulder", f"{s}_elbow", f"{s}_wrist"), ANGLE_BINS, 5, f"{s} elbow"),
            (f"near:{s}_hand:head", "distance", (f"{s}_hand", "head"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_hand:{o}_shoulder", "distance", (f"{s}_hand", f"{o}_shoulder"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_hand:{o}_elbow", "distance", (f"{s}_hand", f"{o}_elbow"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_hand:{s}_knee", "distance", (f"{s}_hand", f"{s}_knee"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_hand:{o}_knee", "distance", (f"{s}_hand", f"{o}_knee"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_hand:{s}_foot", "distance", (f"{s}_hand", f"{s}_foot"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_hand:{s}_hip", "distance", (f"{s}_hand", f"{s}_hip"), CLOSE, 0.03, f"{s} hand"),
            (f"near:{s}_foot:{o}_knee", "distance", (f"{s}_foot", f"{o}_knee"), CLOSE, 0.03, f"{s} foot"),
            (f"vert:{s}_thigh", "vertical", (f"{s}_hip", f"{s}_knee"), VERT_BINS, 5, f"{s} thigh"),
            (f"vert:{s}_shin", "vertical", (f"{s}_knee", f"{s}_ankle"), VERT_BINS, 5, f"{s} shin"),
            (f"vert:{s}_upperarm", "vertical", (f"{s}_shoulder", f"{s}_elbow"), VERT_BINS, 5, f"{s} upper arm"),
            (f"vert:{s}_forearm", "vertical", (f"{s}_elbow", f"{s}_wrist"), VERT_BINS, 5, f"{s} forearm"),
            (f"ground:{s}_foot", "ground", GROUND_JOINTS[f"{s}_foot"], GROUND_BINS, 0.03, f"{s} foot"),
            (f"ground:{s}_knee", "ground", GROUND_JOINTS[f"{s}_knee"], GROUND_BINS[:1], 0.03, f"{s} knee"),
            (f"ground:{s}_hand", "ground", GROUND_JOINTS[f"{s}_hand"], GROUND_BINS[:1], 0.03, f"{s} hand"),
        ]  # fmt: skip
        for key, kind, joints, bins, margin, subject in rows:
            out.append(PosecodeDef(key, kind, joints, bins, margin, subject, mirror=m(key)))
        rel = [
            (f"rel:{s}_hand:head", (f"{s}_hand", "head"), 1, (("above", 0.1, INF),), f"{s} hand"),
            (f"rel:{s}_hand:shoulder", (f"{s}_hand", f"{s}_shoulder"), 1, (ABOVE,), f"{s} hand"),
            (f"rel:{s}_hand:hip", (f"{s}_hand", f"{s}_hip"), 1, (("below", -INF, -0.25),), f"{s} hand"),
            (f"rel:{s}_hand:back", (f"{s}_hand", "spine3"), 2, (BEHIND,), f"{s} hand"),
            (f"rel:{s}_hand:front", (f"{s}_hand", f"{s}_shoulder"), 2, (("in front", 0.4, INF),), f"{s} hand"),
            (f"rel:{s}_foot:hip", (f"{s}_foot", f"{s}_hip"), 1, (("above", 0.0, INF),), f"{s} foot"),
            (f"rel:{s}_knee:hip", (f"{s}_knee", f"{s}_hip"), 1, (("above", 0.05, INF),), f"{s} knee"),
            (f"rel:{s}_foot:body", (f"{s}_foot", "pelvis"), 2,
             (("in front", 0.35, INF), ("behind", -INF, -0.35)), f"{s} foot"),
        ]  # fmt: skip
        for key, joints, axis, bins, subject in rel:
            covers = (f"rel:{s}_hand:shoulder",) if key == f"rel:{s}_hand:head" else ()
            out.append(PosecodeDef(key, "relpos", joints, bins, 0.03, subject, axis=axis,
                                   mirror=m(key), covers=covers))  # fmt: skip
    return out


def _r(kind, joints, lo, hi, axis=-1) -> Relation:
    return Relation(kind, tuple(joints), lo, hi, axis)


def _supers() -> list[SuperDef]:
    torso = ("pelvis", "neck")
    g = GROUND_JOINTS
    out = [
        SuperDef("lying:back", ((_r("vertical", torso, 70, 90), 5), (_r("facing", torso, 0.6, 1, 2), 0.1),
                                (_r("ground", g["trunk"], 0, 0.1), 0.03)), covers=("vert:torso",)),
        SuperDef("lying:front", ((_r("vertical", torso, 70, 90), 5), (_r("facing", torso, -1, -0.6, 2), 0.1),
                                 (_r("ground", g["trunk"], 0, 0.1), 0.03)), covers=("vert:torso",)),
        SuperDef("kneeling", ((_r("ground", g["left_knee"], 0, 0.08), 0.03),
                              (_r("ground", g["right_knee"], 0, 0.08), 0.03),
                              (_r("vertical", torso, 0, 45), 5)),
                 covers=("ground:left_knee", "ground:right_knee")),
        SuperDef("squatting", ((_r("angle", ("left_hip", "left_knee", "left_ankle"), 0, 80), 5),
                               (_r("angle", ("right_hip", "right_knee", "right_ankle"), 0, 80), 5),
                               (_r("ground", g["left_foot"], 0, 0.08), 0.03),
                               (_r("ground", g["right_foot"], 0, 0.08), 0.03),
                               (_r("ground", g["seat"], 0.06, INF), 0.02),
                               (_r("ground", g["left_knee"], 0.2, INF), 0.03),
                               (_r("ground", g["right_knee"], 0.2, INF), 0.03)),
                 covers=("ground:left_foot", "ground:right_foot")),
        SuperDef("sitting:ground", ((_r("ground", g["seat"], 0, 0.08), 0.03),
                                    (_r("vertical", torso, 0, 50), 5))),
        SuperDef("lean:forward", ((_r("relpos", ("neck", "pelvis"), 0.2, INF, 2), 0.03),
                                  (_r("vertical", torso, 0, 65), 5))),
        SuperDef("lean:backward", ((_r("relpos", ("neck", "pelvis"), -INF, -0.15, 2), 0.03),
                                   (_r("vertical", torso, 0, 65), 5))),
    ]  # fmt: skip
    for s in ("left", "right"):
        o = "right" if s == "left" else "left"
        out += [
            SuperDef(f"lying:{s}_side", ((_r("vertical", torso, 70, 90), 5),
                                         (_r("facing", torso, -1, -0.6, 0) if s == "left"
                                          else _r("facing", torso, 0.6, 1, 0), 0.1),
                                         (_r("ground", g["trunk"], 0, 0.1), 0.03)),
                     mirror=f"lying:{o}_side", covers=("vert:torso",)),
            SuperDef(f"kneel:{s}", ((_r("ground", g[f"{s}_knee"], 0, 0.08), 0.03),
                                    (_r("ground", g[f"{o}_foot"], 0, 0.08), 0.03),
                                    (_r("ground", g[f"{o}_knee"], 0.25, INF), 0.03)),
                     mirror=f"kneel:{o}", covers=(f"ground:{s}_knee", f"ground:{o}_foot")),
            SuperDef(f"one_leg:{s}", ((_r("ground", g[f"{s}_foot"], 0, 0.08), 0.03),
                                      (_r("ground", g[f"{o}_foot"], 0.25, INF), 0.03),
                                      (_r("angle", (f"{s}_hip", f"{s}_knee", f"{s}_ankle"), 135, 180), 5),
                                      (_r("vertical", torso, 0, 30), 5)),
                     mirror=f"one_leg:{o}", covers=(f"ground:{s}_foot", f"ground:{o}_foot")),
            SuperDef(f"lean:{s}", ((_r("relpos", ("neck", "pelvis"), 0.15, INF, 0) if s == "left"
                                    else _r("relpos", ("neck", "pelvis"), -INF, -0.15, 0), 0.03),
                                   (_r("vertical", torso, 0, 65), 5)), mirror=f"lean:{o}"),
        ]  # fmt: skip
    return out


POSECODES: tuple[PosecodeDef, ...] = tuple(_defs())
SUPER_POSECODES: tuple[SuperDef, ...] = tuple(_supers())
_BY_KEY = {d.key: d for d in POSECODES} | {d.key: d for d in SUPER_POSECODES}


def get_def(key: str) -> PosecodeDef | SuperDef:
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown posecode {key!r}") from None


# the range each kind's value can take: a bound at the range's edge needs no margin
_DOMAIN = {"angle": (0.0, 180.0), "vertical": (0.0, 90.0), "distance": (0.0, INF),
           "ground": (0.0, INF), "relpos": (-INF, INF), "facing": (-1.0, 1.0)}  # fmt: skip


def _detect(values: np.ndarray, kind: str, lo: float, hi: float, margin: float) -> np.ndarray:
    """Inside ``[lo, hi]`` by ``margin`` at every bound that is a threshold (not a range edge)."""
    dom_lo, dom_hi = _DOMAIN[kind]
    lo_eff = lo + margin if lo > dom_lo else lo
    hi_eff = hi - margin if hi < dom_hi else hi
    return (values >= lo_eff) & (values <= hi_eff)


def extract(joints: np.ndarray) -> list[dict[str, str]]:
    """Detected categories per pose: ``[{posecode key: category}, ...]`` (B entries).

    Elementary posecodes map to their detected category (absent when the value is in no
    category by the margin); super-posecodes map to ``"yes"`` when every component is detected.
    """
    j = _batched(joints)
    b = j.shape[0]
    out: list[dict[str, str]] = [{} for _ in range(b)]
    cache: dict[tuple, np.ndarray] = {}

    def val(kind, joints_, axis):
        key = (kind, joints_, axis)
        if key not in cache:
            cache[key] = measure(kind, joints_, axis, j)
        return cache[key]

    for d in POSECODES:
        v = val(d.kind, d.joints, d.axis)
        for name, lo, hi in d.bins:
            for i in np.nonzero(_detect(v, d.kind, lo, hi, d.margin))[0]:
                out[i][d.key] = name
    for d in SUPER_POSECODES:
        ok = np.ones(b, dtype=bool)
        for r, margin in d.parts:
            ok &= _detect(val(r.kind, r.joints, r.axis), r.kind, r.lo, r.hi, margin)
        for i in np.nonzero(ok)[0]:
            out[i][d.key] = "yes"
    return out


def relations_of(key: str, category: str) -> tuple[Relation, ...]:
    """The relations a detected ``(key, category)`` asserts."""
    d = get_def(key)
    if isinstance(d, SuperDef):
        return d.relations
    return (d.relation(category),)
