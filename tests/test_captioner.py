"""Posecodes and captions: every statement is re-checked on its pose by independent numpy code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posrft.body.formats import SMPL24_JOINTS
from posrft.data import captioner, posecodes
from posrft.data.plausibility import SUPPORT_OFFSET
from posrft.data.prior import library, sample_poses
from posrft.data.skeleton import pose_joints

J = {n: i for i, n in enumerate(SMPL24_JOINTS)}
OFFSET = SUPPORT_OFFSET.numpy().astype(np.float64)


# ------------------------------------------------------------- an independent evaluator


def _unit(v):
    return v / np.linalg.norm(v)


def _yaw_free(joints: np.ndarray) -> np.ndarray:
    """Joints turned about the vertical so the pelvis frame has no twist about y.

    The pelvis frame R = [x, y, z] (columns) with x along the hips and z = x cross
    (spine1 - pelvis); its twist about y follows from quaternion algebra without any library:
    tau = 2 atan2(R02 - R20, 1 + trace R).
    """
    x = _unit(joints[J["left_hip"]] - joints[J["right_hip"]])
    z = _unit(np.cross(x, joints[J["spine1"]] - joints[J["pelvis"]]))
    y = np.cross(z, x)
    r = np.stack([x, y, z], axis=1)
    tau = 2.0 * np.arctan2(r[0, 2] - r[2, 0], 1.0 + np.trace(r))
    c, s = np.cos(-tau), np.sin(-tau)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return (joints - joints[0]) @ rot.T + joints[0]


def _value(rel: posecodes.Relation, joints: np.ndarray) -> float:
    p = {n: joints[J[n]] for n in SMPL24_JOINTS}
    if rel.kind == "angle":
        a, b, c = (p[n] for n in rel.joints)
        return float(np.degrees(np.arccos(np.clip(_unit(a - b) @ _unit(c - b), -1, 1))))
    if rel.kind == "distance":
        return float(np.linalg.norm(p[rel.joints[0]] - p[rel.joints[1]]))
    if rel.kind == "relpos":
        f = _yaw_free(joints)
        return float(f[J[rel.joints[0]], rel.axis] - f[J[rel.joints[1]], rel.axis])
    if rel.kind == "vertical":
        seg = _unit(p[rel.joints[1]] - p[rel.joints[0]])
        return float(np.degrees(np.arccos(abs(seg[1]))))
    if rel.kind == "ground":
        h = joints[:, 1] - OFFSET
        return float(min(h[J[n]] for n in rel.joints) - h.min())
    if rel.kind == "facing":
        left = _unit(p["left_shoulder"] - p["right_shoulder"] + p["left_hip"] - p["right_hip"])
        up = _unit(p["neck"] - p["pelvis"])
        axis = left if rel.axis == 0 else _unit(np.cross(left, up))
        return float(axis[1])
    raise AssertionError(rel.kind)


def _holds(rel, joints, eps=1e-6) -> bool:
    v = _value(rel, joints)
    return rel.lo - eps <= v <= rel.hi + eps


@pytest.fixture(scope="module")
def poses():
    s = sample_poses(300, seed=21, yaw_deg=180.0)
    return s


@pytest.fixture(scope="module")
def captions(poses):
    return captioner.caption_poses(poses.joints, seed=0)


# ------------------------------------------------------------- body frame


def test_heading_and_body_frame_are_yaw_invariant(poses):
    j = poses.joints[:40].astype(np.float64)
    psi = np.radians(73.0)
    rot = np.array([[np.cos(psi), 0, np.sin(psi)], [0, 1, 0], [-np.sin(psi), 0, np.cos(psi)]])
    turned = (j - j[:, :1]) @ rot.T + j[:, :1]
    dh = np.angle(np.exp(1j * (posecodes.heading(turned) - posecodes.heading(j))))
    assert np.allclose(dh, psi, atol=1e-6)
    assert np.allclose(posecodes.body_frame(turned), posecodes.body_frame(j), atol=1e-6)
    rest = pose_joints(torch.zeros(1, 72)).numpy()
    assert abs(posecodes.heading(rest)[0]) < 1e-6


def test_relation_values_match_independent_evaluation(poses):
    j = poses.joints[:25].astype(np.float64)
    rels = [d.relation(d.bins[0][0]) for d in posecodes.POSECODES]
    rels += [r for d in posecodes.SUPER_POSECODES for r in d.relations]
    for rel in rels:
        ours = rel.value(j)
        ref = np.array([_value(rel, x) for x in j])
        assert np.allclose(ours, ref, atol=1e-6), rel


# ------------------------------------------------------------- faithfulness


def test_every_statement_holds(poses, captions):
    assert len(captions) == 300
    n_rel = 0
    for i, cap in enumerate(captions):
        assert cap.clauses and cap.text
        for clause in cap.clauses:
            for rel in clause.relations:
                n_rel += 1
                ok = _holds(rel, poses.joints[i].astype(np.float64))
                assert ok, (i, cap.text, clause.text, rel)
                assert rel.holds(poses.joints[i])[0]
    assert n_rel > 600


def test_clause_text_names_its_body_part_and_category(captions):
    for cap in captions:
        flat = cap.text.lower()
        for clause in cap.clauses:
            said = clause.with_text.lower() in flat or clause.text.lower() in flat
            assert said, (cap.text, clause)
            key, cat = clause.codes[0]
            if clause.whole_body:
                assert clause.text in captioner.WHOLE_BODY_TEXT[key]
                continue
            assert all(c == cat for _, c in clause.codes)  # one category per clause
            keys = {k for k, _ in clause.codes}
            preds = captioner._predicates(key, cat, posecodes.get_def(key).mirror in keys)
            assert any(clause.text.endswith(p) for p in preds), (clause.text, key, cat)
            for k in keys:
                d = posecodes.get_def(k)
                part = captioner._side_part(d.subject)[1]
                if d.mirror in keys:  # merged left + right: "both knees" / "the knees"
                    assert captioner._PLURAL.get(part, part) in clause.text, clause.text
                else:
                    assert d.subject in clause.text, (clause.text, k)


def test_hand_made_poses_get_the_expected_codes():
    lib = library()

    def codes_of(name):
        k = lib.names.index(name)
        from posrft.data.limits import pose_from_coords
        import roma

        aa = pose_from_coords(lib.coords[k][None].double()).clone()
        aa[:, 0] = roma.rotmat_to_rotvec(lib.base_glob[k].double())
        return posecodes.extract(pose_joints(aa.reshape(1, 72)).numpy())[0]

    assert codes_of("kneel_upright").get("kneeling") == "yes"
    assert codes_of("lie_back").get("lying:back") == "yes"
    assert codes_of("lie_front").get("lying:front") == "yes"
    t = codes_of("t_pose")
    assert t["dist:hands"] == "wide" and t["angle:left_elbow"] == "straight"
    assert t["vert:left_upperarm"] == "horizontal" and t["vert:torso"] == "upright"
    sq = codes_of("squat_deep")
    assert sq.get("squatting") == "yes" and sq["angle:left_knee"] == "completely bent"
    assert codes_of("arms_raised")["rel:left_hand:head"] == "above"


# ------------------------------------------------------------- ambiguity, determinism, variety


def test_captions_are_one_to_many(poses, captions):
    """A caption states a subset of relations: many different poses satisfy all of them."""
    pool = sample_poses(4000, seed=99, yaw_deg=180.0).joints
    pool_rel = pool - pool[:, :1]
    counts, different = [], 0
    for i, cap in enumerate(captions[:60]):
        ok = np.ones(len(pool), dtype=bool)
        for rel in cap.relations:
            ok &= rel.holds(pool)
        counts.append(int(ok.sum()))
        me = poses.joints[i] - poses.joints[i, :1]
        if not ok.any():
            continue
        diff = posecodes.body_frame(pool_rel[ok]) - posecodes.body_frame(me[None])
        mpjpe = np.linalg.norm(diff, axis=-1).mean(-1)
        different += int((mpjpe > 0.15).sum() >= 2)
    assert np.median(counts) >= 10
    assert different >= 40  # most captions fit >= 2 clearly different poses (MPJPE > 150 mm)


def test_captions_are_deterministic_and_varied(poses, captions):
    again = captioner.caption_poses(poses.joints, seed=0)
    assert [c.text for c in again] == [c.text for c in captions]
    other = captioner.caption_poses(poses.joints, seed=1)
    assert sum(a.text != b.text for a, b in zip(captions, other)) > 250
    assert len({c.text for c in captions}) >= 295
    words = [len(c.text.split()) for c in captions]
    assert 8 <= np.mean(words) <= 45
    assert all(c.text[0].isupper() and c.text.endswith(".") for c in captions)


def test_caption_arguments_are_checked(poses):
    with pytest.raises(ValueError, match="min_codes"):
        captioner.caption_pose(poses.joints[0], np.random.default_rng(0), min_codes=3, max_codes=2)
    with pytest.raises(ValueError, match="expected"):
        captioner.caption_poses(poses.joints[0], seed=0)
