"""Motion scripts of the procedural action classes (:data:`MOTIONS`, one per class of
:data:`posrft.data.action_classes.ACTION_CLASSES`, in its order).

Per class a script ``f(timing) -> Motion`` gives, per frame, offsets of the 24 SMPL joints'
anatomical coordinates (degrees, :mod:`posrft.data.limits` convention, key-pose notation of
:mod:`posrft.data.keyposes`: side values in the LEFT side's sense, mirrored for the right) from
the standing base pose :data:`BASE_SPEC`, plus a turn about the vertical (yaw, degrees) and a
flight height above the ground (metres for a body of scale 1). :mod:`posrft.data.actions` turns
them into joints by forward kinematics.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from posrft.data.action_classes import ACTION_INDEX
from posrft.data.keyposes import ARMS_DOWN, LEGS_STAND, spec_to_coords

#: The standing pose every clip starts from (arms hanging, legs straight).
BASE_SPEC: dict[str, tuple[float, float, float]] = {**LEGS_STAND, **ARMS_DOWN}
BASE_COORDS: np.ndarray = spec_to_coords(BASE_SPEC)  # (24, 3) degrees


@dataclass(frozen=True)
class Motion:
    """One clip's script output. ``coords`` (T, 24, 3) degrees added to the base pose;
    ``yaw`` (T,) degrees turned to the body's left; ``lift`` (T,) metres of flight."""

    coords: np.ndarray
    yaw: np.ndarray
    lift: np.ndarray


@dataclass(frozen=True)
class Timing:
    """Normalised clip time ``tau`` (T,) in [0, 1] and one performer's tempo and range.

    ``speed`` scales how fast a motion runs, ``phase`` in [0, 1) shifts it (cycle offset of a
    periodic motion; start delay of a one-off), ``amp`` scales the motion's range.
    """

    tau: np.ndarray
    speed: float
    phase: float
    amp: float

    def once(self, dur: float = 0.8) -> np.ndarray:
        """Progress 0 -> 1 of a one-off motion lasting ``dur / speed`` of the clip (capped at
        the whole clip), starting after a delay ``phase * (1 - duration)``."""
        d = min(1.0, dur / self.speed)
        return np.clip((self.tau - self.phase * (1.0 - d)) / d, 0.0, 1.0)

    def angle(self, cycles: float) -> np.ndarray:
        """Phase angle (radians) of a periodic motion with ``cycles * speed`` cycles per clip."""
        return 2.0 * np.pi * (cycles * self.speed * self.tau + self.phase)


def ramp(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """Smoothstep from 0 (``p <= a``) to 1 (``p >= b``)."""
    x = np.clip((p - a) / (b - a), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def hold(p: np.ndarray, up: float = 0.3, down: float = 0.7) -> np.ndarray:
    """0 -> 1 over ``[0, up]``, 1 until ``down``, back to 0 at ``p = 1``."""
    return ramp(p, 0.0, up) * (1.0 - ramp(p, down, 1.0))


def window(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """``sin^2`` bump that is non-zero only for ``a < p < b`` (peak 1 at the middle)."""
    x = np.clip((p - a) / (b - a), 0.0, 1.0)
    return np.sin(np.pi * x) ** 2


def _freeze(spec: dict) -> tuple:
    return tuple(sorted((k, tuple(float(x) for x in v)) for k, v in spec.items()))


@lru_cache(maxsize=None)
def _to_cached(frozen: tuple) -> np.ndarray:
    return spec_to_coords({**BASE_SPEC, **dict(frozen)}) - BASE_COORDS


def to(**spec) -> np.ndarray:
    """Offset (24, 3) degrees from the base pose to the base pose overridden by ``spec``."""
    return _to_cached(_freeze(spec))


def by(**spec) -> np.ndarray:
    """Offset (24, 3) degrees that adds ``spec``'s values (key-pose notation) to the pose."""
    return spec_to_coords(spec)


def side(s: str, **joints) -> dict:
    """One-sided key-pose entries, ``side("l", hip=...) == {"l_hip": ...}``."""
    return {f"{s}_{k}": v for k, v in joints.items()}


def _motion(t: Timing, terms, yaw=None, lift=None) -> Motion:
    """``sum_k weight_k[:, None, None] * offset_k`` over ``terms = [(offset, weight), ...]``."""
    n = len(t.tau)
    coords = np.zeros((n, 24, 3))
    for offset, weight in terms:
        coords += np.broadcast_to(weight, (n,))[:, None, None] * offset
    zero = np.zeros(n)
    return Motion(coords, zero if yaw is None else yaw, zero if lift is None else lift)


def _other(s: str) -> str:
    return "r" if s == "l" else "l"


def _mid(s: str, x: float, y: float, z: float) -> tuple[float, float, float]:
    """A midline value written for the left version, mirrored ``(x, -y, -z)`` for the right."""
    return (x, y, z) if s == "l" else (x, -y, -z)


ARM_UP = dict(collar=(0, 0, 25), shoulder=(0, -5, 78), elbow=(0, -8, 0))


def _wave(s: str):
    def script(t: Timing) -> Motion:
        up = hold(t.once(0.9), 0.2, 0.85)
        arm = to(**side(s, collar=(0, 0, 10), shoulder=(-85, -10, 8), elbow=(0, -95, 0)))
        swing = by(**side(s, elbow=(0, 30, 0), shoulder=(0, 0, 8)))
        return _motion(t, [(arm, up), (swing, up * t.amp * np.sin(t.angle(3.0)))])

    return script


def _clap(t: Timing) -> Motion:
    held = hold(t.once(0.9), 0.15, 0.85)
    # the wrists cross slightly when closed, so posture jitter never keeps the hands apart
    arms = to(collar=(0, -5, 0), shoulder=(-11, -56, -75), elbow=(0, -88, -8))
    opening = by(shoulder=(0, 28, 20), elbow=(0, 25, 0))
    # the hands rest together for a moment at every clap (the opening is 0 over part of a cycle)
    opened = ramp(0.5 + 0.5 * np.cos(t.angle(4.0)), 0.15, 1.0)
    return _motion(t, [(arms, held), (opening, held * t.amp * opened)])


SQUAT = dict(root=(28, 0, 0), hip=(-100, 10, 12), knee=(90, 0, 0), ankle=(-22, 0, 0),
             spine=(8, 0, 0), shoulder=(0, -85, -5), elbow=(0, -5, 0))  # fmt: skip


def _squat(t: Timing) -> Motion:
    return _motion(t, [(to(**SQUAT), t.amp * (0.5 - 0.5 * np.cos(t.angle(2.0))))])


def _jump(t: Timing) -> Motion:
    p = t.once(0.85)
    crouch = to(root=(20, 0, 0), hip=(-65, 5, 5), knee=(70, 0, 0), ankle=(-18, 0, 0),
                spine=(20, 0, 0), shoulder=(0, 45, -70))  # fmt: skip
    flight = to(ankle=(30, 0, 0), collar=(0, 0, 20), shoulder=(0, -15, 60), elbow=(0, -5, 0))
    w_crouch = window(p, 0.0, 0.42) + window(p, 0.58, 1.0)
    s = np.clip((p - 0.38) / 0.24, 0.0, 1.0)
    lift = 4.0 * s * (1.0 - s) * 0.25 * t.amp
    return _motion(t, [(crouch, w_crouch), (flight, window(p, 0.33, 0.67))], lift=lift)


def _kick(s: str):
    def script(t: Timing) -> Motion:
        p = t.once(0.7)
        chamber = to(**side(s, hip=(-55, 0, 0), knee=(85, 0, 0)))
        extend = by(**side(s, hip=(-30, 0, 0), knee=(-80, 0, 0), ankle=(25, 0, 0)),
                    spine=(-8, 0, 0))  # fmt: skip
        return _motion(t, [(chamber, ramp(p, 0.1, 0.35) * (1 - ramp(p, 0.65, 0.9))),
                           (extend, t.amp * window(p, 0.3, 0.7))])  # fmt: skip

    return script


GUARD = dict(shoulder=(0, -55, -55), elbow=(0, -120, 0))


def _punch(s: str):
    def script(t: Timing) -> Motion:
        p = t.once(0.95)
        held = hold(p, 0.15, 0.9)
        strike = to(**GUARD, **side(s, shoulder=(0, -85, -5), elbow=(0, -5, 0))) - to(**GUARD)
        # two punches while the guard is up (0.2 < p < 0.8)
        pulse = np.maximum(0.0, np.sin(4.0 * np.pi * np.clip((p - 0.2) / 0.6, 0, 1))) ** 2
        return _motion(t, [(to(**GUARD), held), (strike, held * pulse)])

    return script


def _bow(t: Timing) -> Motion:
    pose = to(root=(40, 0, 0), hip=(-40, 6, 3), spine=(30, 0, 0), neck=(10, 0, 0),
              shoulder=(0, -40, -72))  # fmt: skip
    return _motion(t, [(pose, t.amp * hold(t.once(0.8), 0.35, 0.65))])


def _raise_arms(s: str | None):
    def script(t: Timing) -> Motion:
        arm = to(**ARM_UP) if s is None else to(**{f"{s}_{k}": v for k, v in ARM_UP.items()})
        return _motion(t, [(arm, hold(t.once(0.8), 0.35, 0.65))])

    return script


def _turn(t: Timing) -> Motion:
    p = t.once(0.8)
    steps = np.sin(t.angle(3.0)) * window(p, 0.0, 1.0) * t.amp
    lift_l = to(**side("l", hip=(-25, 0, 0), knee=(40, 0, 0)))
    lift_r = to(**side("r", hip=(-25, 0, 0), knee=(40, 0, 0)))
    terms = [(lift_l, np.maximum(steps, 0.0)), (lift_r, np.maximum(-steps, 0.0))]
    return _motion(t, terms, yaw=180.0 * ramp(p, 0.0, 1.0))


def _walk(t: Timing) -> Motion:
    a = t.angle(2.0)
    leg = dict(hip=(-60, 0, 0), knee=(90, 0, 0), ankle=(10, 0, 0))
    arms = by(l_shoulder=(0, 30, 0), r_shoulder=(0, -30, 0))
    bob = by(hip=(-6, 0, 0), knee=(12, 0, 0), ankle=(-6, 0, 0))
    return _motion(t, [(to(**side("l", **leg)), t.amp * np.maximum(np.sin(a), 0.0)),
                       (to(**side("r", **leg)), t.amp * np.maximum(-np.sin(a), 0.0)),
                       (arms, t.amp * np.sin(a)), (bob, np.cos(a) ** 2)])  # fmt: skip


SIT = dict(root=(15, 0, 0), hip=(-95, 6, 6), knee=(88, 0, 0), ankle=(-5, 0, 0),
           spine=(8, 0, 0), shoulder=(0, -45, -60), elbow=(0, -40, 0))  # fmt: skip


def _sit(t: Timing) -> Motion:
    return _motion(t, [(to(**SIT), ramp(t.once(0.8), 0.1, 0.75))])


def _stand(t: Timing) -> Motion:
    return _motion(t, [(to(**SIT), 1.0 - ramp(t.once(0.8), 0.25, 0.9))])


def _toes(t: Timing) -> Motion:
    # Torso pitched 150 deg (root 80 + spine 70) with bent knees; the arms hang straight down:
    # a 90 deg swing of the arm from the T-pose about (0, -sin 150, -cos 150).
    pose = to(root=(80, 0, 0), hip=(-97, 4, 3), knee=(15, 0, 0), ankle=(-7, 0, 0),
              spine=(70, 0, 0), neck=(10, 0, 0), shoulder=(0, -45, 78),
              elbow=(0, -5, 0))  # fmt: skip
    return _motion(t, [(pose, hold(t.once(0.8), 0.35, 0.65))])


def _circles(t: Timing) -> Motion:
    held = hold(t.once(0.95), 0.15, 0.9)
    a = t.angle(3.0)
    r = 28.0 * t.amp * held
    out = to(collar=(0, 0, 0), shoulder=(0, -3, 0), elbow=(0, -3, 0))
    return _motion(t, [(out, held), (by(shoulder=(0, 0, 1)), r * np.sin(a)),
                       (by(shoulder=(0, 1, 0)), r * np.cos(a))])  # fmt: skip


def _bend_side(s: str):
    def script(t: Timing) -> Motion:
        pose = to(spine=_mid(s, 0, 0, -42), neck=_mid(s, 0, 0, -10),
                  **side(_other(s), collar=(0, 0, 25), shoulder=(0, -5, 82), elbow=(0, -15, 0)),
                  **side(s, shoulder=(0, -5, -55)))  # fmt: skip
        return _motion(t, [(pose, t.amp * hold(t.once(0.8), 0.35, 0.65))])

    return script


def _lunge(s: str):
    def script(t: Timing) -> Motion:
        pose = to(**side(s, hip=(-82, 5, 3), knee=(88, 0, 0), ankle=(-12, 0, 0)),
                  **side(_other(s), hip=(12, 3, 3), knee=(70, 0, 0), ankle=(30, 0, 0),
                         foot=(-50, 0, 0)))  # fmt: skip
        return _motion(t, [(pose, t.amp * hold(t.once(0.8), 0.3, 0.7))])

    return script


def _hop(s: str):
    def script(t: Timing) -> Motion:
        p = t.once(0.95)
        held = hold(p, 0.12, 0.9)  # the other foot is up ...
        hopping = ramp(p, 0.12, 0.2) * (1.0 - ramp(p, 0.82, 0.9))  # ... before the hops start
        a = t.angle(3.0)
        raised = to(**side(_other(s), hip=(-35, 0, 0), knee=(95, 0, 0), ankle=(15, 0, 0)))
        land = by(**side(s, hip=(-15, 0, 0), knee=(30, 0, 0), ankle=(-15, 0, 0)))
        lift = 0.09 * t.amp * hopping * np.maximum(np.sin(a), 0.0)
        bend = t.amp * hopping * np.maximum(-np.sin(a), 0.0)
        return _motion(t, [(raised, held), (land, bend)], lift=lift)

    return script


def _nod(t: Timing) -> Motion:
    bend = by(neck=(35, 0, 0), head=(25, 0, 0))
    return _motion(t, [(bend, t.amp * (0.5 - 0.5 * np.cos(t.angle(2.5))))])


def _twist(t: Timing) -> Motion:
    arms = to(shoulder=(0, -30, -60), elbow=(0, -90, 0))
    return _motion(t, [(arms, 1.0), (by(spine=(0, 40, 0)), t.amp * np.sin(t.angle(2.0)))])


def _swing_arm(s: str | None):
    """A straight arm (both arms when ``s`` is None) swung forward and back from the shoulder."""
    def script(t: Timing) -> Motion:
        held = hold(t.once(0.95), 0.1, 0.9)
        straight = to(elbow=(0, -3, 0)) if s is None else to(**side(s, elbow=(0, -3, 0)))
        fwd = by(shoulder=(0, -1, 0)) if s is None else by(**side(s, shoulder=(0, -1, 0)))
        return _motion(t, [(straight, held), (fwd, 60.0 * t.amp * held * np.sin(t.angle(2.5)))])

    return script


def _swing_leg(s: str):
    def script(t: Timing) -> Motion:
        held = hold(t.once(0.95), 0.1, 0.9)
        knee = by(**side(s, knee=(1, 0, 0)))
        fwd = by(**side(s, hip=(-1, 0, 0)))
        a = t.angle(2.5)
        # forward (flexion) further than back (extension), as a real leg swing; the knee bends
        # as the foot passes under the body so that it clears the floor
        swing = np.where(np.sin(a) > 0, 55.0, 20.0) * np.sin(a) * t.amp * held
        return _motion(t, [(knee, held * (10.0 + 35.0 * np.cos(a) ** 2)), (fwd, swing)])

    return script


def _raise_leg(s: str):
    def script(t: Timing) -> Motion:
        pose = to(**side(s, hip=(-85, 0, 0), knee=(4, 0, 0), ankle=(15, 0, 0)), spine=(-5, 0, 0))
        return _motion(t, [(pose, t.amp * hold(t.once(0.8), 0.35, 0.65))])

    return script


def _circle_arm(s: str):
    def script(t: Timing) -> Motion:
        held = hold(t.once(0.95), 0.15, 0.9)
        a = t.angle(3.0)
        r = 28.0 * t.amp * held
        out = to(**side(s, collar=(0, 0, 0), shoulder=(0, -3, 0), elbow=(0, -3, 0)))
        return _motion(t, [(out, held), (by(**side(s, shoulder=(0, 0, 1))), r * np.sin(a)),
                           (by(**side(s, shoulder=(0, 1, 0))), r * np.cos(a))])  # fmt: skip

    return script


def _shake_head(t: Timing) -> Motion:
    turn = by(neck=(0, 30, 0), head=(0, 25, 0))
    held = hold(t.once(0.95), 0.1, 0.9)
    return _motion(t, [(turn, t.amp * held * np.sin(t.angle(2.5)))])


MOTIONS: dict[str, Callable[[Timing], Motion]] = {
    "wave left hand": _wave("l"), "wave right hand": _wave("r"), "clap hands": _clap,
    "squat": _squat, "jump up": _jump, "kick left leg": _kick("l"),
    "kick right leg": _kick("r"), "punch left hand": _punch("l"),
    "punch right hand": _punch("r"), "bow": _bow, "raise both arms": _raise_arms(None),
    "turn around": _turn, "walk in place": _walk, "sit down": _sit, "stand up": _stand,
    "raise left arm": _raise_arms("l"), "raise right arm": _raise_arms("r"),
    "touch toes": _toes, "arm circles": _circles, "bend torso left": _bend_side("l"),
    "bend torso right": _bend_side("r"), "lunge left leg": _lunge("l"),
    "lunge right leg": _lunge("r"), "hop on left foot": _hop("l"),
    "hop on right foot": _hop("r"), "nod head": _nod, "twist torso": _twist,
    "swing left arm": _swing_arm("l"), "swing right arm": _swing_arm("r"),
    "swing left leg": _swing_leg("l"), "swing right leg": _swing_leg("r"),
    "raise left leg": _raise_leg("l"), "raise right leg": _raise_leg("r"),
    "circle left arm": _circle_arm("l"), "circle right arm": _circle_arm("r"),
    "shake head": _shake_head, "swing both arms": _swing_arm(None),
}  # fmt: skip
assert list(MOTIONS) == sorted(MOTIONS, key=ACTION_INDEX.__getitem__), "MOTIONS out of order"
