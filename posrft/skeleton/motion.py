"""Kinematic analysis of one skeleton clip: which body parts move, when, and how.

Input: joints ``(T, J, 3)`` in metres in a registered format (:mod:`posrft.body.formats`), y up.
Everything is measured in the **body's own frame**, estimated per frame from the hips and
shoulders (same convention as :func:`posrft.render.camera.facing_direction`):

    left_t    = normalize(horizontal part of mean_pairs(p_left - p_right))   (hips, shoulders)
    forward_t = left_t x up                                   (SMPL: left = +x, forward = +z)
    yaw_t     = atan2(forward_t . e_x, forward_t . e_z)        unwrapped; + = turning to its left

Semantic parts are found from joint NAMES (:data:`PART_NAMES`, checked in order, a group of
several names means their mean), so any format whose names follow the usual ``left_*`` /
``right_*`` spelling works; a format with no pelvis/root joint is rejected.

Signals (a part's point ``p_t``, the pelvis ``r_t``, ``d_t = p_t - r_t``):

* hands, head, torso: ``q_t = (d_t . left_t, d_t . up, d_t . forward_t)`` (they ride on the pelvis);
* feet: ``q_t = (d_t . left_t, p_t . up, d_t . forward_t)`` (height from the ground, so a squat
  moves the pelvis, not the planted feet);
* pelvis height ``r_t . up``; travel ``((r_t - r_0) . left_0, (r_t - r_0) . forward_0)``;
  body turn ``yaw_t - yaw_0`` (degrees); hand distance ``|p_lhand - p_rhand|``.

Per signal (:func:`analyse_signal`), with ``q~`` = ``q`` smoothed over time by a Gaussian of
``SMOOTH_FRAMES`` frames (so sensor jitter is neither motion nor oscillation): it *moves* when the
largest per-axis range ``max_t q~ - min_t q~`` reaches the threshold (5 cm, the head 3 cm,
20 deg). Along that
dominant axis, turning points of ``q~`` are found with hysteresis ``0.4 * range``;
``count = max(#maxima, #minima)``. ``count >= 2`` is **periodic** (amount = the range of the raw
``q`` along that axis, directions = that axis in the order first moved); otherwise **one-off**
(amount = raw peak displacement ``max_t |q_t - q_0|``, directions = the signs of the components of
that displacement at least half the largest; it *returns* when ``|q_T - q_0| <= 0.3 * peak``).
A one-off motion may carry a **swing** on any axis: turning points of ``q~`` with a fixed
hysteresis of the threshold, at least 4 of them (a wave: the hand goes up once and swings left
and right; raising an arm sideways, out-in-out, is not a swing); its size is the median change
between consecutive turning points. The time window spans
5%..95% of the path length ``sum_t |q~_{t+1} - q~_t|``, which is also the ordering score (turns:
arc length at 0.5 m). Every figure in the text is the rounded amount (cm or degrees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from posrft.body.formats import SkeletonFormat, get_format

MOVE_M = 0.05  # a part "moves" when it covers at least 5 cm along some body axis
# ... except the head, whose joint sits close to the neck: a nod moves it only ~4-5 cm
PART_MOVE_M = {"head": 0.03}
TURN_DEG = 20.0  # the body "turns" when its heading changes by at least 20 degrees
HANDS_MEET_M = 0.12  # hands closer than this "meet"
TURN_SCORE_RADIUS_M = 0.5  # turns are ranked as the arc covered at this radius
HYSTERESIS = 0.4  # turning points must be separated by this fraction of the range
RETURN_FRAC = 0.3  # one-off motion "returns" when it ends within this fraction of its peak
MAX_OBSERVATIONS = 4
SMOOTH_FRAMES = 1.5  # std (frames) of the Gaussian that removes jitter before detection

# Part -> name groups tried in order; a group is averaged. Covers smpl24/smpl22 (pelvis, spine3,
# head, wrists, ankles), h36m17 (pelvis, thorax, nose), coco17 (hips, shoulders, nose) and ntu25
# (spine_base, spine_shoulder, head), plus common aliases for custom formats.
PART_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "pelvis": (("pelvis",), ("root",), ("spine_base",), ("mid_hip",), ("hip_center",), ("hips",),
               ("left_hip", "right_hip")),
    "torso": (("spine3",), ("thorax",), ("spine_shoulder",), ("chest",), ("upper_spine",),
              ("neck",), ("left_shoulder", "right_shoulder")),
    "head": (("head",), ("nose",), ("head_top",), ("left_ear", "right_ear"),
             ("left_eye", "right_eye")),
    "right hand": (("right_wrist",), ("right_hand",), ("right_hand_tip",)),
    "left hand": (("left_wrist",), ("left_hand",), ("left_hand_tip",)),
    "right foot": (("right_ankle",), ("right_foot",), ("right_heel",), ("right_toe",)),
    "left foot": (("left_ankle",), ("left_foot",), ("left_heel",), ("left_toe",)),
}  # fmt: skip
LIMB_PARTS = ("right hand", "left hand", "right foot", "left foot", "head", "torso")
GROUNDED_PARTS = frozenset({"right foot", "left foot"})
FACING_PAIRS = (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"))
# Words for the (lateral, vertical, forward) body axes: (positive, negative).
BODY_AXES = (("left", "right"), ("up", "down"), ("forward", "backward"))


def _norm_name(name: str) -> str:
    n = name.strip().lower().replace("-", "_").replace(" ", "_").replace(".", "_")
    if n.startswith("l_"):
        n = "left_" + n[2:]
    elif n.startswith("r_"):
        n = "right_" + n[2:]
    return n


@dataclass(frozen=True)
class BodyParts:
    """Joint indices of the semantic parts found in one format (see :data:`PART_NAMES`)."""

    fmt: str
    parts: dict[str, tuple[int, ...]]
    lateral_pairs: tuple[tuple[int, int], ...]  # (left, right) pairs used for the facing


def resolve_parts(fmt: str | SkeletonFormat) -> BodyParts:
    """Map the semantic parts onto ``fmt``'s joints by name; ``ValueError`` without a pelvis."""
    f = get_format(fmt)
    idx = {_norm_name(n): i for i, n in enumerate(f.joint_names)}
    parts: dict[str, tuple[int, ...]] = {}
    for part, groups in PART_NAMES.items():
        for group in groups:
            if all(g in idx for g in group):
                parts[part] = tuple(idx[g] for g in group)
                break
    if "pelvis" not in parts:
        wanted = ", ".join(" + ".join(g) for g in PART_NAMES["pelvis"])
        raise ValueError(
            f"skeleton format {f.name!r} has no joint for the pelvis/root: expected a joint named "
            f"one of [{wanted}]; its joints are {list(f.joint_names)}"
        )
    pairs = tuple((idx[a], idx[b]) for a, b in FACING_PAIRS if a in idx and b in idx)
    if not pairs:  # degrade: any mirrored pair still gives a left-right axis
        pairs = f.flip_pairs
    return BodyParts(fmt=f.name, parts=parts, lateral_pairs=pairs)


def body_frames(joints: np.ndarray, pairs: Sequence[tuple[int, int]], up_axis: int = 1):
    """Per-frame body axes ``left (T, 3)``, ``forward (T, 3)`` and unwrapped ``yaw (T,)`` radians.

    Frames whose left-right vector is vertical or zero copy the nearest valid frame; without any
    pair (or no valid frame) the axes are the world's (left = +x, forward = x cross up).
    Returns ``(left, forward, yaw, has_facing)``.
    """
    T = joints.shape[0]
    up = np.zeros(3)
    up[up_axis] = 1.0
    ref_left = np.eye(3)[1 if up_axis == 0 else 0]
    ref_fwd = np.cross(ref_left, up)
    left = np.broadcast_to(ref_left, (T, 3)).copy()
    has_facing = False
    if pairs:
        lat = np.mean([joints[:, a] - joints[:, b] for a, b in pairs], axis=0)  # (T, 3)
        lat = lat - lat[:, up_axis : up_axis + 1] * up
        n = np.linalg.norm(lat, axis=1)
        ok = n > 1e-6
        if ok.any():
            has_facing = True
            good = np.flatnonzero(ok)
            # nearest valid frame for every frame (forward fill, then backward fill)
            near = good[np.clip(np.searchsorted(good, np.arange(T), side="right") - 1, 0, None)]
            near = np.where(np.arange(T) < good[0], good[0], near)
            left = lat[near] / n[near, None]
    fwd = np.cross(left, up)
    yaw = np.unwrap(np.arctan2(fwd @ ref_left, fwd @ ref_fwd))
    return left, fwd, yaw, has_facing


@dataclass(frozen=True)
class Observation:
    """One described motion. ``amount`` is metres (degrees for ``kind == "turn"``); for periodic
    motion the range along the dominant axis, else the peak displacement from the start."""

    subject: str  # "right hand", "pelvis", "whole body", "hands"
    kind: str  # "part" | "height" | "travel" | "turn" | "hands_meet"
    directions: tuple[str, ...]
    periodic: bool
    count: int  # oscillations (periodic), 1 = once and back, 0 = moved and stayed
    amount: float
    returns: bool
    start: float  # fraction of the clip where the motion starts / ends
    end: float
    score: float  # ordering: path length in metres
    swing: tuple[str, str, int, float] | None = None  # one-off: oscillation on the side

    @property
    def window(self) -> str:
        return window_phrase(self.start, self.end)


def window_phrase(start: float, end: float) -> str:
    """Name the part of the clip spanned by ``[start, end]`` (fractions of its length)."""
    if start <= 0.15 and end >= 0.85:
        return "throughout the clip"
    names = ("at the beginning", "in the middle", "at the end")
    if end - start <= 0.4:
        return names[min(int((start + end) / 2 * 3), 2)]
    a, b = min(int(start * 3), 2), min(int(end * 3 - 1e-9), 2)
    return {(0, 1): "from the beginning to the middle", (1, 2): "from the middle to the end",
            (0, 2): "over most of the clip"}.get((a, b), names[min(int((start + end) * 1.5), 2)])


def turning_points(s: np.ndarray, h: float) -> tuple[list[int], list[int]]:
    """Interior maxima and minima of ``s (T,)`` that differ from their neighbours by ``>= h``.

    A zig-zag with hysteresis: an extremum is confirmed once the signal has come back from it by
    ``h``. The first frame is never a turning point; the last one only if confirmed (never).
    """
    maxima: list[int] = []
    minima: list[int] = []
    hi = lo = ext = 0
    trend = 0
    for i in range(1, len(s)):
        if trend == 0:
            hi = i if s[i] > s[hi] else hi
            lo = i if s[i] < s[lo] else lo
            if s[hi] - s[lo] >= h:
                first, trend, ext = (lo, 1, hi) if hi > lo else (hi, -1, lo)
                if first > 0:
                    (minima if trend == 1 else maxima).append(first)
        elif trend == 1:
            if s[i] > s[ext]:
                ext = i
            elif s[ext] - s[i] >= h:
                maxima.append(ext)
                trend, ext = -1, i
        else:
            if s[i] < s[ext]:
                ext = i
            elif s[i] - s[ext] >= h:
                minima.append(ext)
                trend, ext = 1, i
    return maxima, minima


def _active_window(q: np.ndarray) -> tuple[float, float, float]:
    """``(start, end, path)``: where 5% and 95% of the path length ``sum |dq|`` are reached."""
    steps = np.linalg.norm(np.diff(q, axis=0), axis=1)
    c = np.cumsum(steps)
    total = float(c[-1]) if len(c) else 0.0
    if total <= 0:
        return 0.0, 1.0, 0.0
    n = len(q) - 1
    a = int(np.searchsorted(c, 0.05 * total))
    b = int(np.searchsorted(c, 0.95 * total))
    return a / n, min(b + 1, n) / n, total


def smooth(q: np.ndarray, sigma: float = SMOOTH_FRAMES) -> np.ndarray:
    """``q (T, D)`` convolved over time with a normalised Gaussian (edges repeated)."""
    if sigma <= 0 or len(q) < 3:
        return q
    r = int(math.ceil(3 * sigma))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    pad = np.concatenate([np.repeat(q[:1], r, 0), q, np.repeat(q[-1:], r, 0)])
    return np.stack([np.convolve(pad[:, d], w, mode="valid") for d in range(q.shape[1])], 1)


def analyse_signal(q: np.ndarray, axes: Sequence[tuple[str, str]], threshold: float, *,
                   subject: str, kind: str, score_scale: float = 1.0) -> Observation | None:
    """Describe ``q (T, D)`` (``axes``: the D (positive, negative) words) or ``None`` if still."""
    q = np.asarray(q, dtype=np.float64).reshape(len(q), -1)
    qs = smooth(q)
    rng = qs.max(0) - qs.min(0)
    k = int(np.argmax(rng))
    if rng[k] < threshold:
        return None
    maxima, minima = turning_points(qs[:, k], HYSTERESIS * rng[k])
    count = max(len(maxima), len(minima))
    start, end, path = _active_window(qs)
    disp = q - q[0]
    if count >= 2:
        # the direction it first moved: the sign of the first deviation of a quarter range
        dev = qs[:, k] - qs[0, k]
        first = np.flatnonzero(np.abs(dev) >= 0.25 * rng[k])
        pos, neg = axes[k]
        dirs = (pos, neg) if dev[first[0]] > 0 else (neg, pos)
        return Observation(subject, kind, dirs, True, count, float(np.ptp(q[:, k])), False,
                           start, end, path * score_scale)
    mag = np.linalg.norm(disp, axis=1)
    tp = int(np.argmax(mag))
    peak = float(mag[tp])
    if peak < threshold:
        return None
    comp = disp[tp]
    big = np.abs(comp).max()
    order = [i for i in np.argsort(-np.abs(comp)) if abs(comp[i]) >= max(0.5 * big, threshold / 2)]
    dirs = tuple(axes[i][0] if comp[i] > 0 else axes[i][1] for i in order)
    returns = bool(mag[-1] <= RETURN_FRAC * peak)
    return Observation(subject, kind, dirs, False, int(returns), peak, returns, start, end,
                       path * score_scale, _swing(qs, axes, threshold, 0.5 * peak))


def _swing(qs: np.ndarray, axes: Sequence[tuple[str, str]], threshold: float, max_size: float):
    """The largest oscillation (>= 4 turning points ``threshold`` apart) on an axis of ``qs``:
    ``(first word, second word, count, median swing)`` or ``None``. Swings larger than
    ``max_size`` (half the main motion) are the main motion's own path, not a swing."""
    best = None
    for j in range(qs.shape[1]):
        mx, mn = turning_points(qs[:, j], threshold)
        if len(mx) + len(mn) < 4:  # out-in-out (raising an arm sideways) is not a swing
            continue
        count = max(len(mx), len(mn))
        tps = sorted(mx + mn)
        size = float(np.median(np.abs(np.diff(qs[tps, j]))))
        if size > max_size:
            continue
        if best is None or size > best[3]:
            pos, neg = axes[j]
            first_max = bool(mx) and (not mn or mx[0] < mn[0])
            best = (pos, neg, count, size) if first_max else (neg, pos, count, size)
    return best


@dataclass(frozen=True)
class MotionSummary:
    """All observations of one clip, most motion first, plus what was looked at."""

    observations: tuple[Observation, ...]
    parts_found: tuple[str, ...]
    has_facing: bool
    num_frames: int


def check_clip(joints: np.ndarray, fmt: str | SkeletonFormat, what: str = "joints") -> np.ndarray:
    """``joints`` as float64 ``(T, J, 3)``; ``ValueError`` on a wrong shape or non-finite frames."""
    f = get_format(fmt)
    arr = np.asarray(joints)
    if arr.ndim != 3 or arr.shape[1:] != (f.num_joints, 3):
        raise ValueError(f"{what} shaped {tuple(arr.shape)} do not match format {f.name!r}: "
                         f"expected (T, {f.num_joints}, 3)")
    if arr.shape[0] < 2:
        raise ValueError(f"{what} has {arr.shape[0]} frame(s); a clip needs at least 2")
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))
    if len(bad):
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(f"{what} has NaN/inf values in {len(bad)} frame(s): [{shown}]")
    return arr


def analyse_motion(joints: np.ndarray, fmt: str | SkeletonFormat, *, up_axis: int = 1,
                   move_m: float = MOVE_M, turn_deg: float = TURN_DEG) -> MotionSummary:
    """Observations of clip ``joints (T, J, 3)`` (module docstring), sorted by score."""
    x = check_clip(joints, fmt)
    bp = resolve_parts(fmt)
    left, fwd, yaw, has_facing = body_frames(x, bp.lateral_pairs, up_axis)
    point = {p: x[:, idx].mean(axis=1) for p, idx in bp.parts.items()}  # (T, 3) each
    root = point["pelvis"]
    obs: list[Observation] = []
    for part in LIMB_PARTS:
        if part not in point:
            continue
        d = point[part] - root
        vert = point[part][:, up_axis] if part in GROUNDED_PARTS else d[:, up_axis]
        q = np.stack([(d * left).sum(1), vert, (d * fwd).sum(1)], axis=1)
        thr = min(move_m, PART_MOVE_M.get(part, move_m))
        obs.append(analyse_signal(q, BODY_AXES, thr, subject=part, kind="part"))
    obs.append(analyse_signal(root[:, up_axis], (("up", "down"),), move_m, subject="pelvis",
                              kind="height"))
    travel = root - root[0]
    q = np.stack([travel @ left[0], travel @ fwd[0]], axis=1)
    obs.append(analyse_signal(q, (BODY_AXES[0], BODY_AXES[2]), move_m, subject="whole body",
                              kind="travel"))
    if has_facing:
        obs.append(analyse_signal(np.degrees(yaw - yaw[0]), (("left", "right"),), turn_deg,
                                  subject="whole body", kind="turn",
                                  score_scale=math.radians(1) * TURN_SCORE_RADIUS_M))
    if "left hand" in point and "right hand" in point:
        obs.append(_hands_meet(np.linalg.norm(point["left hand"] - point["right hand"], axis=1)))
    kept = sorted((o for o in obs if o is not None), key=lambda o: -o.score)
    return MotionSummary(tuple(kept), tuple(bp.parts), has_facing, x.shape[0])


def _hands_meet(dist: np.ndarray) -> Observation | None:
    """Count entries into ``dist < HANDS_MEET_M`` (leaving needs ``+ 5 cm``, the hysteresis)."""
    ds = smooth(dist[:, None])[:, 0]
    if ds.min() >= HANDS_MEET_M or ds.max() - ds.min() < MOVE_M:
        return None
    inside = bool(ds[0] < HANDS_MEET_M)
    count = 0
    for d in ds[1:]:
        if not inside and d < HANDS_MEET_M:
            inside, count = True, count + 1
        elif inside and d > HANDS_MEET_M + MOVE_M:
            inside = False
    if count == 0:
        return None  # together from the start and never apart long enough to meet again
    start, end, path = _active_window(smooth(dist[:, None]))
    return Observation("hands", "hands_meet", (), count >= 2, count, float(dist.min()), False,
                       start, end, path)


# ---------------------------------------------------------------------------------- text


def _cm(metres: float) -> int:
    return int(round(metres * 100))


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def sentence(o: Observation) -> str:
    """One sentence for one observation; every figure is ``round(amount)`` in cm or degrees."""
    w = o.window
    if o.kind == "hands_meet":
        return (f"The two hands come together {_times(o.count)}, down to {_cm(o.amount)} cm "
                f"apart, {w}.")
    if o.kind == "turn":
        deg = int(round(o.amount))
        if o.periodic:
            return (f"The whole body turns to its {o.directions[0]} and {o.directions[1]} "
                    f"{_times(o.count)} about the vertical axis over a {deg} degree range {w}.")
        back = " and turns back" if o.returns else ""
        return (f"The whole body turns {deg} degrees to its {o.directions[0]} about the vertical "
                f"axis {w}{back}.")
    subject = {"travel": "The whole body", "height": "The pelvis"}.get(o.kind, f"The {o.subject}")
    verb = "travels" if o.kind == "travel" else "moves"
    if o.periodic:
        return (f"{subject} {verb} {o.directions[0]} and {o.directions[1]} {_times(o.count)} "
                f"over a {_cm(o.amount)} cm range {w}.")
    swing = ""
    if o.swing is not None:
        a, b, n, size = o.swing
        swing = f", swinging {a} and {b} {_times(n)} by about {_cm(size)} cm,"
    if o.returns:
        return (f"{subject} {verb} {_join(o.directions)} by {_cm(o.amount)} cm once {w}{swing} "
                "and comes back.")
    return (f"{subject} {verb} {_join(o.directions)} by {_cm(o.amount)} cm {w}{swing} "
            "and stays there.")


def describe(summary: MotionSummary, max_observations: int = MAX_OBSERVATIONS) -> list[str]:
    """2..5 sentences: the ``max_observations`` largest motions, then what stays still."""
    obs = summary.observations
    if not obs:
        return ["No body part moves by more than a few centimetres and the body does not turn.",
                "The person stays still throughout the clip."]
    out = [sentence(o) for o in obs[:max_observations]]
    if len(obs) > max_observations:
        names = {"height": "pelvis height", "travel": "body position", "turn": "body heading",
                 "hands_meet": "hand distance"}
        rest = list(dict.fromkeys(names.get(o.kind, o.subject) for o in obs[max_observations:]))
        out.append(f"Smaller motions: {_join(rest)}.")
    else:
        moved = {o.subject for o in obs if o.kind == "part"}
        still = [p for p in LIMB_PARTS if p in summary.parts_found and p not in moved]
        if still:
            out.append(f"The {_join(still)} {'stays' if len(still) == 1 else 'stay'} nearly still.")
    return out
