"""Library of hand-written key poses: SMPL joint rotations of everyday and sport postures.

A key pose is a dict of anatomical coordinates in degrees (see :mod:`posrft.data.limits`:
for a rotation about one axis they are the axis-angle vector). Keys:

* ``spine`` (split evenly over spine1..3), ``spine1``/``spine2``/``spine3``, ``neck``, ``head``:
  midline joints, values as they are (x > 0 bends forward, y > 0 turns to the body's left,
  z > 0 bends to the body's right);
* ``hip``, ``knee``, ``ankle``, ``foot``, ``collar``, ``shoulder``, ``elbow``, ``wrist``: both
  sides; ``l_<joint>`` / ``r_<joint>``: one side. Side values are always written in the LEFT
  side's sense and mirrored for the right, so ``r_hip=(-90, 0, 0)`` flexes the right hip
  90 deg like ``l_hip=(-90, 0, 0)`` flexes the left one. Left-sense signs: hip x < 0 flexion,
  z > 0 abduction, y > 0 external rotation; knee x > 0 flexion; ankle x > 0 plantar flexion;
  foot (toes) x < 0 extension; collar z > 0 shrug; shoulder z > 0 raises the arm from the
  T-pose, y < 0 brings it forward, x < 0 rotates it externally; elbow y < 0 flexion; wrist
  z < 0 palmar flexion.
* ``root``: global orientation (axis-angle, degrees) before the family's tilt and the yaw.

Each :class:`KeyPose` also states how it meets the ground: ``contacts_all`` (every listed
support group touches the ground), ``contacts_any`` (at least one does), and whether the
centre of mass must be over the support (``static``), or whether it is in flight
(``airborne``: no support; the prior puts the floor some way below it). Support groups are
names of :data:`SUPPORT_GROUPS`. ``arms_free`` marks poses whose arms carry no load or contact, so the
prior may swap in the arms of a gesture pose; ``mirror`` adds the left-right mirror image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from posrft.body.formats import SMPL24_JOINTS
from posrft.data.limits import mirror_name

_IDX = {n: i for i, n in enumerate(SMPL24_JOINTS)}
_BILATERAL = ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist")
_MID = ("spine1", "spine2", "spine3", "neck", "head")

SUPPORT_GROUPS: dict[str, tuple[str, ...]] = {
    "left_foot": ("left_ankle", "left_foot"),
    "right_foot": ("right_ankle", "right_foot"),
    "left_knee": ("left_knee",),
    "right_knee": ("right_knee",),
    "left_hand": ("left_wrist", "left_hand"),
    "right_hand": ("right_wrist", "right_hand"),
    "seat": ("left_hip", "right_hip"),
    "back": ("pelvis", "spine1", "spine2", "spine3"),
}

# family tilt of the whole body, applied after ``root`` (axis-angle degrees)
TILTS: dict[str, tuple[float, float, float]] = {
    "upright": (0.0, 0.0, 0.0),
    "supine": (-90.0, 0.0, 0.0),  # lying on the back, face up
    "prone": (90.0, 0.0, 0.0),  # lying on the front
    "side_left": (0.0, 0.0, -90.0),  # lying on the left side
    "side_right": (0.0, 0.0, 90.0),
}

ARMS_DOWN = {"collar": (0, 0, -3), "shoulder": (0, -5, -72), "elbow": (0, -12, 0), "wrist": (0, 0, 0)}
LEGS_STAND = {"hip": (0, 6, 3), "knee": (3, 0, 0), "ankle": (0, 0, 0)}


@dataclass(frozen=True)
class KeyPose:
    name: str
    family: str
    joints: dict[str, tuple[float, float, float]]
    tilt: str = "upright"
    contacts_all: tuple[str, ...] = ()
    contacts_any: tuple[str, ...] = ()
    static: bool = False
    arms_free: bool = False
    gesture: bool = False  # an arm gesture whose arms may be grafted onto arms_free poses
    mirror: bool = False
    weight: float = 1.0
    tags: tuple[str, ...] = field(default_factory=tuple)
    airborne: bool = False  # in flight: no support at all (jumps, the flight phase of a run)

    def coords_deg(self) -> np.ndarray:
        """(24, 3) anatomical coordinates in degrees (right side mirrored, hands zero)."""
        return spec_to_coords(self.joints)

    def mirrored(self) -> "KeyPose":
        """The left-right mirror image, named ``<name>_m`` with swapped contact groups."""
        joints = {}
        for k, v in self.joints.items():
            if k.startswith("l_"):
                joints["r_" + k[2:]] = v
            elif k.startswith("r_"):
                joints["l_" + k[2:]] = v
            elif k in ("spine", "root") or k in _MID:
                joints[k] = (v[0], -v[1], -v[2])
            else:
                joints[k] = v
        swap = lambda names: tuple(mirror_name(n) for n in names)  # noqa: E731
        tilt = {"side_left": "side_right"}.get(self.tilt, self.tilt)
        return KeyPose(self.name + "_m", self.family, joints, tilt, swap(self.contacts_all),
                       swap(self.contacts_any), self.static, self.arms_free, self.gesture,
                       False, self.weight, self.tags, self.airborne)  # fmt: skip



def spec_to_coords(spec: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """Expand a key-pose dict (module docstring) to (24, 3) anatomical degrees."""
    out = np.zeros((24, 3))
    for key, val in spec.items():
        v = np.asarray(val, dtype=np.float64)
        if v.shape != (3,):
            raise ValueError(f"key pose entry {key!r} = {val!r}: expected 3 numbers (x, y, z)")
        mirror = v * np.array([1.0, -1.0, -1.0])
        if key == "root":
            out[0] = v
        elif key == "spine":
            out[[_IDX["spine1"], _IDX["spine2"], _IDX["spine3"]]] = v / 3.0
        elif key in _MID:
            out[_IDX[key]] = v
        elif key in _BILATERAL:
            out[_IDX["left_" + key]] = v
            out[_IDX["right_" + key]] = mirror
        elif key[:2] in ("l_", "r_") and key[2:] in _BILATERAL:
            side = "left_" if key[0] == "l" else "right_"
            out[_IDX[side + key[2:]]] = v if key[0] == "l" else mirror
        else:
            raise ValueError(f"unknown key-pose entry {key!r}")
    return out


def _kp(name, family, *parts, **kw) -> KeyPose:
    joints: dict = {}
    for p in parts:
        # a later bilateral entry overrides earlier one-sided ones and vice versa
        for k, v in p.items():
            if k in _BILATERAL:
                joints.pop("l_" + k, None)
                joints.pop("r_" + k, None)
            joints[k] = v
    return KeyPose(name, family, joints, **kw)


FEET = ("left_foot", "right_foot")
STAND = dict(contacts_all=FEET, static=True)


def _arm(side: str, **joints) -> dict:
    """One-sided arm entries, e.g. ``_arm("l", shoulder=(0, -85, 0))``."""
    return {f"{side}_{k}": v for k, v in joints.items()}


_KEY_POSES: list[KeyPose] = [
    # ---------------------------------------------------------------- standing
    _kp("stand", "standing", ARMS_DOWN, LEGS_STAND, **STAND, arms_free=True, weight=2.0),
    _kp("stand_relaxed", "standing", ARMS_DOWN, LEGS_STAND,
        {"l_hip": (0, 6, -3), "r_hip": (-10, 12, 6), "r_knee": (20, 0, 0), "r_ankle": (6, 0, 0),
         "spine": (0, 0, 4)}, **STAND, arms_free=True, mirror=True),
    _kp("stand_wide", "standing", ARMS_DOWN, {"hip": (0, 10, 14), "knee": (4, 0, 0),
        "ankle": (0, 0, -6)}, **STAND, arms_free=True),
    _kp("stand_feet_together", "standing", ARMS_DOWN, {"hip": (0, 3, -3), "knee": (2, 0, 0)},
        **STAND, arms_free=True),
    _kp("lean_back", "standing", {"spine": (-35, 0, 0), "neck": (-15, 0, 0), "hip": (6, 5, 4),
        "knee": (10, 0, 0), "collar": (0, 0, 10), "shoulder": (0, -10, 70),
        "elbow": (0, -10, 0)}, **STAND),
    # ---------------------------------------------------------------- arm gestures
    _kp("arms_raised", "arms_raised", LEGS_STAND, {"collar": (0, 0, 25),
        "shoulder": (0, -5, 78), "elbow": (0, -8, 0)}, **STAND, gesture=True),
    _kp("arms_v", "arms_raised", LEGS_STAND, {"collar": (0, 0, 18), "shoulder": (0, -15, 52),
        "elbow": (0, -5, 0)}, **STAND, gesture=True),
    _kp("t_pose", "t_pose", LEGS_STAND, {"shoulder": (0, -4, 0), "elbow": (0, -3, 0)}, **STAND,
        gesture=True),
    _kp("a_pose", "a_pose", LEGS_STAND, {"shoulder": (0, -6, -42), "elbow": (0, -6, 0)},
        **STAND, gesture=True),
    _kp("arms_forward", "reaching", LEGS_STAND, {"shoulder": (0, -85, -8), "elbow": (0, -5, 0)},
        **STAND, gesture=True),
    _kp("carry", "carrying", LEGS_STAND, {"shoulder": (0, -12, -66), "elbow": (0, -88, 0),
        "wrist": (0, 0, 10)}, **STAND, gesture=True),
    _kp("shrug", "gesture", LEGS_STAND, {"collar": (0, 0, 22), "shoulder": (-60, -15, -62),
        "elbow": (0, -85, 0)}, **STAND, gesture=True),
    _kp("wave", "waving", LEGS_STAND, ARMS_DOWN, _arm("l", collar=(0, 0, 10),
        shoulder=(-85, -10, 8), elbow=(0, -95, 0), wrist=(0, 0, 15)), {"head": (0, 15, 0)},
        **STAND, gesture=True, mirror=True),
    _kp("wave_high", "waving", LEGS_STAND, ARMS_DOWN, _arm("l", collar=(0, 0, 22),
        shoulder=(0, -10, 70), elbow=(0, -20, 0)), **STAND, gesture=True, mirror=True),
    _kp("point_forward", "pointing", LEGS_STAND, ARMS_DOWN, _arm("l", shoulder=(0, -82, 0),
        elbow=(0, -3, 0)), {"head": (0, 10, 0)}, **STAND, gesture=True, mirror=True),
    _kp("point_side", "pointing", LEGS_STAND, ARMS_DOWN, _arm("l", shoulder=(0, -25, 5),
        elbow=(0, -3, 0)), {"head": (0, 38, 0), "neck": (0, 22, 0)}, **STAND, gesture=True,
        mirror=True),
    _kp("hands_on_hips", "hands_on_hips", LEGS_STAND, {"collar": (0, 0, -3),
        "shoulder": (57, 5, -50), "elbow": (-14, -66, -9), "wrist": (-7, 14, -59)}, **STAND, gesture=True),
    _kp("arms_crossed", "arms_crossed", LEGS_STAND, {"collar": (0, 0, -3),
        "l_shoulder": (51, -26, -77), "r_shoulder": (50, -29, -77), "l_elbow": (-33, -88, -7),
        "r_elbow": (-16, -107, -8)}, **STAND, gesture=True),
    _kp("hands_on_head", "hands_on_head", LEGS_STAND, {"shoulder": (-84, 1, 32),
        "elbow": (0, -127, 9)}, **STAND, gesture=True),
    _kp("clap", "clapping", LEGS_STAND, {"collar": (0, -5, 0), "shoulder": (-11, -37, -88),
        "elbow": (0, -88, -8)}, **STAND, gesture=True),
    _kp("phone_call", "gesture", LEGS_STAND, ARMS_DOWN, _arm("l", shoulder=(-1, -52, -87),
        elbow=(0, -148, -9)), {"head": (0, 0, -8)}, **STAND, gesture=True, mirror=True),
    _kp("thinking", "gesture", LEGS_STAND, _arm("l", collar=(0, 0, -3), shoulder=(12, -42, -59),
        elbow=(0, -134, -9)), _arm("r", collar=(0, 0, -3), shoulder=(41, -66, -77),
        elbow=(0, -71, -9)), {"head": (12, 0, 0)}, **STAND, gesture=True, mirror=True),
    _kp("reach_up", "reaching", ARMS_DOWN, {"hip": (0, 4, 2), "ankle": (25, 0, 0),
        "foot": (-35, 0, 0), "spine": (0, 0, 9)}, _arm("l", collar=(0, 0, 28),
        shoulder=(0, -10, 84), elbow=(0, -3, 0)), {"head": (-25, 0, 0)}, **STAND, mirror=True),
    _kp("reach_forward", "reaching", ARMS_DOWN, {"hip": (-15, 5, 3), "knee": (6, 0, 0),
        "spine": (20, -18, 0)}, _arm("l", collar=(0, -20, 0), shoulder=(0, -78, 5),
        elbow=(0, -3, 0)), **STAND, mirror=True),
    _kp("reach_side", "reaching", ARMS_DOWN, {"hip": (0, 6, 3), "r_hip": (0, 10, 20),
        "r_knee": (8, 0, 0), "spine": (0, 0, -18)}, _arm("l", collar=(0, 0, 12),
        shoulder=(0, -5, 10), elbow=(0, -3, 0)), **STAND, mirror=True),
    # ---------------------------------------------------------------- walking / running
    _kp("walk_heel_strike", "walking",
        {"l_hip": (-25, 3, 2), "l_knee": (3, 0, 0), "l_ankle": (-12, 0, 0),
         "r_hip": (16, 5, 2), "r_knee": (14, 0, 0), "r_ankle": (18, 0, 0), "r_foot": (-25, 0, 0),
         "collar": (0, 0, -3), "l_shoulder": (0, 22, -72), "r_shoulder": (0, -25, -70),
         "l_elbow": (0, -10, 0), "r_elbow": (0, -28, 0), "spine": (3, -6, 0)},
        contacts_any=FEET, mirror=True, weight=1.5),
    _kp("walk_midstance", "walking",
        {"l_hip": (-2, 4, 2), "l_knee": (8, 0, 0), "r_hip": (-28, 5, 2), "r_knee": (58, 0, 0),
         "r_ankle": (-5, 0, 0), "collar": (0, 0, -3), "l_shoulder": (0, 4, -73),
         "r_shoulder": (0, -4, -72), "elbow": (0, -15, 0), "spine": (3, 0, 0)},
        contacts_all=("left_foot",), mirror=True, weight=1.5),
    _kp("walk_push_off", "walking",
        {"l_hip": (12, 4, 2), "l_knee": (6, 0, 0), "l_ankle": (18, 0, 0), "l_foot": (-30, 0, 0),
         "r_hip": (-28, 5, 2), "r_knee": (22, 0, 0), "r_ankle": (-5, 0, 0), "collar": (0, 0, -3),
         "l_shoulder": (0, -22, -72), "r_shoulder": (0, 20, -72), "l_elbow": (0, -28, 0),
         "r_elbow": (0, -10, 0), "spine": (3, 6, 0)},
        contacts_any=FEET, mirror=True, weight=1.5),
    _kp("run_stance", "running",
        {"l_hip": (-12, 3, 2), "l_knee": (38, 0, 0), "l_ankle": (-12, 0, 0),
         "r_hip": (-60, 3, 2), "r_knee": (105, 0, 0), "r_ankle": (10, 0, 0),
         "spine": (12, 0, 0), "collar": (0, 0, -3), "l_shoulder": (0, -42, -68),
         "r_shoulder": (0, 38, -68), "elbow": (0, -92, 0)},
        contacts_all=("left_foot",), mirror=True, weight=1.5),
    _kp("run_flight", "running",
        {"l_hip": (22, 3, 2), "l_knee": (75, 0, 0), "l_ankle": (20, 0, 0),
         "r_hip": (-62, 3, 2), "r_knee": (82, 0, 0), "r_ankle": (5, 0, 0),
         "spine": (12, 0, 0), "collar": (0, 0, -3), "l_shoulder": (0, -45, -66),
         "r_shoulder": (0, 40, -68), "elbow": (0, -90, 0)}, mirror=True, weight=1.5,
        airborne=True),
    # ---------------------------------------------------------------- jumping
    _kp("jump_star", "jumping", {"hip": (0, 10, 28), "knee": (5, 0, 0), "ankle": (30, 0, 0),
        "collar": (0, 0, 15), "shoulder": (0, -5, 50), "elbow": (0, -5, 0)}, airborne=True),
    _kp("jump_tuck", "jumping", {"hip": (-95, 5, 10), "knee": (110, 0, 0), "ankle": (20, 0, 0),
        "shoulder": (0, -60, -30), "elbow": (0, -40, 0), "spine": (10, 0, 0)}, airborne=True),
    _kp("jump_takeoff", "jumping", {"root": (20, 0, 0), "hip": (-65, 5, 5), "knee": (65, 0, 0),
        "ankle": (-18, 0, 0), "spine": (20, 0, 0), "shoulder": (0, 45, -70),
        "elbow": (0, -10, 0)}, contacts_all=FEET),
    _kp("jump_reach", "jumping", {"hip": (-5, 5, 3), "knee": (8, 0, 0), "ankle": (38, 0, 0),
        "collar": (0, 0, 25), "shoulder": (0, -12, 78), "elbow": (0, -5, 0),
        "head": (-20, 0, 0)}, airborne=True),
    # ---------------------------------------------------------------- sitting
    _kp("sit_chair", "sitting_chair", {"hip": (-88, 8, 6), "knee": (86, 0, 0),
        "ankle": (2, 0, 0), "spine": (6, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, -30, -62), "elbow": (0, -55, 0)}, contacts_all=FEET, arms_free=True,
        weight=1.5),
    _kp("sit_chair_back", "sitting_chair", {"hip": (-72, 8, 8), "knee": (55, 0, 0),
        "ankle": (10, 0, 0), "spine": (-8, 0, 0), "neck": (10, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, -15, -70), "elbow": (0, -40, 0)}, contacts_all=FEET, arms_free=True),
    _kp("sit_chair_forward", "sitting_chair", {"hip": (-100, 8, 10), "knee": (95, 0, 0),
        "ankle": (-5, 0, 0), "spine": (28, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, -48, -50), "elbow": (0, -70, 0)}, contacts_all=FEET),
    _kp("sit_floor_cross", "sitting_floor", {"l_hip": (-95, 59, 35),
        "r_hip": (-102, 59, 33), "l_knee": (141, 29, -7), "r_knee": (124, 29, -7),
        "l_ankle": (48, -20, -14), "r_ankle": (45, -19, -13), "spine": (12, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, -35, -58), "elbow": (0, -35, 0)}, contacts_all=("seat", "left_foot", "right_foot"),
        arms_free=True),
    _kp("sit_floor_long", "sitting_floor", {"hip": (-88, 5, 6), "knee": (2, 0, 0),
        "ankle": (22, 0, 0), "spine": (-6, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, 32, -72), "elbow": (0, -2, 0), "wrist": (0, 0, 60)},
        contacts_all=("seat", "left_foot", "right_foot")),
    _kp("sit_floor_knees_up", "sitting_floor", {"hip": (-125, 30, 45), "knee": (112, 0, -6),
        "ankle": (-5, 0, 0), "spine": (25, 0, 0), "collar": (0, -10, 0),
        "shoulder": (43, -18, 3), "elbow": (-19, -86, -9)}, contacts_all=("seat", "left_foot", "right_foot")),
    # ---------------------------------------------------------------- squatting / crouching
    _kp("squat_deep", "squatting", {"hip": (-118, 25, 25), "knee": (142, 0, 0),
        "ankle": (-28, 0, 0), "spine": (18, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, -72, -22), "elbow": (0, -22, 0)}, contacts_all=FEET, static=True,
        arms_free=True),
    _kp("squat_half", "squatting", {"root": (28, 0, 0), "hip": (-100, 10, 12), "knee": (90, 0, 0),
        "ankle": (-22, 0, 0), "spine": (8, 0, 0), "shoulder": (0, -85, -5),
        "elbow": (0, -5, 0)}, contacts_all=FEET, static=True, arms_free=True),
    _kp("crouch", "crouching", {"root": (12, 0, 0), "hip": (-122, 15, 20), "knee": (148, 0, 0),
        "ankle": (18, 0, 0), "foot": (-50, 0, 0), "spine": (20, 0, 0), "collar": (0, 0, -3),
        "shoulder": (-6, -63, -39), "elbow": (0, -35, 6)}, contacts_all=FEET, static=True),
    # ---------------------------------------------------------------- kneeling
    _kp("kneel_upright", "kneeling", {"hip": (0, 5, 5), "knee": (90, 0, 0),
        "ankle": (45, 0, 0)}, ARMS_DOWN, contacts_all=("left_knee", "right_knee"),
        static=True, arms_free=True),
    _kp("kneel_sit_heels", "kneeling", {"hip": (-68, 5, 5), "knee": (150, 0, 0),
        "ankle": (45, 0, 0), "spine": (4, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, -35, -62), "elbow": (0, -50, 0)},
        contacts_all=("left_knee", "right_knee", "left_foot", "right_foot"), arms_free=True),
    _kp("kneel_one", "kneeling", {"l_hip": (-85, 5, 5), "l_knee": (88, 0, 0),
        "l_ankle": (-5, 0, 0), "r_hip": (8, 0, 0), "r_knee": (95, 0, 0), "r_ankle": (25, 0, 0),
        "r_foot": (-50, 0, 0)}, ARMS_DOWN, contacts_all=("left_foot", "right_knee"),
        static=True, arms_free=True, mirror=True),
    _kp("all_fours", "all_fours", {"root": (88, 0, 0), "hip": (-88, 3, 5), "knee": (90, 0, 0),
        "ankle": (50, 0, 0), "foot": (25, 0, 0), "shoulder": (0, -88, -8),
        "elbow": (0, -3, 0), "wrist": (0, 0, 70), "neck": (-20, 0, 0)},
        contacts_all=("left_knee", "right_knee", "left_hand", "right_hand", "left_foot",
                      "right_foot"), static=True),
    _kp("plank", "plank", {"root": (72, 0, 0), "hip": (2, 0, 0), "ankle": (-15, 0, 0),
        "foot": (-55, 0, 0), "shoulder": (0, -72, -8), "elbow": (0, -3, 0),
        "wrist": (0, 0, 72), "neck": (-15, 0, 0)},
        contacts_all=("left_hand", "right_hand", "left_foot", "right_foot"), static=True),
    # ---------------------------------------------------------------- lunges
    _kp("lunge", "lunging", {"l_hip": (-82, 5, 3), "l_knee": (88, 0, 0), "l_ankle": (-12, 0, 0),
        "r_hip": (20, 3, 3), "r_knee": (70, 0, 0), "r_ankle": (30, 0, 0), "r_foot": (-50, 0, 0)},
        ARMS_DOWN, contacts_all=FEET, static=True, arms_free=True, mirror=True),
    _kp("lunge_side", "lunging", {"l_hip": (-55, 25, 38), "l_knee": (95, 0, 0),
        "l_ankle": (-20, 0, 0), "r_hip": (-5, 15, 35), "r_knee": (2, 0, 0),
        "r_ankle": (0, 0, 18), "spine": (20, 0, 0), "shoulder": (0, -60, -40),
        "elbow": (0, -60, 0)}, contacts_all=FEET, static=True, mirror=True),
    # ---------------------------------------------------------------- bending
    _kp("bend_forward", "bending", {"root": (55, 0, 0), "hip": (-75, 3, 3), "knee": (6, 0, 0),
        "ankle": (16, 0, 0), "spine": (60, 0, 0), "neck": (10, 0, 0), "collar": (0, -10, 0),
        "shoulder": (0, -72, 58), "elbow": (0, -5, 0)}, contacts_all=FEET, static=True),
    _kp("bend_hands_knees", "bending", {"root": (38, 0, 0), "hip": (-70, 5, 5),
        "knee": (38, 0, 0), "ankle": (-2, 0, 0), "spine": (12, 0, 0), "neck": (-10, 0, 0),
        "shoulder": (0, -72, -28), "elbow": (0, -8, 0)}, contacts_all=FEET, static=True),
    _kp("bend_side", "stretching", {"hip": (0, 6, 6), "spine": (0, 0, 30), "neck": (0, 0, 8),
        "l_collar": (0, 0, 25), "l_shoulder": (0, -5, 82), "l_elbow": (0, -15, 0),
        "r_shoulder": (0, -5, -55), "r_elbow": (0, -5, 0)}, contacts_all=FEET, static=True,
        mirror=True),
    _kp("stretch_up", "stretching", {"hip": (0, 5, 3), "ankle": (20, 0, 0),
        "foot": (-30, 0, 0), "collar": (0, 0, 28), "shoulder": (0, -4, 70), "elbow": (0, -2, 0),
        "spine": (-6, 0, 0), "head": (-15, 0, 0)}, contacts_all=FEET, static=True),
    # ---------------------------------------------------------------- lying
    _kp("lie_back", "lying_back", {"hip": (0, 10, 6), "ankle": (25, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, 0, -72), "elbow": (0, -8, 0)}, tilt="supine", contacts_all=("back",),
        arms_free=True, weight=1.5),
    _kp("lie_back_knees_up", "lying_back", {"hip": (-55, 0, 5), "knee": (105, 0, 0),
        "ankle": (0, 0, 0), "shoulder": (0, 0, -65), "elbow": (0, -10, 0)}, tilt="supine",
        contacts_all=("back",), arms_free=True),
    _kp("lie_back_starfish", "lying_back", {"hip": (0, 15, 28), "ankle": (25, 0, 0),
        "shoulder": (0, 0, 30), "elbow": (0, -10, 0)}, tilt="supine", contacts_all=("back",)),
    _kp("lie_side", "lying_side", {"hip": (-45, 5, 0), "knee": (65, 0, 0), "ankle": (15, 0, 0),
        "spine": (15, 0, 0), "neck": (10, 0, 0), "shoulder": (0, -70, -20),
        "elbow": (0, -60, 0)}, tilt="side_left", weight=1.5, mirror=True),
    _kp("lie_side_straight", "lying_side", {"hip": (-10, 5, 0), "knee": (15, 0, 0),
        "ankle": (20, 0, 0), "l_shoulder": (0, -10, 80), "l_elbow": (0, -20, 0),
        "r_shoulder": (0, 0, -72), "r_elbow": (0, -10, 0)}, tilt="side_left", mirror=True),
    _kp("lie_front", "lying_front", {"hip": (0, 10, 6), "ankle": (35, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, 0, -72), "elbow": (0, -8, 0), "neck": (0, 25, 0),
        "head": (0, 40, 0)}, tilt="prone"),
    _kp("lie_front_elbows", "lying_front", {"hip": (0, 10, 6), "ankle": (35, 0, 0),
        "spine": (-45, 0, 0), "neck": (-15, 0, 0), "shoulder": (-33, -69, -49),
        "elbow": (0, -79, 10)}, tilt="prone"),
    # ---------------------------------------------------------------- kicking / one leg
    _kp("kick_front", "kicking", {"l_hip": (-85, 0, 3), "l_knee": (8, 0, 0),
        "l_ankle": (-10, 0, 0), "r_knee": (12, 0, 0), "r_hip": (0, 10, 3), "spine": (-10, 0, 0),
        "shoulder": (0, -25, -30), "elbow": (0, -20, 0)}, contacts_all=("right_foot",),
        mirror=True),
    _kp("kick_side", "kicking", {"l_hip": (-10, 0, 62), "l_knee": (10, 0, 0),
        "l_ankle": (-10, 0, 0), "r_hip": (0, 10, 8), "r_knee": (10, 0, 0), "spine": (0, 0, 28),
        "shoulder": (0, -60, -45), "elbow": (0, -115, 0)}, contacts_all=("right_foot",),
        mirror=True),
    _kp("knee_raise", "balancing", {"l_hip": (-92, 3, 3), "l_knee": (92, 0, 0),
        "l_ankle": (15, 0, 0), "r_hip": (0, 6, 3), "r_knee": (4, 0, 0), "shoulder": (0, -5, -45),
        "elbow": (0, -10, 0)}, contacts_all=("right_foot",), static=True, mirror=True),
    _kp("throw_windup", "throwing", {"l_hip": (-32, 0, 12), "l_knee": (15, 0, 0),
        "r_hip": (6, 22, 10), "r_knee": (22, 0, 0), "spine": (0, -30, 8),
        "r_collar": (0, 10, 10), "r_shoulder": (-70, 30, 12), "r_elbow": (0, -95, 0),
        "l_shoulder": (0, -75, 0), "l_elbow": (0, -10, 0), "head": (0, 30, 0)},
        contacts_all=FEET, mirror=True),
    _kp("throw_release", "throwing", {"l_hip": (-45, 0, 8), "l_knee": (30, 0, 0),
        "r_hip": (20, 10, 5), "r_knee": (35, 0, 0), "r_ankle": (25, 0, 0),
        "r_foot": (-40, 0, 0), "spine": (20, 28, 0), "r_shoulder": (0, -60, 35),
        "r_elbow": (0, -15, 0), "l_shoulder": (0, 30, -60), "l_elbow": (0, -60, 0)},
        contacts_all=("left_foot",), mirror=True),
    _kp("boxing_guard", "boxing", {"l_hip": (-15, 0, 5), "l_knee": (15, 0, 0),
        "r_hip": (8, 25, 6), "r_knee": (18, 0, 0), "spine": (5, -20, 0),
        "shoulder": (-20, -40, -52), "elbow": (0, -132, 0)}, contacts_all=FEET, static=True,
        mirror=True),
    # ---------------------------------------------------------------- yoga-like balance
    _kp("tree", "yoga", {"r_hip": (-40, 45, 58), "r_knee": (140, 0, 0), "r_ankle": (15, 0, 0),
        "l_hip": (0, 5, -2), "collar": (0, 0, 20), "shoulder": (0, -5, 80),
        "elbow": (0, -25, 0)}, contacts_all=("left_foot",), static=True, mirror=True),
    _kp("warrior2", "yoga", {"l_hip": (-62, 35, 32), "l_knee": (85, 0, 0),
        "l_ankle": (-15, 0, 0), "r_hip": (0, 25, 32), "r_knee": (2, 0, 0),
        "r_ankle": (0, 0, 15), "shoulder": (0, -3, 0), "elbow": (0, -2, 0),
        "neck": (0, 25, 0), "head": (0, 40, 0)}, contacts_all=FEET, static=True,
        mirror=True),
    _kp("t_balance", "yoga", {"root": (82, 0, 0), "l_hip": (-85, 3, 2), "l_knee": (4, 0, 0),
        "r_hip": (0, 3, 2), "r_knee": (2, 0, 0), "r_ankle": (30, 0, 0), "neck": (-20, 0, 0),
        "shoulder": (0, -5, 0), "elbow": (0, -3, 0)}, contacts_all=("left_foot",),
        static=True, mirror=True),
    _kp("quad_stretch", "balancing", {"r_hip": (12, 0, 0), "r_knee": (148, 0, 0),
        "r_ankle": (30, 0, 0), "l_hip": (0, 5, -2), "l_knee": (3, 0, 0),
        "r_shoulder": (0, 40, -72), "r_elbow": (0, -20, 0), "l_shoulder": (0, -5, -10)},
        contacts_all=("left_foot",), static=True, mirror=True),
    _kp("downward_dog", "yoga", {"root": (128, 0, 0), "hip": (-100, 3, 3), "knee": (4, 0, 0),
        "ankle": (-25, 0, 0), "collar": (0, 0, 15), "shoulder": (0, -5, 68),
        "elbow": (0, -3, 0), "wrist": (0, 0, 70)},
        contacts_all=("left_hand", "right_hand", "left_foot", "right_foot")),
]  # fmt: skip


def key_poses(include_mirrors: bool = True, version: int = 2) -> list[KeyPose]:
    """All key poses (with the mirror images of asymmetric ones by default).

    ``version=1``: the original library; ``2`` (default) adds the motion phases and sports
    stances of :mod:`posrft.data.keyposes_motion`.
    """
    if version not in (1, 2):
        raise ValueError(f"key-pose library version must be 1 or 2, got {version!r}")
    from posrft.data.keyposes_motion import MOTION_KEY_POSES

    out = []
    for kp in _KEY_POSES + (MOTION_KEY_POSES if version == 2 else []):
        out.append(kp)
        if include_mirrors and kp.mirror:
            out.append(kp.mirrored())
    return out


def families(version: int = 2) -> list[str]:
    return sorted({kp.family for kp in key_poses(False, version)})
