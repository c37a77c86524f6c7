"""Procedural action clips: each class's motion measured from the joints, subjects, formats,
zero-shot splits, errors, dataset round trip and real-format NTU files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from datasets import load_from_disk

from fixtures_loaders import write_ntu
from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS, get_format
from posrft.body.standin import standin_rest_joints
from posrft.data import actions as A
from posrft.data.action_classes import ZERO_SHOT_SPLITS

J = {n: i for i, n in enumerate(SMPL24_JOINTS)}
FEET = [J[n] for n in ("left_ankle", "right_ankle", "left_foot", "right_foot")]
UP = np.array([0.0, 1.0, 0.0])
NOISE = 0.035  # > 4 std of the largest sampled joint noise (8 mm)


def body_frame(clip: np.ndarray, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(left, forward) unit vectors of frame ``t`` from the hip line alone (y up)."""
    left = clip[t, J["left_hip"]] - clip[t, J["right_hip"]]
    left[1] = 0.0
    left /= np.linalg.norm(left)
    return left, np.cross(left, UP)


def heading_deg(clip: np.ndarray, t: int) -> float:
    left, _ = body_frame(clip, t)
    return float(np.degrees(np.arctan2(left[2], left[0])))


def height(clip, name):
    return clip[:, J[name], 1]


# ---- one check per class, from the joints only (thresholds hold for any sampled subject) ----


def _wave(side):
    other = "right" if side == "left" else "left"

    def check(c):
        left, _ = body_frame(c)
        lat = lambda n: c[:, J[n]] @ left  # noqa: E731
        assert lat(f"{side}_wrist").std() > 4 * lat(f"{other}_wrist").std() + 0.01
        assert height(c, f"{side}_wrist").max() > c[0, J["neck"], 1]  # the hand is up

    return check


def _clap(c):
    d = np.linalg.norm(c[:, J["left_wrist"]] - c[:, J["right_wrist"]], axis=1)
    assert d.min() < 0.12 and d.max() > 0.3
    closed = d < 0.15
    assert np.sum(closed[1:] & ~closed[:-1]) + closed[0] >= 2  # the hands meet again and again


def _low(drop):
    def check(c):
        pelvis = height(c, "pelvis")
        assert pelvis[0] - pelvis.min() > drop or pelvis.max() - pelvis.min() > drop
        assert np.allclose(c[:, FEET, 1].min(1), 0.0, atol=NOISE)  # feet stay on the ground

    return check


def _sit(c):
    pelvis = height(c, "pelvis")
    assert pelvis[0] - pelvis[-5:].max() > 0.15  # ends lower than it started, and stays


def _stand(c):
    pelvis = height(c, "pelvis")
    assert pelvis[-5:].min() - pelvis[0] > 0.15


def _jump(c):
    feet = c[:, FEET, 1].min(1)
    assert feet[0] < 0.02 and feet.max() > 0.1  # both feet leave the ground


def _kick(side):
    other = "right" if side == "left" else "left"

    def check(c):
        _, fwd = body_frame(c)
        ankle = c[:, J[f"{side}_ankle"]]
        assert ankle[:, 1].max() - ankle[0, 1] > 0.3  # rises ...
        assert (ankle @ fwd).max() - ankle[0] @ fwd > 0.3  # ... forward
        assert np.ptp(height(c, f"{other}_ankle")) < 0.04 + NOISE  # the standing leg stays down

    return check


def _punch(side):
    other = "right" if side == "left" else "left"

    def extension(c, s):  # shoulder-wrist distance / arm length: 1 = a straight arm
        sh, el, wr = (c[:, J[f"{s}_{n}"]] for n in ("shoulder", "elbow", "wrist"))
        arm = np.linalg.norm(el - sh, axis=1) + np.linalg.norm(wr - el, axis=1)
        return np.linalg.norm(wr - sh, axis=1) / arm

    def check(c):
        _, fwd = body_frame(c)
        reach = (c[:, J[f"{side}_wrist"]] - c[:, J[f"{side}_shoulder"]]) @ fwd
        punch = (extension(c, side) > 0.95) & (reach > 0.4)  # a straight arm pointing forward
        assert punch.sum() >= 2 and extension(c, other)[punch].max() < 0.8
        other_reach = (c[:, J[f"{other}_wrist"]] - c[:, J[f"{other}_shoulder"]]) @ fwd
        assert not ((extension(c, other) > 0.95) & (other_reach > 0.4)).any()

    return check


def _bow(c):
    _, fwd = body_frame(c)
    head = c[:, J["head"]]
    assert head[0, 1] - head[:, 1].min() > 0.2 and (head @ fwd).max() - head[0] @ fwd > 0.2
    assert np.ptp(height(c, "pelvis")) < 0.1


def _raise(sides):
    def check(c):
        above = np.all([height(c, f"{s}_wrist") > height(c, "head") for s in sides], axis=0)
        assert above.any()
        for s in {"left", "right"} - set(sides):
            assert (height(c, f"{s}_wrist") < height(c, f"{s}_shoulder")).all()

    return check


def _turn(c):
    turned = (heading_deg(c, -1) - heading_deg(c, 0)) % 360.0
    assert abs(turned - 180.0) < 20.0


def _walk(c):
    la, ra = height(c, "left_ankle"), height(c, "right_ankle")
    assert np.ptp(la) > 0.1 and np.ptp(ra) > 0.1 and np.corrcoef(la, ra)[0, 1] < -0.3


def _toes(c):
    assert min(height(c, "left_wrist").min(), height(c, "right_wrist").min()) < 0.3


def _circles_of(c, sides):
    left, fwd = body_frame(c)
    for s in sides:
        w = c[:, J[f"{s}_wrist"]] - c[:, J[f"{s}_shoulder"]]
        ang = np.unwrap(np.arctan2(w[:, 1], w @ fwd))
        assert abs(ang[-1] - ang[0]) > 2 * np.pi  # at least one full circle


def _circles(c):
    _circles_of(c, ["left", "right"])


def _bend(sign):
    def check(c):
        left, _ = body_frame(c)
        lateral = (c[:, J["neck"]] - c[:, J["pelvis"]]) @ left
        assert (sign * (lateral - lateral[0])).max() > 0.12

    return check


def _lunge(side):
    other = "right" if side == "left" else "left"

    def check(c):
        _, fwd = body_frame(c)
        ahead = (c[:, J[f"{side}_ankle"]] - c[:, J[f"{other}_ankle"]]) @ fwd
        assert ahead.max() > 0.4
        assert height(c, "pelvis")[0] - height(c, "pelvis").min() > 0.12

    return check


def _hop(side):
    other = "right" if side == "left" else "left"

    def check(c):
        stance = c[:, [J[f"{side}_ankle"], J[f"{side}_foot"]], 1].min(1)
        raised = c[:, [J[f"{other}_ankle"], J[f"{other}_foot"]], 1].min(1)
        off = stance > 0.045  # both feet stand within a few cm of the floor
        assert off.any() and (raised[off] > stance[off] + 0.1).all()  # hops on one foot ...
        assert (raised > stance + 0.1).mean() > 0.4  # ... with the other foot held up

    return check


def _nod(c):
    v = c[:, J["head"]] - c[:, J["neck"]]
    tilt = np.degrees(np.arccos(v[:, 1] / np.linalg.norm(v, axis=1)))
    assert np.ptp(tilt) > 25


def _twist(c):
    def yaw(a, b):
        d = c[:, J[a]] - c[:, J[b]]
        return np.degrees(np.arctan2(d[:, 2], d[:, 0]))

    rel = yaw("left_shoulder", "right_shoulder") - yaw("left_hip", "right_hip")
    assert np.ptp(rel) > 30 and rel.std() > 3 * yaw("left_hip", "right_hip").std()


def _swing_arm(sides):
    def check(c):
        _, fwd = body_frame(c)
        for s in ("left", "right"):
            reach = (c[:, J[f"{s}_wrist"]] - c[:, J[f"{s}_shoulder"]]) @ fwd
            if s in sides:  # forward and back of the shoulder, at least twice
                assert reach.max() > 0.2 and reach.min() < -0.15
                ahead = reach > 0.1
                assert np.sum(ahead[1:] & ~ahead[:-1]) + ahead[0] >= 2
            else:
                assert np.ptp(reach) < 0.1
            assert (height(c, f"{s}_wrist") < height(c, f"{s}_shoulder")).all()  # never raised

    return check


def _swing_leg(side):
    other = "right" if side == "left" else "left"

    def check(c):
        _, fwd = body_frame(c)
        rel = (c[:, J[f"{side}_ankle"]] - c[:, J["pelvis"]]) @ fwd
        assert rel.max() > 0.25 and rel.min() < -0.1  # in front of and behind the body
        ahead = rel > 0.15
        assert np.sum(ahead[1:] & ~ahead[:-1]) + ahead[0] >= 2  # again and again
        assert np.ptp(height(c, f"{other}_ankle")) < 0.04 + NOISE  # standing on the other foot

    return check


def _raise_leg(side):
    other = "right" if side == "left" else "left"

    def check(c):
        ankle = height(c, f"{side}_ankle")
        knee = c[:, J[f"{side}_knee"]]
        hip, foot = c[:, J[f"{side}_hip"]], c[:, J[f"{side}_ankle"]]
        up = ankle - ankle[0] > 0.25
        assert up.sum() >= 3  # the foot rises well off the floor and is held there
        straight = np.linalg.norm(foot - hip, axis=1) / (np.linalg.norm(knee - hip, axis=1)
                                                          + np.linalg.norm(foot - knee, axis=1))
        assert straight[up].min() > 0.97  # with a straight leg (unlike a kick's chamber)
        assert np.ptp(height(c, f"{other}_ankle")) < 0.04 + NOISE

    return check


def _circle_arm(side):
    other = "right" if side == "left" else "left"

    def check(c):
        _circles_of(c, [side])
        assert (height(c, f"{other}_wrist") < height(c, f"{other}_shoulder")).all()

    return check


def _shake(c):
    left, _ = body_frame(c)
    face = c[:, J["head"]] - c[:, J["neck"]]
    lat = face @ left
    assert np.ptp(lat) > 0.03  # the head turns to both sides ...
    assert lat.max() - np.median(lat) > 0.01 and np.median(lat) - lat.min() > 0.01
    tilt = np.degrees(np.arccos(face[:, 1] / np.linalg.norm(face, axis=1)))
    assert np.ptp(tilt) < 20  # ... without nodding


CHECKS = {
    "wave left hand": _wave("left"), "wave right hand": _wave("right"), "clap hands": _clap,
    "squat": _low(0.2), "jump up": _jump, "kick left leg": _kick("left"),
    "kick right leg": _kick("right"), "punch left hand": _punch("left"),
    "punch right hand": _punch("right"), "bow": _bow, "raise both arms": _raise(["left", "right"]),
    "turn around": _turn, "walk in place": _walk, "sit down": _sit, "stand up": _stand,
    "raise left arm": _raise(["left"]), "raise right arm": _raise(["right"]), "touch toes": _toes,
    "arm circles": _circles, "bend torso left": _bend(1.0), "bend torso right": _bend(-1.0),
    "lunge left leg": _lunge("left"), "lunge right leg": _lunge("right"),
    "hop on left foot": _hop("left"), "hop on right foot": _hop("right"), "nod head": _nod,
    "twist torso": _twist, "swing left arm": _swing_arm(["left"]),
    "swing right arm": _swing_arm(["right"]), "swing both arms": _swing_arm(["left", "right"]),
    "swing left leg": _swing_leg("left"), "swing right leg": _swing_leg("right"),
    "raise left leg": _raise_leg("left"), "raise right leg": _raise_leg("right"),
    "circle left arm": _circle_arm("left"), "circle right arm": _circle_arm("right"),
    "shake head": _shake,
}  # fmt: skip
SUBJECTS = [A.Subject()] + [A.subject_for(7, k) for k in range(3)]


def test_catalogue_has_every_class_checked():
    names = A.action_names()
    assert len(names) >= 22 and len(set(names)) == len(names)
    assert [c.name for c in A.ACTION_CLASSES] == names and set(CHECKS) == set(names)
    assert all(c.description.strip() for c in A.ACTION_CLASSES)


@pytest.mark.parametrize("label", list(CHECKS))
def test_characteristic_motion(label):
    clips = A.make_clips([label] * len(SUBJECTS), SUBJECTS, [3, 4, 5, 6])
    for clip in clips:
        assert np.isfinite(clip).all()
        assert clip[:, FEET, 1].min() > -NOISE  # never through the floor
        CHECKS[label](clip)


def test_deterministic_per_seed_and_batch_equals_single():
    a = A.make_clip("wave right hand", seed=5)
    assert a.shape == (48, 24, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, A.make_clip("wave right hand", seed=5))
    assert np.abs(a - A.make_clip("wave right hand", seed=6)).max() > 0.01
    labels = A.action_names()[:6]
    subjects = [A.subject_for(1, k) for k in range(6)]
    batch = A.make_clips(labels, subjects, list(range(6)), num_frames=20)  # 120 frames: fast FK
    for i, (lab, s) in enumerate(zip(labels, subjects)):
        single = A.make_clip(lab, seed=i, subject=s, num_frames=20)
        np.testing.assert_allclose(batch[i], single, atol=2e-5)


def _bone_lengths(joints: np.ndarray) -> np.ndarray:
    child = np.arange(1, 24)
    parent = np.asarray(SMPL24_PARENTS)[1:]
    return np.linalg.norm(joints[..., child, :] - joints[..., parent, :], axis=-1)


@pytest.mark.parametrize("scale", [0.9, 1.12])
def test_bone_lengths_follow_subject_scale(scale):
    rest = _bone_lengths(standin_rest_joints())  # independent of the generator
    clip = A.make_clip("jump up", seed=2, subject=A.Subject(scale=scale, heading=30.0))
    np.testing.assert_allclose(_bone_lengths(clip) / rest, scale, rtol=1e-4)
    other = A.make_clip("jump up", seed=2, subject=A.Subject(scale=1.0, heading=30.0))
    assert np.abs(clip - other).max() > 0.05


def test_subjects_differ_and_heading_rotates_the_clip():
    sub = [A.subject_for(0, k) for k in range(4)]
    assert len({s.scale for s in sub}) == 4 and len({s.heading for s in sub}) == 4
    c0 = A.make_clip("kick left leg", seed=1, subject=A.Subject(heading=0.0))
    c90 = A.make_clip("kick left leg", seed=1, subject=A.Subject(heading=90.0))
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # +90 deg about y
    np.testing.assert_allclose(c90, c0 @ rot.T, atol=1e-5)
    slow = A.make_clip("kick left leg", seed=1, subject=A.Subject(speed=0.8))
    assert np.abs(slow - c0).max() > 0.05


def test_noise_is_the_only_difference_of_a_noisy_subject():
    clean = A.make_clip("bow", seed=4, subject=A.Subject(noise=0.0))
    noisy = A.make_clip("bow", seed=4, subject=A.Subject(noise=0.01))
    assert 0.007 < (noisy - clean).std() < 0.013


@pytest.mark.parametrize("label", ["clap hands", "hop on right foot"])
def test_ntu25_clip_is_from_smpl_of_smpl24_clip(label):
    subject = A.subject_for(3, 1)
    smpl = A.make_clip(label, seed=9, subject=subject)
    ntu = A.make_clip(label, fmt="ntu25", seed=9, subject=subject)
    assert ntu.shape == (48, 25, 3)
    want = get_format("ntu25").from_smpl(torch.from_numpy(smpl)).numpy()
    np.testing.assert_allclose(ntu, want, atol=1e-6)


def _words(name: str) -> set[str]:
    cls = {c.name: c for c in A.ACTION_CLASSES}[name]
    return set(re.findall(r"[a-z]+", (cls.name + " " + cls.description).lower()))


@pytest.mark.parametrize("split", ["16/4", "12/8", "novel", "novel/mirror", "random:5:0",
                                   "random:8:3"])
def test_zero_shot_splits_are_disjoint_and_covered(split):
    seen, unseen = A.zero_shot_split(split)
    assert not set(seen) & set(unseen) and len(set(seen)) == len(seen)
    if split.startswith("novel"):
        assert (len(seen), len(unseen)) == ((25, 5) if split == "novel" else (25, 4))
    elif split in ZERO_SHOT_SPLITS:
        assert (len(seen), len(unseen)) == tuple(int(x) for x in split.split("/"))
    else:
        assert len(unseen) == int(split.split(":")[1])
        assert set(seen) | set(unseen) == set(A.action_names())
        assert A.zero_shot_split(split) == (seen, unseen)  # reproducible
    vocab = set().union(*(_words(n) for n in seen))
    for n in unseen:
        assert _words(n) <= vocab, (n, _words(n) - vocab)
    assert A.uncovered_words(seen, unseen) == {}


def test_novel_split_holds_out_no_mirror_image_and_shares_seen_with_the_mirror_split():
    seen, novel = A.zero_shot_split("novel")
    seen_m, mirror = A.zero_shot_split("novel/mirror")
    assert seen == seen_m and not set(novel) & set(mirror)
    swap = {"left": "right", "right": "left"}

    def twin(name):  # computed here from the words, independently of mirror_of
        return " ".join(swap.get(w, w) for w in name.split())

    for u in novel:  # no unseen class is a seen class with its side swapped ...
        assert twin(u) not in seen
        # ... its verb is used by a seen class, its body part is named by one, never together
        verb, part = u.split()[0], u.split()[-1]
        assert any(verb in _words(c) for c in seen) and any(part in c.split() for c in seen)
        assert not any(c.split()[0] == verb and c.split()[-1] == part for c in seen)
    assert all(twin(u) in seen for u in mirror)
    assert A.mirrored_unseen(seen, novel) == [] and A.mirrored_unseen(seen, mirror) == mirror
    assert A.mirrored_unseen(*A.zero_shot_split("16/4")) == ["wave left hand", "kick right leg",
                                                             "raise right arm", "lunge right leg"]


def test_random_splits_differ_by_seed_and_bad_names_fail():
    assert A.zero_shot_split("random:6:0")[1] != A.zero_shot_split("random:6:1")[1]
    with pytest.raises(ValueError, match="'random:K:SEED'"):
        A.zero_shot_split("20/2")
    with pytest.raises(ValueError, match=r"K must be in \[1, "):
        A.zero_shot_split("random:0:1")
    assert A.uncovered_words(["kick left leg"], ["wave right hand"]) == {
        "wave right hand": sorted(_words("wave right hand") - _words("kick left leg"))
    }


def test_bad_inputs_give_clear_errors():
    clip = A.make_clip("squat", num_frames=8)
    assert A.check_clip(clip, "smpl24").dtype == np.float32
    msg = r"train clip: has 24 joints per frame but format 'ntu25' has 25"
    with pytest.raises(ValueError, match=msg):
        A.check_clip(clip, "ntu25", where="train clip")
    bad = clip.copy()
    bad[2, 3, 0] = np.nan
    bad[5, 0, 1] = np.inf
    with pytest.raises(ValueError, match=r"clip: frames \[2, 5\] contain NaN or inf"):
        A.check_clip(bad, "smpl24")
    with pytest.raises(ValueError, match=r"expected shape \(T, J, 3\).*\(24, 3\)"):
        A.check_clip(clip[0], "smpl24")
    with pytest.raises(ValueError, match=r"duplicate class names \['squat'\]"):
        A.check_class_list(["squat", "bow", "squat"])
    with pytest.raises(ValueError, match=r"unknown class name 'wave left' \(did you mean"):
        A.check_class_list(["bow", "wave left"])
    with pytest.raises(ValueError, match="unknown class name 'fly'"):
        A.make_clip("fly")
    with pytest.raises(ValueError, match=r"Subject.scale must be > 0"):
        A.Subject(scale=-1.0)
    with pytest.raises(ValueError, match="leaves no training subject"):
        A.build_action_dataset(2, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"val_fraction=0.1 of n_per_class=3 subjects rounds to 0.*at least 6"):
        A.build_action_dataset(3, classes=["squat"])


def test_dataset_splits_by_subject_and_round_trips(tmp_path):
    classes = ["wave left hand", "squat", "turn around"]
    dd = A.build_action_dataset(5, formats=("smpl24", "ntu25"), num_frames=12, seed=3,
                                classes=classes, val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    sizes = {k: len(v) for k, v in dd.items()}
    assert sizes == {"train": 3 * 3 * 2, "val": 1 * 3 * 2, "test": 1 * 3 * 2}
    subjects = {k: set(v["subject_id"]) for k, v in dd.items()}
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])  # fmt: skip
    row = dd["val"][4]
    assert row["label_id"] == A.action_names().index(row["label"])
    assert row["description"] == {c.name: c.description for c in A.ACTION_CLASSES}[row["label"]]
    again = A.make_clip(row["label"], fmt=row["format"], num_frames=12, seed=row["seed"],
                        subject=A.Subject(**row["subject"]))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(row["joints"], np.float32), again)

    out = A.save_action_dataset(dd, tmp_path / "actions")
    loaded = load_from_disk(str(out))
    assert loaded["train"]["joints"] == dd["train"]["joints"]
    assert loaded["test"]["label"] == dd["test"]["label"]
    with pytest.raises(ValueError, match="several formats"):
        A.load_action_clips(loaded["train"])
    x, labels = A.load_action_clips(loaded["train"], fmt="ntu25")
    assert x.shape == (9, 12, 25, 3) and x.dtype == np.float32 and len(labels) == 9
    ntu_rows = [r for r in dd["train"] if r["format"] == "ntu25"]
    np.testing.assert_array_equal(x[0], np.asarray(ntu_rows[0]["joints"], np.float32))


def _kinect_rows(joints: np.ndarray) -> np.ndarray:
    rows = np.zeros((25, 12))
    rows[:, :3] = joints
    rows[:, 11] = 2
    return rows


def test_clips_from_real_format_ntu_files(tmp_path):
    clip = A.make_clip("clap hands", fmt="ntu25", num_frames=10, seed=1, subject=A.Subject())
    # Kinect camera space: the person faces the sensor (turned 180 deg), 3 m away, values
    # written with 4 decimals as in the real files.
    kinect = np.round(clip * np.array([-1.0, 1.0, -1.0]) + np.array([0.2, -0.8, 3.0]), 4)
    write_ntu(tmp_path / "S001C001P001R001A010.skeleton",
              [[(72057594037931101, _kinect_rows(f))] for f in kinect])  # fmt: skip
    write_ntu(tmp_path / "S001C002P003R001A050.skeleton",
              [[]] + [[(5, _kinect_rows(f))] for f in kinect[:4]])  # fmt: skip
    out = A.clips_from_ntu(tmp_path)
    assert [label for _, label in out] == ["clap hands", "A050"]
    np.testing.assert_allclose(out[0][0], clip, atol=2e-4)  # canonical frame recovers the clip
    assert out[1][0].shape == (4, 25, 3)  # the frame without a body is dropped
    raw = A.clips_from_ntu(tmp_path / "S001C001P001R001A010.skeleton", canonical=False)
    np.testing.assert_allclose(raw[0][0], kinect, atol=1e-6)
