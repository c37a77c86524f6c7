"""Pictures of motion: a camera that follows the subject, GIFs at the clip's speed, and the
coordinates such pictures need (translation invariance far from the origin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.data.actions import Subject, make_clip
from posrft.render.pictures import follow_subject, render_clip_to_file


def _walk(metres=4.3, frames=60):
    """Walking in place, carried ``metres`` along its facing direction (+z) over the clip."""
    clip = torch.from_numpy(make_clip("walk in place", num_frames=frames, subject=Subject())).double()
    clip[..., 2] += torch.linspace(0, metres, frames)[:, None]
    return clip.float()


def _boxes(gif):
    """Per frame: (height, centre column) of the drawn figure's bounding box, in pixels."""
    out = []
    with Image.open(gif) as g:
        for k in range(g.n_frames):
            g.seek(k)
            a = np.asarray(g.convert("L"), dtype=np.float32)
            ys, xs = np.nonzero(a > 40)
            out.append((ys.max() - ys.min() + 1, 0.5 * (xs.max() + xs.min())))
    return np.array(out, dtype=np.float64)


def test_a_following_camera_keeps_a_walking_figure_the_same_size(tmp_path):
    clip = _walk()
    follow = _boxes(render_clip_to_file(clip, "smpl24", tmp_path / "f.gif", size=64, frames=8))
    fixed = _boxes(render_clip_to_file(clip, "smpl24", tmp_path / "x.gif", size=64, frames=8, camera="fixed"))
    # fixed: the figure walks 4.3 m towards the camera and grows; follow: its size holds
    assert fixed[:, 0].max() / fixed[:, 0].min() > 1.4
    assert follow[:, 0].max() / follow[:, 0].min() < 1.15
    assert follow[:, 0].mean() > 1.5 * fixed[:, 0].mean()  # and it fills more of the frame
    assert np.abs(follow[:, 1] - 32).max() < 8  # centred


def test_a_gif_plays_at_the_clips_frame_rate(tmp_path):
    clip = _walk(frames=60)  # 2 s at 30 fps
    with Image.open(render_clip_to_file(clip, "smpl24", tmp_path / "a.gif", size=32, fps=30)) as g:
        durations = []
        for k in range(g.n_frames):
            g.seek(k)
            durations.append(g.info["duration"])
        # 30 fps is above the 25 fps GIF default cap: every 2nd frame, each shown 2/30 s
        assert g.n_frames == 30 and set(durations) == {70}  # 66.7 ms, GIFs count in 10 ms
    with Image.open(render_clip_to_file(clip, "smpl24", tmp_path / "b.gif", size=32, fps=20, stride=3)) as g:
        assert g.n_frames == 20 and g.info["duration"] == 150
    with Image.open(render_clip_to_file(clip, "smpl24", tmp_path / "c.gif", size=32, frames=5)) as g:
        assert g.n_frames == 5 and g.info["duration"] == 400  # 2 s over 5 frames


def test_follow_subject_removes_ground_travel_only():
    clip = _walk()[None].double()
    clip[0, :, :, 1] += 0.3 * torch.sin(torch.linspace(0, 6, clip.shape[1]))[:, None]  # hops
    out = follow_subject(clip, (0.0, 1.0, 0.0))
    c_in, c_out = clip[0].mean(1), out[0].mean(1)  # (T, 3) centroids
    assert torch.allclose(c_out[:, [0, 2]], c_in[:, [0, 2]].mean(0).expand(len(c_out), 2), atol=1e-9)
    assert torch.allclose(c_out[:, 1], c_in[:, 1], atol=1e-12)  # vertical motion kept
    assert torch.allclose(out - out.mean(2, keepdim=True), clip - clip.mean(2, keepdim=True), atol=1e-9)


def test_far_from_the_origin_the_picture_is_the_same(tmp_path):
    clip = _walk(frames=12)
    near = render_clip_to_file(clip, "smpl24", tmp_path / "n.png", size=48, frames=4)
    far = render_clip_to_file(clip.double() + 1e6, "smpl24", tmp_path / "f.png", size=48, frames=4)
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in (near, far))
    assert a.max() > 100 and np.abs(a - b).max() <= 2


def test_render_options_are_checked(tmp_path):
    clip = _walk(frames=6)
    for kwargs, match in [({"camera": "orbit"}, "camera must be 'follow' or 'fixed'"),
                          ({"fps": 0}, "fps must be > 0"), ({"stride": 0}, "stride must be >= 1"),
                          ({"scale": -1.0}, "scale must be > 0")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            render_clip_to_file(clip, "smpl24", tmp_path / "o.gif", **kwargs)
    mm = clip * 1000
    with pytest.raises(ValueError, match=r"expected metres .* millimetres"):
        render_clip_to_file(mm, "smpl24", tmp_path / "mm.png")
    assert render_clip_to_file(mm, "smpl24", tmp_path / "mm.png", scale=0.001, size=32).is_file()
    assert not (tmp_path / "o.gif").exists()
