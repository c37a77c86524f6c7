"""Pictures: PIL conversion, frame grids, PNG/GIF files, labelled pose grids, camera helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.data.actions import Subject, make_clip
from posrft.data.prior import sample_poses
from posrft.data.skeleton import pose_joints
from posrft.render import Camera, auto_frame
from posrft.render.pictures import (
    frame_grid,
    render_clip_to_file,
    render_npy,
    render_pose_grid,
    to_pil,
)


def prior_poses(n: int, seed: int, jitter: float = 0.0) -> torch.Tensor:
    """``(n, 24, 3)`` joints (FK of the stand-in body) of pose-prior samples facing +z;
    ``jitter > 0`` adds that much Gaussian noise (radians) to every axis-angle component
    before FK, a stand-in for a prediction of the ``jitter = 0`` poses."""
    pose = torch.from_numpy(sample_poses(n, seed=seed, yaw_deg=0.0).pose).double()
    if jitter > 0:
        gen = torch.Generator().manual_seed(seed + 1)
        pose = pose + jitter * torch.randn(pose.shape, generator=gen, dtype=pose.dtype)
    return pose_joints(pose).float()


def test_to_pil_shapes_and_values():
    x = torch.zeros(2, 3, 3, 8, 10)
    x[1, 2, 0, 4, 5] = 1.0
    x[0, 0, 1] = 2.0  # clamped
    pils = to_pil(x)
    assert len(pils) == 2 and len(pils[0]) == 3 and pils[0][0].size == (10, 8)
    assert pils[1][2].getpixel((5, 4)) == (255, 0, 0)
    assert pils[0][0].getpixel((0, 0)) == (0, 255, 0)
    assert isinstance(to_pil(x[0, 0]), Image.Image)
    with pytest.raises(ValueError, match="3, H, W"):
        to_pil(torch.zeros(2, 4, 8, 8))


def test_frame_grid_layout():
    grid = frame_grid(torch.rand(12, 3, 10, 20), pad=2)
    assert grid.size == (4 * 20 + 5 * 2, 3 * 10 + 4 * 2)
    assert frame_grid(torch.rand(5, 3, 10, 20), cols=5, pad=0).size == (100, 10)


def test_render_clip_to_png_gif_and_npy(tmp_path):
    clip = make_clip("raise both arms", fmt="ntu25", num_frames=20, subject=Subject())
    png = render_clip_to_file(clip, "ntu25", tmp_path / "c.png", frames=6, size=48)
    img = Image.open(png)
    assert img.size == (3 * 48 + 4 * 2, 2 * 48 + 3 * 2)
    assert np.asarray(img).max() > 100  # something is drawn
    two = np.stack([clip, clip + np.array([0.8, 0, 0], dtype=clip.dtype)])
    gif = render_clip_to_file(two, "ntu25", tmp_path / "c.gif", frames=5, size=32)
    with Image.open(gif) as g:
        assert g.n_frames == 5 and g.size == (32, 32)
    np.save(tmp_path / "clip.npy", clip)
    out = render_npy(tmp_path / "clip.npy", "ntu25", tmp_path / "from_npy.png", frames=4, size=32)
    assert Image.open(out).size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)
    with pytest.raises(ValueError, match=r"\.png, \.jpg or \.gif"):
        render_clip_to_file(clip, "ntu25", tmp_path / "c.bmp")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        render_npy(tmp_path / "missing.npy", "ntu25", tmp_path / "x.png")
    with pytest.raises(ValueError, match="ntu25"):
        render_clip_to_file(clip[..., :24, :], "ntu25", tmp_path / "bad.png")


def test_render_pose_grid_side_by_side_with_captions():
    gt = prior_poses(3, seed=0)
    pred = prior_poses(3, seed=0, jitter=0.1)
    grid = render_pose_grid({"pred": pred, "gt": gt}, captions=["a", "b b b " * 20, "c"], size=40, cols=3)
    w, h = grid.size
    assert w == 3 * (2 * 40 + 2) + 4 * 8
    arr = np.asarray(grid)
    assert (arr < 250).any(axis=-1).mean() > 0.2  # panels (dark) and text on white
    assert h > 40 + 3 * 15  # the long caption wrapped onto several lines
    # one group, list of single poses, and SMPL joints converted to another format
    assert render_pose_grid([gt[0], gt[1]], size=32).size[0] == 2 * 32 + 3 * 8
    assert render_pose_grid(gt, fmt="ntu25", size=32).size[1] == 32 + 2 * 8
    with pytest.raises(ValueError, match="captions has 1"):
        render_pose_grid(gt, captions=["x"], size=32)
    with pytest.raises(ValueError, match="same N"):
        render_pose_grid({"a": gt, "b": gt[:2]}, size=32)


def test_pose_grid_shares_one_camera_per_sample():
    gt = prior_poses(1, seed=1)
    shifted = gt + torch.tensor([0.5, 0.0, 0.0])  # same pose moved right: must look moved
    grid = np.asarray(render_pose_grid({"a": gt, "b": shifted}, size=64)).astype(float)
    top = 8 + (12 + 3) + 2  # gap + label row (font 12 + 3 px leading) + 2 px, as laid out
    a = grid[top : top + 64, 8 : 8 + 64].sum(-1)
    b = grid[top : top + 64, 8 + 66 : 8 + 130].sum(-1)
    xs = np.arange(64)
    ca, cb = (a * xs).sum() / a.sum(), (b * xs).sum() / b.sum()
    assert cb > ca + 3


def test_camera_project_closed_form():
    R = torch.eye(3)[None]
    cam = Camera.from_fov(R, torch.tensor([[0.0, 0.0, 2.0]]), 90.0, 100, 80)
    uv, z = cam.project(torch.tensor([[[0.5, -0.25, 0.0]]]))
    f = 40.0  # (H / 2) / tan(45 deg)
    torch.testing.assert_close(uv, torch.tensor([[[50 + f * 0.25, 40 - f * 0.125]]]))
    torch.testing.assert_close(z, torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match="points must be"):
        cam.project(torch.zeros(2, 5, 3))


def test_auto_frame_ignores_nan_rows_and_rejects_empty():
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 1.7, 0.0], [float("nan")] * 3]])
    cam = auto_frame(pts, width=40, height=40)
    uv, d = cam.project(pts[:, :2])
    assert (uv >= 0).all() and (uv <= 40).all() and (d > 0).all()
    with pytest.raises(ValueError, match="no finite point"):
        auto_frame(torch.full((1, 3, 3), float("nan")), width=8, height=8)

