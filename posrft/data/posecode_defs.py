"""Posecode tables: the first set (metres, the floor under each pose) and the second.

Version 1 is PoseScript's set as posrft first used it: distances and relative positions in
metres, "on the ground" relative to the pose's own lowest support point.

Version 2 (the default) keeps every code of version 1 and measures it against the body and the
floor (:mod:`posrft.data.posecodes` kinds):

* pair distances (hands, feet, knees, elbows) in the body's own shoulder widths
  (``sdistance``): close < 0.5, *shoulder width* 0.75-1.3, spread 1.3-2.3, wide > 2.3;
* "near" distances and relative positions at the stand-in's size (``ndistance``, ``nrelpos``:
  metres scaled by the stand-in's stature over the body's);
* contacts against the floor (``floor``): given (a clip's floor, the prior's floor under a
  jump) or the pose's lowest support point;

and adds what real motion needs: *in the air* / *jumping* (the whole body above the floor),
*both feet off the floor*, the hands at head / shoulder / chest / hip height and in front of
the chest (15-45 cm ahead of it, within 25 cm of the midline, not above it), leaning far
forward, a forward-leaning half crouch and a half squat. A super-posecode whose subject is a
body part (the hand in front of the chest) is phrased like an elementary code.
"""

from __future__ import annotations

import math

from posrft.data.posecodes import PosecodeDef, Relation, SuperDef

INF = math.inf
GROUND_JOINTS = {
    "left_foot": ("left_ankle", "left_foot"), "right_foot": ("right_ankle", "right_foot"),
    "left_knee": ("left_knee",), "right_knee": ("right_knee",),
    "left_hand": ("left_wrist", "left_hand"), "right_hand": ("right_wrist", "right_hand"),
    "seat": ("left_hip", "right_hip"),
    "trunk": ("pelvis", "spine1", "spine2", "spine3", "left_hip", "right_hip", "left_shoulder",
              "right_shoulder"),
}  # fmt: skip

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


def defs_v1() -> list[PosecodeDef]:
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


def supers_v1() -> list[SuperDef]:
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


# ------------------------------------------------------------------------------ version 2

SW_BINS = (("close", 0, 0.5), ("shoulder width", 0.75, 1.3), ("spread", 1.3, 2.3),
           ("wide", 2.3, INF))  # fmt: skip
SW_MARGIN = 0.08
_V2_KIND = {"distance": "ndistance", "relpos": "nrelpos", "ground": "floor"}
ALL_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
FEET_JOINTS = GROUND_JOINTS["left_foot"] + GROUND_JOINTS["right_foot"]


def _to_v2(d: PosecodeDef) -> PosecodeDef:
    """A version-1 code measured against the body and the floor (module docstring)."""
    if d.key.startswith("dist:"):
        names = {name for name, _, _ in d.bins}
        bins = tuple(b for b in SW_BINS if b[0] in names)
        return PosecodeDef(d.key, "sdistance", d.joints, bins, SW_MARGIN, d.subject, d.axis,
                           d.mirror, d.covers)  # fmt: skip
    return PosecodeDef(d.key, _V2_KIND.get(d.kind, d.kind), d.joints, d.bins, d.margin,
                       d.subject, d.axis, d.mirror, d.covers)  # fmt: skip


def _super_to_v2(d: SuperDef) -> SuperDef:
    parts = tuple((Relation(_V2_KIND.get(r.kind, r.kind), r.joints, r.lo, r.hi, r.axis), m)
                  for r, m in d.parts)  # fmt: skip
    return SuperDef(d.key, parts, d.subject, d.mirror, d.covers)


def defs_v2() -> list[PosecodeDef]:
    out = [_to_v2(d) for d in defs_v1()]
    out.append(PosecodeDef("floor:feet", "floor", FEET_JOINTS, (("off the ground", 0.10, INF),),
                           0.03, "feet", covers=("ground:left_foot", "ground:right_foot")))
    for s in ("left", "right"):
        o = "right" if s == "left" else "left"
        hand = f"{s}_hand"
        levels = [("head", "head", 0.10), ("shoulder", f"{s}_shoulder", 0.07),
                  ("chest", "spine3", 0.07), ("hip", f"{s}_hip", 0.07)]
        for name, ref, half in levels:
            out.append(PosecodeDef(f"level:{hand}:{name}", "nrelpos", (hand, ref),
                                   (("level", -half, half),), 0.03, f"{s} hand", axis=1,
                                   mirror=f"level:{o}_hand:{name}"))  # fmt: skip
    return out


def supers_v2() -> list[SuperDef]:
    torso = ("pelvis", "neck")
    g = GROUND_JOINTS
    knee = {s: (f"{s}_hip", f"{s}_knee", f"{s}_ankle") for s in ("left", "right")}
    feet_down = ((_r("floor", g["left_foot"], 0, 0.08), 0.03),
                 (_r("floor", g["right_foot"], 0, 0.08), 0.03))  # fmt: skip
    out = [_super_to_v2(d) for d in supers_v1()]
    airborne = (_r("floor", ALL_JOINTS, 0.10, INF), 0.03)
    for s in ("left", "right"):  # a hand in front of the chest, not out to the side
        o = "right" if s == "left" else "left"
        out.append(SuperDef(f"rel:{s}_hand:chest", (
            (_r("nrelpos", (f"{s}_hand", "spine3"), 0.15, 0.45, 2), 0.03),
            (_r("nrelpos", (f"{s}_hand", "spine3"), -0.25, 0.25, 0), 0.03),
            (_r("nrelpos", (f"{s}_hand", "spine3"), -0.3, 0.15, 1), 0.03)),
            subject=f"{s} hand", mirror=f"rel:{o}_hand:chest"))  # fmt: skip
    out += [
        SuperDef("airborne", (airborne,), covers=("ground:left_foot", "ground:right_foot",
                                                   "floor:feet")),
        SuperDef("jumping", (airborne, (_r("vertical", torso, 0, 30), 5),
                             (_r("nrelpos", ("left_foot", "right_foot"), -0.15, 0.15, 1), 0.03)),
                 covers=("airborne", "ground:left_foot", "ground:right_foot", "floor:feet")),
        SuperDef("lean:forward_far", ((_r("nrelpos", ("neck", "pelvis"), 0.35, INF, 2), 0.03),
                                      (_r("vertical", torso, 35, 75), 5)),
                 covers=("lean:forward",)),
        SuperDef("crouching", ((_r("angle", knee["left"], 60, 130), 5),
                               (_r("angle", knee["right"], 60, 130), 5), *feet_down,
                               (_r("floor", g["seat"], 0.25, INF), 0.03),
                               (_r("nrelpos", ("neck", "pelvis"), 0.12, INF, 2), 0.03),
                               (_r("vertical", torso, 20, 70), 5)),
                 covers=("ground:left_foot", "ground:right_foot", "lean:forward")),
        SuperDef("half_squat", ((_r("angle", knee["left"], 80, 135), 5),
                                (_r("angle", knee["right"], 80, 135), 5), *feet_down,
                                (_r("floor", g["seat"], 0.25, INF), 0.03),
                                (_r("vertical", torso, 0, 25), 5)),
                 covers=("ground:left_foot", "ground:right_foot")),
    ]  # fmt: skip
    return out
