"""Key poses of the prior's second library: motion phases and sports stances, and transitions.

Real motion capture spends much of its time between the original library's postures: the
counter-movement, push-off, flight and landing of a jump (a half crouch with the torso 35-45
deg forward, the knees at 70-80 deg of flexion, the hands swung back or held in front of the
chest), a forward lean with the arms reaching forward, and the crouched stances of sports.
:data:`MOTION_KEY_POSES` adds those (same notation as :mod:`posrft.data.keyposes`), and
:data:`TRANSITIONS` lists pairs of key poses that follow each other in a motion: the prior
(:mod:`posrft.data.prior`) blends along them as it blends within a family, so the poses
*between* two phases are sampled too.
"""

from __future__ import annotations

from posrft.data.keyposes import FEET, STAND, KeyPose, _kp

ONE_FOOT_L = ("left_foot",)

MOTION_KEY_POSES: list[KeyPose] = [
    # ---------------------------------------------------------------- jump phases
    _kp("jump_load_arms_back", "jumping", {"root": (22, 0, 0), "hip": (-72, 6, 8),
        "knee": (76, 0, 0), "ankle": (-22, 0, 0), "spine": (18, 0, 0), "collar": (0, 0, -3),
        "shoulder": (0, 40, -62), "elbow": (0, -12, 0)}, contacts_all=FEET),
    _kp("jump_load_arms_forward", "jumping", {"root": (20, 0, 0), "hip": (-70, 6, 8),
        "knee": (74, 0, 0), "ankle": (-22, 0, 0), "spine": (20, 0, 0), "collar": (0, -8, 0),
        "shoulder": (0, -62, -35), "elbow": (0, -45, 0)}, contacts_all=FEET),
    _kp("jump_push_off", "jumping", {"root": (12, 0, 0), "hip": (-22, 4, 4), "knee": (20, 0, 0),
        "ankle": (30, 0, 0), "foot": (-35, 0, 0), "spine": (6, 0, 0), "collar": (0, 0, 15),
        "shoulder": (0, -55, 35), "elbow": (0, -15, 0)}, contacts_all=FEET),
    _kp("jump_rise", "jumping", {"hip": (-8, 4, 4), "knee": (8, 0, 0), "ankle": (38, 0, 0),
        "foot": (-10, 0, 0), "collar": (0, 0, 22), "shoulder": (0, -20, 70), "elbow": (0, -8, 0),
        "head": (-10, 0, 0)}, airborne=True),
    _kp("jump_fall_arms_forward", "jumping", {"root": (10, 0, 0), "hip": (-35, 5, 6),
        "knee": (40, 0, 0), "ankle": (20, 0, 0), "spine": (10, 0, 0),
        "shoulder": (0, -75, -10), "elbow": (0, -25, 0)}, airborne=True),
    _kp("jump_land", "jumping", {"root": (24, 0, 0), "hip": (-76, 8, 9), "knee": (82, 0, 0),
        "ankle": (-24, 0, 0), "spine": (16, 0, 0), "collar": (0, -5, 0),
        "shoulder": (0, -72, -22), "elbow": (0, -30, 0)}, contacts_all=FEET),
    _kp("jump_land_deep", "jumping", {"root": (30, 0, 0), "hip": (-104, 10, 12),
        "knee": (112, 0, 0), "ankle": (-28, 0, 0), "spine": (14, 0, 0), "collar": (0, -5, 0),
        "shoulder": (0, -80, -18), "elbow": (0, -25, 0)}, contacts_all=FEET),
    _kp("hop_land", "jumping", {"root": (15, 0, 0), "l_hip": (-45, 5, 5), "l_knee": (55, 0, 0),
        "l_ankle": (-15, 0, 0), "r_hip": (-30, 5, 5), "r_knee": (70, 0, 0),
        "r_ankle": (15, 0, 0), "spine": (10, 0, 0), "shoulder": (0, -40, -40),
        "elbow": (0, -40, 0)}, contacts_all=ONE_FOOT_L, mirror=True),
    # ---------------------------------------------------------------- forward lean, arms forward
    _kp("lean_arms_forward", "leaning", {"root": (32, 0, 0), "hip": (-36, 4, 4),
        "knee": (10, 0, 0), "ankle": (-4, 0, 0), "spine": (10, 0, 0), "collar": (0, -10, 0),
        "shoulder": (0, -78, -5), "elbow": (0, -10, 0)}, **STAND),
    _kp("lean_reach_low", "leaning", {"root": (48, 0, 0), "hip": (-58, 4, 4), "knee": (22, 0, 0),
        "ankle": (-10, 0, 0), "spine": (14, 0, 0), "collar": (0, -10, 0),
        "shoulder": (0, -60, -40), "elbow": (0, -8, 0)}, **STAND),
    _kp("lean_push", "leaning", {"root": (35, 0, 0), "l_hip": (-60, 4, 4), "l_knee": (55, 0, 0),
        "l_ankle": (-20, 0, 0), "r_hip": (10, 4, 4), "r_knee": (8, 0, 0),
        "r_ankle": (-15, 0, 0), "spine": (5, 0, 0), "shoulder": (0, -82, -8),
        "elbow": (0, -15, 0)}, contacts_all=FEET, mirror=True),
    # ---------------------------------------------------------------- sports stances
    _kp("athletic_ready", "sports", {"root": (24, 0, 0), "hip": (-58, 8, 12), "knee": (52, 0, 0),
        "ankle": (-18, 0, 0), "spine": (10, 0, 0), "collar": (0, -5, 0),
        "shoulder": (0, -45, -48), "elbow": (0, -70, 0)}, **STAND),
    _kp("defense_stance", "sports", {"root": (18, 0, 0), "hip": (-62, 14, 24), "knee": (66, 0, 0),
        "ankle": (-20, 0, -6), "spine": (10, 0, 0), "shoulder": (0, -28, -12),
        "elbow": (0, -25, 0)}, **STAND),
    _kp("batting_stance", "sports", {"hip": (-18, 5, 10), "knee": (22, 0, 0),
        "ankle": (-8, 0, 0), "spine": (8, -15, 0), "neck": (0, 15, 0), "head": (0, 38, 0),
        "l_shoulder": (0, -75, -35), "l_elbow": (0, -85, 0), "r_shoulder": (0, -30, -30),
        "r_elbow": (0, -120, 0)}, **STAND, mirror=True),
    _kp("golf_address", "sports", {"root": (34, 0, 0), "hip": (-40, 5, 8), "knee": (18, 0, 0),
        "ankle": (-8, 0, 0), "spine": (10, 0, 0), "neck": (-10, 0, 0),
        "shoulder": (0, -45, -70), "elbow": (0, -6, 0)}, **STAND),
    _kp("ski_tuck", "sports", {"root": (42, 0, 0), "hip": (-108, 6, 8), "knee": (100, 0, 0),
        "ankle": (-26, 0, 0), "spine": (22, 0, 0), "neck": (-20, 0, 0),
        "shoulder": (0, -70, -35), "elbow": (0, -30, 0)}, contacts_all=FEET),
    _kp("volleyball_dig", "sports", {"root": (30, 0, 0), "hip": (-70, 12, 22),
        "knee": (78, 0, 0), "ankle": (-24, 0, 0), "spine": (8, 0, 0), "collar": (0, -8, 0),
        "shoulder": (0, -62, -52), "elbow": (0, -4, 0)}, **STAND),
    _kp("horse_stance", "sports", {"root": (10, 0, 0), "hip": (-72, 18, 34), "knee": (78, 0, 0),
        "ankle": (-12, 0, -8), "collar": (0, 0, -3), "shoulder": (0, 20, -70),
        "elbow": (0, -105, 0)}, **STAND),
    _kp("skate_push", "sports", {"root": (38, 0, 0), "l_hip": (-78, 5, 8), "l_knee": (80, 0, 0),
        "l_ankle": (-24, 0, 0), "r_hip": (-18, 25, 38), "r_knee": (6, 0, 0),
        "r_ankle": (0, 0, 12), "spine": (14, 0, 0), "l_shoulder": (0, -60, -40),
        "l_elbow": (0, -30, 0), "r_shoulder": (0, 40, -60), "r_elbow": (0, -10, 0)},
        contacts_all=FEET, mirror=True),
    _kp("golf_backswing", "sports", {"root": (28, 0, 0), "hip": (-38, 5, 8), "knee": (18, 0, 0),
        "ankle": (-8, 0, 0), "spine": (8, 45, 0), "neck": (0, -25, 0), "head": (0, -20, 0),
        "l_collar": (0, 0, 10), "l_shoulder": (0, -85, 10), "l_elbow": (0, -5, 0),
        "r_shoulder": (-30, -40, 40), "r_elbow": (0, -95, 0)}, **STAND, mirror=True),
    _kp("forehand_swing", "sports", {"root": (12, 0, 0), "l_hip": (-35, 5, 8),
        "l_knee": (35, 0, 0), "r_hip": (5, 10, 8), "r_knee": (25, 0, 0), "spine": (8, -40, 0),
        "head": (0, 30, 0), "r_shoulder": (0, -20, 10), "r_elbow": (0, -20, 0),
        "l_shoulder": (0, -60, -30), "l_elbow": (0, -60, 0)}, contacts_all=FEET, mirror=True),
]  # fmt: skip

#: Consecutive phases of a motion (key-pose names, mirror images follow their originals).
TRANSITIONS: list[tuple[str, str]] = [
    ("stand", "jump_load_arms_back"), ("stand", "jump_load_arms_forward"),
    ("jump_load_arms_back", "jump_push_off"), ("jump_load_arms_forward", "jump_push_off"),
    ("jump_push_off", "jump_rise"), ("jump_rise", "jump_reach"),
    ("jump_rise", "jump_fall_arms_forward"), ("jump_fall_arms_forward", "jump_land"),
    ("jump_land", "jump_land_deep"), ("jump_land", "stand"),
    ("jump_land", "jump_load_arms_forward"), ("jump_tuck", "jump_fall_arms_forward"),
    ("stand", "squat_half"), ("squat_half", "squat_deep"), ("squat_half", "crouch"),
    ("stand", "lean_arms_forward"), ("lean_arms_forward", "lean_reach_low"),
    ("stand", "bend_forward"), ("stand", "bend_hands_knees"), ("stand", "sit_chair"),
    ("stand", "athletic_ready"), ("athletic_ready", "defense_stance"),
    ("athletic_ready", "jump_load_arms_forward"), ("stand_wide", "horse_stance"),
    ("walk_midstance", "run_stance"), ("walk_heel_strike", "walk_push_off"),
    ("run_stance", "run_flight"), ("stand", "lunge"), ("hop_land", "run_stance"),
    ("golf_address", "golf_backswing"), ("athletic_ready", "forehand_swing"),
]  # fmt: skip
