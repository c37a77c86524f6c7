"""Joint-only data -> SMPL rows (posrft.data.from_joints): schema, floor, faithfulness, actions."""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch

from posrft.body.rotations import pose6d_to_rotmat
from posrft.data import captioner, from_joints, posecodes
from posrft.data.actions import Subject, build_action_dataset, make_clips
from posrft.data.plausibility import SUPPORT_OFFSET
from posrft.data.skeleton import pose_joints
from posrft.data.synth import TEXT2POSE_FEATURES

OFFSET = SUPPORT_OFFSET.numpy().astype(np.float64)
SUBJECTS = [Subject(scale=0.92, amplitude=1.1, heading=30.0), Subject(scale=1.08, phase=0.2)]


@pytest.fixture(scope="module")
def clips():
    c = make_clips(["jump up", "squat"], SUBJECTS, [4, 5], fmt="ntu25", num_frames=24)
    return c.reshape(-1, 25, 3), np.repeat([0, 1], 24)


@pytest.fixture(scope="module")
def t2p(clips):
    joints, ids = clips
    labels = ["jump up"] * 24 + ["squat"] * 24
    return from_joints.text2pose_from_joints(joints, "ntu25", clip_ids=ids, labels=labels,
                                             splits=(0.5, 0.0, 0.5))  # fmt: skip


def test_text2pose_rows_have_the_synthetic_schema(t2p):
    assert {k: len(v) for k, v in t2p.items()} == {"train": 24, "val": 0, "test": 24}
    assert set(TEXT2POSE_FEATURES) < set(t2p["train"].column_names)
    assert set(t2p["train"]["key_pose"]) == {"jump up"} and set(t2p["test"]["key_pose"]) == {"squat"}
    for split in ("train", "test"):
        d = t2p[split].with_format("numpy")
        pose, six, joints = (np.asarray(d[k]) for k in ("gt_pose", "gt_pose_6d", "gt_joints"))
        assert np.allclose(pose_joints(torch.from_numpy(pose).double()).numpy(), joints, atol=1e-5)
        rot = pose6d_to_rotmat(torch.from_numpy(six).double(), 22)
        back = pose_joints(torch.cat([roma.rotmat_to_rotvec(rot).reshape(-1, 66),
                                      torch.zeros(len(rot), 6, dtype=torch.float64)], 1))
        assert np.allclose(back.numpy(), joints, atol=1e-4)
        assert np.all(pose[:, 66:] == 0)  # hands identity
        assert np.all(np.abs(np.degrees(posecodes.heading(joints))) < 1.0)  # facing +z
        assert np.asarray(d["ik_ok"]).all() and np.asarray(d["ik_residual_mm"]).max() < 15.0


def test_one_floor_per_clip_says_when_the_jump_leaves_it(t2p):
    d = t2p["train"].with_format("numpy")  # the jump clip
    canon = np.asarray(d["gt_joints"], dtype=np.float64)
    ground = np.asarray(d["ground"], dtype=np.float64)
    lift = (canon[..., 1] - OFFSET).min(-1) - ground
    assert lift.min() > -0.02 and lift.max() > 0.2  # stance frames on the floor, flight above
    codes = posecodes.extract(canon, ground)
    flying = np.array(["airborne" in c or "jumping" in c for c in codes])
    assert flying.any() and (lift[flying] > 0.1).all()
    caps = captioner.caption_poses(canon, seed=3, ground=ground)
    for i, cap in enumerate(caps):  # every statement holds with the clip's floor
        for rel in cap.relations:
            assert rel.holds(canon[i], ground[i])[0], (i, cap.text, rel)
    said = [i for i, text in enumerate(d["caption"]) if "air" in text or "jump" in text]
    assert said and all(flying[i] for i in said)


def test_bad_fits_are_flagged_not_dropped(clips):
    joints, ids = clips
    bad = joints.copy()
    bad[5, 6:8] += 0.4  # a wrist and hand 40 cm off: no SMPL pose reaches them
    dd = from_joints.text2pose_from_joints(bad, "ntu25", clip_ids=ids, captions=["x."] * 48,
                                           splits=(1.0, 0.0, 0.0), max_residual_mm=10.0)  # fmt: skip
    ok = np.asarray(dd["train"]["ik_ok"])
    assert len(ok) == 48 and not ok[5] and ok.sum() >= 40
    assert dd["train"]["caption"][0] == "x."
    with pytest.raises(ValueError, match="captions"):
        from_joints.text2pose_from_joints(joints, "ntu25", captions=["x."] * 3)
    with pytest.raises(ValueError, match="ntu25"):
        from_joints.fit_frames(joints[:, :20], "ntu25")


def test_image2pose_and_action_rows(clips):
    joints, _ = clips
    dd = from_joints.image2pose_from_joints(joints[:6], "ntu25", image_size=32,
                                            splits=(0.5, 0.0, 0.5))  # fmt: skip
    row = dd["train"][0]
    assert row["images"][0].size == (32, 32) and len(row["keypoints_2d"]) == 24
    actions = build_action_dataset(1, formats=("ntu25",), num_frames=8,
                                   classes=["jump up", "bow"], val_fraction=0.0,
                                   test_fraction=0.0)  # fmt: skip
    with_smpl = from_joints.action_rows_with_smpl(actions)
    r = with_smpl["train"].with_format("numpy")[0]
    assert np.asarray(r["smpl_pose_6d"]).shape == (8, 132)
    assert np.asarray(r["ik_residual_mm"]).max() < 15.0


def test_human36m_frames_go_through_ik(tmp_path):
    from posrft.body.formats import get_format
    from posrft.data.loaders import SPIN24_TO_H36M17, load_h36m_spin
    from posrft.data.prior import sample_poses

    s = sample_poses(6, seed=2)
    h17 = get_format("h36m17").from_smpl(torch.from_numpy(s.joints).double()).numpy()
    camera = h17 * np.array([1.0, -1.0, -1.0])  # SPIN's S: camera frame, y down
    s24 = np.zeros((6, 24, 4))
    s24[:, list(SPIN24_TO_H36M17), :3] = camera
    s24[:, list(SPIN24_TO_H36M17), 3] = 1.0
    s24[0, SPIN24_TO_H36M17[13], 3] = 0.0  # one missing left wrist
    path = tmp_path / "h36m_valid_protocol1.npz"
    np.savez(path, imgname=[f"{i}.jpg" for i in range(6)], center=np.zeros((6, 2)),
             scale=np.ones(6), part=np.zeros((6, 24, 3)), S=s24)  # fmt: skip
    joints, conf = from_joints.frames_from_h36m_spin(load_h36m_spin(path))
    assert np.allclose(joints, h17, atol=1e-5) and conf[0, 13] == 0 and conf[1].all()
    fit = from_joints.fit_frames(joints, "h36m17", confidence=conf)
    assert fit.residual_mm.max() < 1.0
    head_up = fit.joints[:, 15, 1] - fit.joints[:, 0, 1]
    assert np.allclose(head_up, pose_joints(torch.from_numpy(s.pose).double()).numpy()[:, 15, 1]
                       - s.joints[:, 0, 1], atol=0.02)  # fmt: skip
