"""Dataset loaders on small files written here in each dataset's real on-disk format."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from posrft.body.formats import get_format
from posrft.data.loaders import (
    SPIN24_JOINTS,
    DatasetFormatError,
    iter_3dpw,
    iter_amass,
    iter_humanml3d,
    iter_ntu,
    load_3dpw,
    load_amass,
    load_h36m_spin,
    load_humanml3d,
    load_humanml3d_texts,
    load_ntu_skeleton,
    load_posescript,
    parse_ntu_name,
    resample_indices,
    to_camera_frame,
)
from fixtures_loaders import (
    ntu_body_lines,
    ntu_joints,
    threedpw_dict,
    write_amass,
    write_json,
    write_ntu,
    write_pickle,
)


def rodrigues(aa: np.ndarray) -> np.ndarray:
    """Closed-form ``exp([w]x) = I + sin t K + (1 - cos t) K^2`` for ``(..., 3)`` axis-angle."""
    aa = np.asarray(aa, dtype=np.float64)
    t = np.linalg.norm(aa, axis=-1)[..., None, None]
    k = aa / np.maximum(np.linalg.norm(aa, axis=-1, keepdims=True), 1e-300)
    kx = np.zeros(aa.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    kx = kx - np.swapaxes(kx, -1, -2)
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


def err_re(path, where: str) -> str:
    """Regex of an error message that starts with ``<path> <where>``."""
    return re.escape(f"{path} {where}")


# ----------------------------------------------------------------------------------------- AMASS


def test_amass_smplh_keeps_body_and_zeroes_hands(tmp_path):
    poses = np.random.default_rng(0).normal(size=(7, 156))
    data = write_amass(tmp_path / "CMU" / "01" / "01_01_poses.npz", poses, gender="female")
    seq = load_amass(tmp_path / "CMU" / "01" / "01_01_poses.npz")
    assert seq.poses.shape == (7, 72) and seq.poses.dtype == np.float32
    np.testing.assert_array_equal(seq.poses[:, :66], poses[:, :66].astype(np.float32))
    assert not seq.poses[:, 66:].any()
    np.testing.assert_array_equal(seq.trans, data["trans"].astype(np.float32))
    np.testing.assert_array_equal(seq.betas, data["betas"].astype(np.float32))
    assert (seq.gender, seq.fps, seq.source_fps, seq.source_model) == ("female", 120, 120, "smplh")
    np.testing.assert_array_equal(seq.frame_indices, np.arange(7))


def test_amass_smplx_release_keys(tmp_path):
    poses = np.random.default_rng(1).normal(size=(4, 165))
    write_amass(tmp_path / "a.npz", poses, fps=60.0, fps_key="mocap_frame_rate",
                gender=np.bytes_(b"male"))  # fmt: skip
    seq = load_amass(tmp_path / "a.npz")
    assert (seq.source_model, seq.fps, seq.gender) == ("smplx", 60.0, "male")
    # Jaw/eye values (66..74) must not leak into SMPL's hand joints.
    np.testing.assert_array_equal(seq.poses[:, :66], poses[:, :66].astype(np.float32))
    assert not seq.poses[:, 66:].any()


def test_amass_integer_ratio_subsampling_is_a_stride(tmp_path):
    poses = np.random.default_rng(2).normal(size=(10, 156))
    data = write_amass(tmp_path / "a.npz", poses, fps=120.0)
    seq = load_amass(tmp_path / "a.npz", target_fps=30)
    np.testing.assert_array_equal(seq.frame_indices, [0, 4, 8])
    np.testing.assert_array_equal(seq.poses[:, :66], poses[::4, :66].astype(np.float32))
    np.testing.assert_array_equal(seq.trans, data["trans"][::4].astype(np.float32))
    assert seq.fps == 30 and seq.source_fps == 120


def test_resample_indices_picks_the_nearest_source_frame():
    idx = resample_indices(101, 100.0, 30.0)  # 1 s of 100 Hz -> 30 Hz: 31 frames, t = k/30
    assert len(idx) == 31
    src_t, out_t = idx / 100.0, np.arange(31) / 30.0
    assert np.all(np.abs(src_t - out_t) <= 0.5 / 100 + 1e-12)
    with pytest.raises(ValueError, match="exceeds the source frame rate"):
        resample_indices(10, 30.0, 60.0)


def test_iter_amass_walks_sorted_and_skips_shape_files(tmp_path):
    rng = np.random.default_rng(3)
    for rel in ["B/s2/x_poses.npz", "A/s1/y_poses.npz", "A/s1/b_poses.npz"]:
        write_amass(tmp_path / rel, rng.normal(size=(3, 156)))
    np.savez(tmp_path / "A" / "s1" / "shape.npz", betas=np.zeros(16), gender=np.array("male"))
    names = [s.path.relative_to(tmp_path).as_posix() for s in iter_amass(tmp_path)]
    assert names == ["A/s1/b_poses.npz", "A/s1/y_poses.npz", "B/s2/x_poses.npz"]


def test_amass_missing_key_names_file_key_and_present_keys(tmp_path):
    path = tmp_path / "bad.npz"
    write_amass(path, np.zeros((3, 156)), drop=("trans",))
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'trans': missing")) as e:
        load_amass(path)
    assert "'betas'" in str(e.value) and "'poses'" in str(e.value)
    assert isinstance(e.value, ValueError)
    back = pickle.loads(pickle.dumps(e.value))  # crosses DataLoader / Ray worker boundaries
    assert (str(back), back.key, back.path) == (str(e.value), "trans", path)


def test_amass_wrong_shapes_and_missing_fps(tmp_path):
    path = tmp_path / "bad.npz"
    write_amass(path, np.zeros((3, 100)))
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'poses': expected shape")):
        load_amass(path)
    write_amass(path, np.zeros((3, 156)), trans=np.zeros((4, 3)))
    msg = err_re(path, "key 'trans': expected shape (3, 3)")
    with pytest.raises(DatasetFormatError, match=msg):
        load_amass(path)
    write_amass(path, np.zeros((3, 156)), drop=("mocap_framerate",))
    with pytest.raises(DatasetFormatError, match="mocap_framerate or mocap_frame_rate"):
        load_amass(path)
    write_amass(path, np.zeros((3, 156)), gender="robot")
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'gender'")):
        load_amass(path)


def test_amass_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DatasetFormatError, match=re.escape(f"{path}: not a readable .npz")):
        load_amass(path)


# ------------------------------------------------------------------------------------ PoseScript


@pytest.fixture
def posescript_tree(tmp_path):
    rng = np.random.default_rng(4)
    amass = tmp_path / "amass_smplh"
    seq_a = rng.normal(scale=0.8, size=(6, 156))
    seq_b = rng.normal(scale=0.8, size=(3, 156))
    write_amass(amass / "CMU" / "01" / "01_01_poses.npz", seq_a)
    write_amass(amass / "BMLrub" / "s1" / "walk_poses.npz", seq_b)
    ps = tmp_path / "posescript_release"
    write_json(ps / "ids_2_dataset_sequence_and_frame_index_100k.json", {
        "0": ["AMASS", "CMU/01/01_01_poses.npz", 5],
        "1": ["AMASS", "BMLrub/s1/walk_poses.npz", 0],
        "2": ["AMASS", "CMU/01/01_01_poses.npz", 2],
        "3": ["AMASS", "BMLrub/s1/walk_poses.npz", 2],
    })  # fmt: skip
    write_json(ps / "train_ids_100k.json", [2, 0, 3])
    write_json(ps / "test_ids_100k.json", [1])
    write_json(ps / "posescript_human_6293.json", {"2": "The person squats.", "0": "Arms up."})
    write_json(ps / "posescript_auto_100k.json", {"0": ["auto a", "auto b"], "3": ["auto c"]})
    return ps, amass, {("CMU", 5): seq_a[5], ("CMU", 2): seq_a[2], ("BML", 2): seq_b[2]}


def test_posescript_records_follow_split_order_and_read_frames(posescript_tree):
    ps, amass, frames = posescript_tree
    recs = load_posescript(ps, amass, "train", captions="human", normalize_orient=False)
    assert [r.data_id for r in recs] == [2, 0]  # id 3 has no human caption: left out
    assert recs[0].captions == ["The person squats."]
    assert (recs[1].sequence, recs[1].frame_index) == ("CMU/01/01_01_poses.npz", 5)
    for rec, key in zip(recs, [("CMU", 2), ("CMU", 5)]):
        assert rec.pose.shape == (72,) and rec.pose.dtype == np.float32
        np.testing.assert_array_equal(rec.pose[:66], frames[key][:66].astype(np.float32))
        assert not rec.pose[66:].any()


def test_posescript_both_caption_sets_concatenate(posescript_tree):
    ps, amass, _ = posescript_tree
    recs = load_posescript(ps, amass, "train", captions="both", normalize_orient=False)
    assert [(r.data_id, r.captions) for r in recs] == [
        (2, ["The person squats."]), (0, ["Arms up.", "auto a", "auto b"]), (3, ["auto c"]),
    ]  # fmt: skip


def test_posescript_orientation_normalisation_drops_the_z_rotation(posescript_tree):
    ps, amass, frames = posescript_tree
    recs = load_posescript(ps, amass, "train", captions="auto")
    for rec, key in zip(recs, [("CMU", 5), ("BML", 2)]):
        r = rodrigues(frames[key][:3])
        # text2pose: R = Rz(c) Ry(b) Rx(a); keep Ry(b) Rx(a).
        a = np.arctan2(r[2, 1], r[2, 2])
        b = np.arctan2(-r[2, 0], np.hypot(r[2, 1], r[2, 2]))
        ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
        rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
        ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
        np.testing.assert_allclose(rodrigues(rec.pose[:3]), ry @ rx, atol=1e-5)
        np.testing.assert_array_equal(rec.pose[3:66], frames[key][3:66].astype(np.float32))


def test_posescript_errors_name_file_and_key_or_line(posescript_tree):
    ps, amass, _ = posescript_tree
    index = ps / "ids_2_dataset_sequence_and_frame_index_100k.json"
    human = ps / "posescript_human_6293.json"
    human.write_text('{\n "0": "ok",\n "2": oops\n}')
    with pytest.raises(DatasetFormatError, match=err_re(human, "line 3")):
        load_posescript(ps, amass, "train")
    write_json(ps / "posescript_human_6293.json", {"0": ["ok", 7]})
    with pytest.raises(DatasetFormatError, match=err_re(human, "key '0'")):
        load_posescript(ps, amass, "train")
    write_json(ps / "posescript_human_6293.json", {"0": "ok"})
    write_json(index, {"0": ["AMASS", "CMU/01/01_01_poses.npz", 9]})
    npz = amass / "CMU" / "01" / "01_01_poses.npz"
    with pytest.raises(DatasetFormatError, match=err_re(npz, "key 'poses': frame index 9")):
        load_posescript(ps, amass, "train")
    write_json(index, {"5": ["AMASS", "x.npz", 0]})
    with pytest.raises(DatasetFormatError, match=err_re(index, "key '0': data id of the split")):
        load_posescript(ps, amass, "train")
    write_json(index, {"0": ["AMASS", "x.npz"]})
    with pytest.raises(DatasetFormatError, match=err_re(index, "key '0': expected [dataset")):
        load_posescript(ps, amass, "train")


# ------------------------------------------------------------------------------------------ 3DPW


def test_3dpw_pickle_parses_per_actor_fields(tmp_path):
    raw = threedpw_dict(n=5, actors=2)
    path = write_pickle(tmp_path / "sequenceFiles" / "test" / "courtyard_test_00.pkl", raw)
    seq = load_3dpw(path)
    assert (seq.name, seq.num_frames, len(seq.actors), seq.fps) == ("courtyard_test_00", 5, 2, 30)
    np.testing.assert_array_equal(seq.cam_poses, raw["cam_poses"].astype(np.float32))
    np.testing.assert_array_equal(seq.cam_intrinsics, raw["cam_intrinsics"].astype(np.float32))
    np.testing.assert_array_equal(seq.img_frame_ids, raw["img_frame_ids"])
    assert seq.image_names()[3] == "imageFiles/courtyard_test_00/image_00003.jpg"
    for i, (actor, gender) in enumerate(zip(seq.actors, ["male", "female"])):
        assert actor.gender == gender
        np.testing.assert_array_equal(actor.poses, raw["poses"][i].astype(np.float32))
        np.testing.assert_array_equal(actor.trans, raw["trans"][i].astype(np.float32))
        np.testing.assert_array_equal(actor.betas, raw["betas"][i].astype(np.float32))
        # jointPositions (N, 72) -> (N, 24, 3): joint j is values 3j..3j+2.
        np.testing.assert_array_equal(actor.joints3d[:, 7], raw["jointPositions"][i][:, 21:24]
                                      .astype(np.float32))  # fmt: skip
        # poses2d (N, 3, 18) -> (N, 18, 3): keypoint j of frame t is column j.
        np.testing.assert_array_equal(actor.keypoints2d[2, 11], raw["poses2d"][i][2, :, 11]
                                      .astype(np.float32))  # fmt: skip
        assert actor.campose_valid.dtype == bool
        np.testing.assert_array_equal(actor.campose_valid, raw["campose_valid"][i])
    assert [s.name for s in iter_3dpw(tmp_path, "test")] == ["courtyard_test_00"]


def test_3dpw_to_camera_frame_matches_closed_form(tmp_path):
    raw = threedpw_dict(n=4, actors=1, seed=5)
    seq = load_3dpw(write_pickle(tmp_path / "s.pkl", raw))
    poses_c, joints_c = to_camera_frame(seq.actors[0], seq.cam_poses)
    rc, tc = raw["cam_poses"][:, :3, :3], raw["cam_poses"][:, :3, 3]
    want_r = rc @ rodrigues(raw["poses"][0][:, :3])
    np.testing.assert_allclose(rodrigues(poses_c[:, :3]), want_r, atol=1e-5)
    np.testing.assert_array_equal(poses_c[:, 3:], raw["poses"][0][:, 3:].astype(np.float32))
    x = raw["jointPositions"][0].reshape(4, 24, 3)
    want_x = np.einsum("nij,nkj->nki", rc, x) + tc[:, None]
    np.testing.assert_allclose(joints_c, want_x, atol=1e-5)


def test_3dpw_errors_name_file_and_key(tmp_path):
    raw = threedpw_dict(n=5, actors=2)
    del raw["cam_poses"]
    path = write_pickle(tmp_path / "a.pkl", raw)
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'cam_poses': missing")) as e:
        load_3dpw(path)
    assert "'jointPositions'" in str(e.value)
    raw = threedpw_dict(n=5, actors=2)
    raw["trans"] = raw["trans"][:1]
    write_pickle(path, raw)
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'trans': expected one entry")):
        load_3dpw(path)
    raw = threedpw_dict(n=5, actors=2)
    raw["poses"][1] = raw["poses"][1][:, :69]
    write_pickle(path, raw)
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'poses[1]': expected shape")):
        load_3dpw(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DatasetFormatError, match="not a readable pickle"):
        load_3dpw(path)


# ----------------------------------------------------------------------------------- H3.6M SPIN

# SPIN's h36m_train.py: S24[global_idx] = S17 with S17 in its raw-index order
# (h36m_idx = [11, 6, 7, 8, 1, 2, 3, 12, 24, 14, 15, 17, 18, 19, 25, 26, 27]).
SPIN_GLOBAL_IDX = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
# The same 17 joints in the standard order (pelvis, R leg, L leg, spine, ...): S17 positions.
SPIN_S17_TO_STANDARD = [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]


def test_h36m_spin_npz_as_written_by_spin(tmp_path):
    rng = np.random.default_rng(6)
    n = 4
    s17 = rng.normal(size=(n, 17, 3))
    s24 = np.zeros((n, 24, 4))
    s24[:, SPIN_GLOBAL_IDX, :3] = s17
    s24[:, SPIN_GLOBAL_IDX, 3] = 1
    part = rng.uniform(0, 1000, size=(n, 24, 3))
    path = tmp_path / "h36m_valid_protocol1.npz"
    names = [f"images/S9_Walking.55011271_{i:06d}.jpg" for i in range(n)]
    np.savez(path, imgname=names, center=rng.normal(size=(n, 2)), scale=rng.uniform(size=n),
             part=part, S=s24, pose=rng.normal(size=(n, 72)), shape=rng.normal(size=(n, 10)),
             gender=np.array(["m", "f", "m", "f"]))  # fmt: skip
    d = load_h36m_spin(path)
    assert len(d) == n and d.imgname == names and d.gender == ["male", "female"] * 2
    assert d.has_smpl.all() and d.poses.shape == (n, 72) and d.betas.shape == (n, 10)
    np.testing.assert_array_equal(d.keypoints2d, part.astype(np.float32))
    np.testing.assert_array_equal(d.joints3d, s24[..., :3].astype(np.float32))
    np.testing.assert_array_equal(np.flatnonzero(d.joints3d_conf[0]), sorted(SPIN_GLOBAL_IDX))
    h17 = d.joints_h36m17()
    assert h17.shape == (n, get_format("h36m17").num_joints, 3)
    np.testing.assert_array_equal(h17, s17[:, SPIN_S17_TO_STANDARD].astype(np.float32))
    assert SPIN24_JOINTS[SPIN_GLOBAL_IDX[1]] == "left_hip"  # SPIN's raw joint 6 is the left hip


def test_h36m_spin_optional_keys_and_errors(tmp_path):
    path = tmp_path / "h36m_train.npz"
    np.savez(path, imgname=["a.jpg"], center=np.zeros((1, 2)), scale=np.ones(1),
             part=np.zeros((1, 24, 3)))  # fmt: skip
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'S': missing")):
        load_h36m_spin(path)
    d = load_h36m_spin(path, require_3d=False)
    assert d.poses is None and not d.has_smpl.any() and not d.joints3d_conf.any()
    np.savez(path, imgname=["a.jpg"], center=np.zeros((1, 2)), scale=np.ones(1),
             part=np.zeros((1, 17, 3)), S=np.zeros((1, 24, 4)))  # fmt: skip
    with pytest.raises(DatasetFormatError, match=err_re(path, "key 'part': expected shape")):
        load_h36m_spin(path)


# ------------------------------------------------------------------------------------------- NTU


def test_ntu_two_frames_two_bodies(tmp_path):
    rng = np.random.default_rng(7)
    b = {(t, m): ntu_joints(rng, spread=1.0 + m) for t in range(2) for m in range(2)}
    ids = (72057594037931101, 72057594037931102)
    path = tmp_path / "S001C002P003R002A013.skeleton"
    write_ntu(path, [[(ids[0], b[t, 0]), (ids[1], b[t, 1])] for t in range(2)])
    sk = load_ntu_skeleton(path)
    assert sk.joints.shape == (2, 2, 25, 3) and sk.joints.dtype == np.float32
    assert get_format(sk.skeleton_format).num_joints == 25
    # Body 1 spreads twice as wide: more energy, so it comes first.
    np.testing.assert_array_equal(sk.slots, [1, 0])
    for k, slot in enumerate(sk.slots):
        for t in range(2):
            src = b[t, int(slot)]
            np.testing.assert_array_equal(sk.joints[k, t], src[:, :3].astype(np.float32))
            np.testing.assert_array_equal(sk.depth_xy[k, t], src[:, 3:5].astype(np.float32))
            np.testing.assert_array_equal(sk.color_xy[k, t], src[:, 5:7].astype(np.float32))
            np.testing.assert_array_equal(sk.orientation[k, t], src[:, 7:11].astype(np.float32))
            np.testing.assert_array_equal(sk.tracking_state[k, t], src[:, 11].astype(np.int8))
        assert (sk.body_ids[k] == ids[int(slot)]).all()
    assert sk.present.all() and sk.bodies_per_frame.tolist() == [2, 2]
    assert (sk.sample.setup, sk.sample.camera, sk.sample.performer) == (1, 2, 3)
    assert (sk.sample.replication, sk.sample.action, sk.sample.label) == (2, 13, 12)


def test_ntu_keeps_the_two_most_energetic_of_three_bodies(tmp_path):
    rng = np.random.default_rng(8)
    spreads = [0.1, 3.0, 1.0]  # slot energies: low, high, middle
    frames = [[(10 + m, ntu_joints(rng, s)) for m, s in enumerate(spreads)] for _ in range(3)]
    frames[1] = frames[1][:2]  # slot 2 absent in frame 1
    path = tmp_path / "S002C001P001R001A050.skeleton"
    write_ntu(path, frames)
    sk = load_ntu_skeleton(path)
    # Independent energy: per slot, std of each coordinate over the frames holding the body.
    energy = []
    for m in range(3):
        x = np.stack([f[m][1][:, :3] for f in frames if len(f) > m])
        energy.append(x[..., 0].std() + x[..., 1].std() + x[..., 2].std())
    assert np.argsort(energy)[::-1][:2].tolist() == [1, 2]
    np.testing.assert_array_equal(sk.slots, [1, 2])
    np.testing.assert_allclose(sk.energy, [energy[1], energy[2]], rtol=1e-12)
    assert sk.present.tolist() == [[True, True, True], [True, False, True]]
    assert not sk.joints[1, 1].any()
    assert load_ntu_skeleton(path, max_bodies=3).num_bodies == 3


def test_ntu_frames_without_bodies(tmp_path):
    rng = np.random.default_rng(9)
    j = ntu_joints(rng)
    path = tmp_path / "S001C001P001R001A001.skeleton"
    write_ntu(path, [[], [(5, j)], []])
    sk = load_ntu_skeleton(path)
    assert sk.joints.shape == (1, 3, 25, 3)
    assert sk.present.tolist() == [[False, True, False]]
    assert sk.bodies_per_frame.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(sk.joints[0, 1], j[:, :3].astype(np.float32))
    assert not sk.joints[0, [0, 2]].any()
    empty = tmp_path / "S001C001P001R001A002.skeleton"
    write_ntu(empty, [[], []])
    assert load_ntu_skeleton(empty).joints.shape == (0, 2, 25, 3)


def test_ntu_iter_skips_listed_samples(tmp_path):
    rng = np.random.default_rng(10)
    for name in ["S001C001P001R001A002", "S001C001P001R001A001", "S001C001P001R001A003"]:
        write_ntu(tmp_path / f"{name}.skeleton", [[(1, ntu_joints(rng))]])
    got = [s.sample.name for s in iter_ntu(tmp_path, skip=["S001C001P001R001A003\n"])]
    assert got == ["S001C001P001R001A001", "S001C001P001R001A002"]
    with pytest.raises(DatasetFormatError, match="does not match SsssCcccPpppRrrrAaaa"):
        parse_ntu_name("clip_17.skeleton")


def _ntu_lines(rng, bodies_per_frame=(2, 2)) -> list[str]:
    lines = [str(len(bodies_per_frame))]
    for nb in bodies_per_frame:
        lines.append(str(nb))
        for m in range(nb):
            lines.extend(ntu_body_lines(100 + m, ntu_joints(rng)))
    return lines


@pytest.mark.parametrize(
    "edit, where, what",
    [
        # Line 3 is the first body-info line (1: frame count, 2: body count).
        (lambda ls: ls.__setitem__(2, " ".join(ls[2].split()[:7])), "line 3",
         "expected 10 body-info values, got 7"),
        (lambda ls: ls.__setitem__(10, ls[10] + " 0.5"), "line 11",
         "expected 12 joint values, got 13"),
        (lambda ls: ls.__setitem__(3, "20"), "line 4", "invalid joint count 20"),
        (lambda ls: ls.__setitem__(6, ls[6].replace(ls[6].split()[1], "abc", 1)), "line 7",
         "non-numeric joint values"),
        (lambda ls: ls.__setitem__(1, "two"), "line 2", "expected an integer body count"),
        (lambda ls: ls.__delitem__(slice(40, None)), "line 41",
         "unexpected end of file, expected joint values"),
    ],  # fmt: skip
)
def test_ntu_malformed_file_names_file_and_line(tmp_path, edit, where, what):
    lines = _ntu_lines(np.random.default_rng(11))
    edit(lines)
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=err_re(path, f"{where}: {what}")):
        load_ntu_skeleton(path)


# ------------------------------------------------------------------------------------- HumanML3D


def _humanml3d_tree(tmp_path, joints: np.ndarray) -> None:
    (tmp_path / "new_joints").mkdir()
    (tmp_path / "texts").mkdir()
    np.save(tmp_path / "new_joints" / "000021.npy", joints)
    np.save(tmp_path / "new_joints" / "M000021.npy", joints[:, :, ::-1])
    (tmp_path / "texts" / "000021.txt").write_text(
        "a man walks forward.#a/DET man/NOUN walk/VERB forward/ADV#0.0#0.0\n"
        "then he waves#then/ADV he/PRON wave/VERB#1.0#1.5\n"
        "\n"
        "someone moves#someone/PRON move/VERB#nan#nan\n"
    )
    (tmp_path / "texts" / "M000021.txt").write_text("mirror#mirror/NOUN#0.0#0.0\n")
    (tmp_path / "train.txt").write_text("M000021\n000021\n")


def test_humanml3d_motion_and_captions(tmp_path):
    joints = np.random.default_rng(12).normal(size=(40, 22, 3))
    _humanml3d_tree(tmp_path, joints)
    rec = load_humanml3d(tmp_path, "000021")
    assert rec.joints.shape == (40, 22, 3) and rec.joints.dtype == np.float32
    assert get_format(rec.skeleton_format).num_joints == 22 and rec.fps == 20
    np.testing.assert_array_equal(rec.joints, joints.astype(np.float32))
    c0, c1, c2 = rec.captions
    assert c0.text == "a man walks forward." and c0.tokens[1] == "man/NOUN" and c0.whole_clip
    assert (c1.start, c1.end, c1.whole_clip) == (1.0, 1.5, False)
    np.testing.assert_array_equal(rec.segment(c1), joints[20:30].astype(np.float32))
    assert (c2.start, c2.end, c2.whole_clip) == (0.0, 0.0, True)  # nan -> whole clip
    assert len(rec.segment(c2)) == 40
    assert [r.motion_id for r in iter_humanml3d(tmp_path, "train")] == ["M000021", "000021"]
    assert [r.motion_id for r in iter_humanml3d(tmp_path)] == ["000021", "M000021"]


def test_humanml3d_errors(tmp_path):
    joints = np.zeros((10, 22, 3))
    _humanml3d_tree(tmp_path, joints)
    bad = tmp_path / "texts" / "000021.txt"
    bad.write_text("ok#ok/ADJ#0.0#0.0\nmissing fields#x/NOUN\n")
    with pytest.raises(DatasetFormatError, match=err_re(bad, "line 2: expected 4 '#'-separated")):
        load_humanml3d_texts(bad)
    bad.write_text("ok#ok/ADJ#zero#0.0\n")
    with pytest.raises(DatasetFormatError, match=err_re(bad, "line 1: expected a number")):
        load_humanml3d_texts(bad)
    npy = tmp_path / "new_joints" / "000021.npy"
    np.save(npy, np.zeros((10, 21, 3)))
    with pytest.raises(DatasetFormatError, match=re.escape(f"{npy}: expected shape (N, 22, 3)")):
        load_humanml3d(tmp_path, "000021")
    with pytest.raises(FileNotFoundError, match="000099.npy"):
        load_humanml3d(tmp_path, "000099")
