"""Synthetic text->pose / image->pose DatasetDicts: columns, consistency, determinism, I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import roma
import torch
from PIL import Image

from posrft.data import synth
from posrft.data.show import show_dataset
from posrft.data.skeleton import pose_joints


@pytest.fixture(scope="module")
def t2p(text2pose_dir):
    return synth.load_dataset_dir(text2pose_dir)


@pytest.fixture(scope="module")
def i2p_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "image2pose"
    synth.build_image2pose(8, 2, 2, seed=0, out_dir=out, image_size=48)
    return out


@pytest.fixture(scope="module")
def i2p(i2p_dir):
    return synth.load_dataset_dir(i2p_dir)


def _rows(ds):
    return [ds[i] for i in range(len(ds))]


def _check_common(row):
    assert len(row["gt_pose"]) == 72 and len(row["gt_pose_6d"]) == 132
    assert np.asarray(row["gt_joints"]).shape == (24, 3)
    assert isinstance(row["pose_id"], int) and isinstance(row["key_pose"], str)
    assert isinstance(row["caption"], str) and row["caption"].endswith(".")
    (assistant,) = row["completion"]
    assert assistant["role"] == "assistant"
    (part,) = assistant["content"]
    assert part["type"] == "text" and part["text"].count(synth.POSE_TOKEN) == 1


def test_text2pose_columns_and_prompt(t2p):
    assert list(t2p) == ["train", "val", "test"]
    assert [len(t2p[s]) for s in t2p] == [48, 8, 8]
    assert set(t2p["train"].column_names) == {
        "prompt", "completion", "caption", "gt_pose", "gt_pose_6d", "gt_joints", "pose_id",
        "key_pose", "ground"}  # fmt: skip
    instructions = set()
    for row in _rows(t2p["train"]):
        _check_common(row)
        (user,) = row["prompt"]
        assert user["role"] == "user"
        (part,) = user["content"]
        assert part["type"] == "text" and part["text"].endswith(row["caption"])
        instructions.add(part["text"][: -len(row["caption"])])
    assert len(instructions) >= 4  # instructions vary


def test_splits_are_disjoint_and_contiguous(t2p):
    ids = {s: t2p[s]["pose_id"] for s in t2p}
    assert ids["train"] == list(range(48))
    assert ids["val"] == list(range(48, 56)) and ids["test"] == list(range(56, 64))
    assert not set(ids["train"]) & set(ids["val"]) | set(ids["train"]) & set(ids["test"])


def test_ground_truth_is_consistent(t2p):
    ds = t2p["train"]
    pose = torch.tensor(ds["gt_pose"], dtype=torch.float64)
    joints = torch.tensor(ds["gt_joints"], dtype=torch.float64)
    assert torch.allclose(pose_joints(pose), joints, atol=1e-5)
    assert torch.allclose(joints[:, 0], torch.zeros(3, dtype=torch.float64), atol=1e-7)  # pelvis
    # 6D: first two columns of each of the first 22 rotation matrices, row-major
    rot = roma.rotvec_to_rotmat(pose.reshape(-1, 24, 3)[:, :22])
    six = rot[..., :2].reshape(len(ds), 132)
    assert torch.allclose(six, torch.tensor(ds["gt_pose_6d"], dtype=torch.float64), atol=1e-6)
    assert np.allclose(np.asarray(ds["gt_pose"])[:, 66:], 0)  # hands identity


def test_builds_are_deterministic(tmp_path):
    a = synth.build_text2pose(6, 2, 2, seed=5)
    b = synth.build_text2pose(6, 2, 2, seed=5)
    c = synth.build_text2pose(6, 2, 2, seed=6)
    for s in ("train", "val", "test"):
        assert a[s].to_dict() == b[s].to_dict()
    assert a["train"]["caption"] != c["train"]["caption"]
    # a bigger build extends a smaller one pose by pose
    big = synth.build_text2pose(12, 2, 2, seed=5)
    assert big["train"]["gt_pose"][:6] == a["train"]["gt_pose"]
    assert big["train"]["caption"][:6] == a["train"]["caption"]


def test_save_load_round_trip_is_atomic(tmp_path):
    dd = synth.build_text2pose(4, 1, 1, seed=2)
    out = synth.save_dataset(dd, tmp_path / "ds")
    back = synth.load_dataset_dir(out)
    for s in dd:
        assert back[s].to_dict() == dd[s].to_dict()
        assert back[s].features == dd[s].features
    # saving again replaces the old dataset and leaves no temporary folders behind
    dd2 = synth.build_text2pose(3, 1, 1, seed=3)
    synth.save_dataset(dd2, out)
    assert len(synth.load_dataset_dir(out)["train"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (tmp_path / "not_a_dataset").mkdir()
    (tmp_path / "not_a_dataset" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a saved DatasetDict"):
        synth.save_dataset(dd, tmp_path / "not_a_dataset")
    with pytest.raises(FileNotFoundError, match="dataset_dict.json"):
        synth.load_dataset_dir(tmp_path / "not_a_dataset")


def test_image2pose_rows(i2p):
    assert [len(i2p[s]) for s in i2p] == [8, 2, 2]
    for row in _rows(i2p["train"]):
        _check_common(row)
        (user,) = row["prompt"]
        assert [p["type"] for p in user["content"]] == ["image", "text"]
        (img,) = row["images"]
        assert isinstance(img, Image.Image) and img.size == (48, 48)
        cam = row["camera"]
        assert cam["width"] == cam["height"] == 48
        R = np.asarray(cam["R"])
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-5) and np.linalg.det(R) > 0.99


def test_keypoints_are_the_projection_of_the_joints(i2p):
    for row in _rows(i2p["train"]) + _rows(i2p["test"]):
        cam = row["camera"]
        X = np.asarray(row["gt_joints"], dtype=np.float64)
        xc = X @ np.asarray(cam["R"], dtype=np.float64).T + np.asarray(cam["t"])
        assert (xc[:, 2] > 0.5).all()  # in front of the camera
        u = cam["fx"] * xc[:, 0] / xc[:, 2] + cam["cx"]
        v = cam["fy"] * xc[:, 1] / xc[:, 2] + cam["cy"]
        kp = np.asarray(row["keypoints_2d"])
        assert np.allclose(kp, np.stack([u, v], 1), atol=1e-3)
        assert (kp > 0).all() and (kp < 48).all()  # the body is framed
        # the person is drawn where the pelvis projects
        img = np.asarray(row["images"][0].convert("RGB"), dtype=np.float64)
        x, y = kp[0].astype(int)
        assert img[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].max() > 60
        assert img.mean() < 200 and (img.max(-1) > 40).mean() > 0.05


def test_image2pose_is_deterministic(i2p):
    again = synth.build_image2pose(8, 2, 2, seed=0, image_size=48)
    a, b = i2p["train"][3], again["train"][3]
    assert np.array_equal(np.asarray(a["images"][0]), np.asarray(b["images"][0]))
    assert a["camera"] == b["camera"] and a["caption"] == b["caption"]


def test_split_sizes_and_synth_dataset(tmp_path):
    assert synth.split_sizes(100) == (80, 10, 10)
    assert synth.split_sizes(7, (0.5, 0.25, 0.25)) == (3, 2, 2)
    assert synth.split_sizes(0, (5, 1, 2)) == (5, 1, 2)
    with pytest.raises(ValueError, match="sum to 1"):
        synth.split_sizes(10, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="task must be"):
        synth.synth_dataset("video2pose", 10, tmp_path / "x")
    with pytest.raises(ValueError, match="n_val"):
        synth.build_text2pose(4, -1, 0)
    dd = synth.synth_dataset("text2pose", 10, tmp_path / "t", seed=1)
    assert [len(dd[s]) for s in dd] == [8, 1, 1]
    meta = json.loads((tmp_path / "t" / "dataset_dict.json").read_text())
    assert meta["splits"] == ["train", "val", "test"]


def test_show_dataset_writes_pictures(text2pose_dir, i2p_dir, tmp_path):
    a = show_dataset(text2pose_dir, n=4, out=tmp_path / "t.png", size=96)
    b = show_dataset(i2p_dir, n=3, out=tmp_path / "i.png", size=96)
    for p in (a, b):
        im = Image.open(p)
        assert im.size[0] > 150 and im.size[1] > 96
        assert np.asarray(im.convert("L")).std() > 10
    with pytest.raises(KeyError, match="no split"):
        show_dataset(text2pose_dir, split="dev", out=tmp_path / "x.png")


def test_mesh_shaded_style_darkens_the_back_so_front_and_back_views_differ():
    """The rest body seen from the front and, turned by 180°, from the back: with "mesh" the two
    pictures hold the same colours (mirrored in place), with "mesh_shaded" the back view is
    darker by about BACK_SHADE; the shade touches roughly the back half of the vertices."""
    from posrft.data.views import BACK_SHADE, mesh_colours, render_people

    keep, rgb = mesh_colours(3, BACK_SHADE)
    keep_v1, rgb_v1 = mesh_colours(3, None)
    assert torch.equal(keep, keep_v1)
    shaded = ~torch.isclose(rgb, rgb_v1).all(-1)
    torch.testing.assert_close(rgb[shaded], BACK_SHADE * rgb_v1[shaded])
    assert 0.35 < shaded.float().mean() < 0.65

    pose = torch.zeros(2, 72)
    pose[1, :3] = torch.tensor([0.0, np.pi, 0.0])  # turned about the vertical: its back to the camera
    joints = pose_joints(pose)

    def brightness(style):
        images, _ = render_people(pose, joints, seed=0, image_size=64, style=style)
        lit = [np.asarray(im.convert("RGB"), dtype=np.float64) for im in images]
        return [im[im.max(-1) > 20].mean() for im in lit]  # mean over the person's pixels

    front, back = brightness("mesh")
    assert abs(back - front) < 0.1 * front
    front, back = brightness("mesh_shaded")
    assert back < 0.8 * front


@pytest.mark.parametrize("yaw_deg, key", [(0.0, "front"), (60.0, "right"), (170.0, "back"),
                                          (-100.0, "left"), (-179.0, "back")])
def test_view_phrase_is_the_heading_bin_in_picture_terms(yaw_deg, key):
    """The rest body turned by θ about the vertical has heading θ (closed form); a point ahead
    of a body facing "right" projects to the right of its pelvis in the data's own camera."""
    from posrft.data.views import VIEW_PHRASES, facing_yaw_deg, render_people, view_phrases

    pose = torch.zeros(1, 72)
    pose[0, 1] = np.deg2rad(yaw_deg)
    joints = pose_joints(pose)
    assert facing_yaw_deg(joints).item() == pytest.approx(yaw_deg, abs=1e-3)
    assert view_phrases(joints) == [VIEW_PHRASES[key]]
    if key in ("left", "right"):
        _, cam = render_people(pose, joints, seed=0, image_size=32)
        ahead = joints[:, :1] + 0.5 * torch.tensor([np.sin(np.deg2rad(yaw_deg)), 0.0, np.cos(np.deg2rad(yaw_deg))])
        uv, _ = cam.project(torch.cat([joints[:, :1], ahead], 1).double())
        assert (uv[0, 1, 0] > uv[0, 0, 0]) == (key == "right")


def test_view_text_opens_each_answer_with_its_heading(tmp_path):
    dd = synth.build_image2pose(4, 1, 1, seed=0, image_size=32, view_text=True)
    plain = synth.build_image2pose(4, 1, 1, seed=0, image_size=32)
    from posrft.data.views import view_phrases

    for split in dd:
        phrases = view_phrases(torch.tensor(dd[split]["gt_joints"]))
        for row, base, phrase in zip(dd[split], plain[split], phrases):
            text, base_text = row["completion"][0]["content"][0]["text"], base["completion"][0]["content"][0]["text"]
            assert text == f"{phrase} {base_text}" and text.count(synth.POSE_TOKEN) == 1
            assert np.array_equal(np.asarray(row["images"][0]), np.asarray(base["images"][0]))


def test_describe_states_the_caption_after_the_heading_and_before_the_pose(tmp_path):
    both = synth.build_image2pose(4, 1, 1, seed=0, image_size=32, view_text=True, describe=True)
    plain = synth.build_image2pose(4, 1, 1, seed=0, image_size=32)
    from posrft.data.views import view_phrases

    for split in both:
        phrases = view_phrases(torch.tensor(both[split]["gt_joints"]))
        for row, base, phrase in zip(both[split], plain[split], phrases):
            text, base_text = row["completion"][0]["content"][0]["text"], base["completion"][0]["content"][0]["text"]
            assert text == f"{phrase} {row['caption']} {base_text}"
            assert text.index(row["caption"]) < text.index(synth.POSE_TOKEN) and text.count(synth.POSE_TOKEN) == 1
            assert np.array_equal(np.asarray(row["images"][0]), np.asarray(base["images"][0]))


def test_max_yaw_keeps_the_person_facing_the_camera():
    from posrft.data.views import facing_yaw_deg

    front = synth.build_image2pose(30, 5, 5, seed=0, image_size=16, max_yaw_deg=45.0)
    every = synth.build_image2pose(30, 5, 5, seed=0, image_size=16)
    yaw = {name: torch.cat([facing_yaw_deg(torch.tensor(dd[s]["gt_joints"])) for s in dd]).abs()
           for name, dd in (("front", front), ("every", every))}  # fmt: skip
    # the hips' facing follows the drawn yaw up to the key pose's own twist (a few poses, e.g.
    # lying ones, have a hip line far from their root's heading)
    assert (yaw["front"] <= 60.0).float().mean() >= 0.95
    assert (yaw["every"] > 90.0).float().mean() >= 0.3
    with pytest.raises(ValueError, match="max_yaw_deg must be in"):
        synth.build_image2pose(4, 1, 1, max_yaw_deg=270.0)
