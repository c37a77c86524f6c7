"""DrAction end to end: formats, fast == dense, gradcheck, framing, sampling, people, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from posrft.body.formats import NTU25, SMPL24, custom_format, get_format, list_formats
from posrft.data.actions import Subject, make_clip
from posrft.render import Camera, DrAction
from posrft.render.sampling import segment_indices

CHAIN5 = [(0, 1), (1, 2), (2, 3), (3, 4)]


def chain_clip(T=6, seed=0):
    """A 5-joint zig-zag chain drifting sideways, (T, 5, 3)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.3, 0.0], [0.0, 0.6, 0.05], [0.1, 0.9, 0.0], [0.0, 1.2, 0.0]])
    drift = torch.linspace(0, 0.2, T)[:, None, None] * torch.tensor([1.0, 0.0, 0.0])
    return base + drift + 0.01 * torch.randn(T, 5, 3, generator=g)


def smpl_clip(label: str, T: int) -> torch.Tensor:
    """A (T, 24, 3) SMPL-24 action clip of ``label`` by the default performer (faces +z)."""
    return torch.from_numpy(make_clip(label, num_frames=T, subject=Subject()))


def clip_for(fmt_name: str, T=8) -> torch.Tensor:
    return get_format(fmt_name).from_smpl(smpl_clip("wave right hand", T))


@pytest.mark.parametrize("fmt", list_formats() + ["chain5"])
def test_every_format_renders(fmt):
    if fmt == "chain5":
        renderer, joints = DrAction(CHAIN5, image_size=40, num_frames=3), chain_clip()
    else:
        renderer, joints = DrAction(fmt, image_size=40, num_frames=3), clip_for(fmt)
    renderer.eval()
    with torch.no_grad():
        img = renderer(joints[None])
    assert img.shape == (1, 3, 3, 40, 40)
    assert img.min() >= 0 and img.max() <= 1
    assert (img.amax(1) > 0.3).float().mean() > 0.02  # the skeleton covers part of each frame


def test_layout_counts_and_length_mode():
    r = DrAction("ntu25", samples_per_bone=10)
    assert r.num_primitives == 25 + 24 * 10
    ref = clip_for("ntu25", T=2)[0]
    r2 = DrAction("ntu25", samples_per_bone="length", density=40.0, reference_joints=ref)
    lengths = torch.stack([(ref[b] - ref[a]).norm() for a, b in NTU25.bones])
    assert r2.num_primitives == 25 + int(sum(max(1, round(40.0 * float(L))) for L in lengths))
    with pytest.raises(ValueError, match="reference_joints"):
        DrAction("ntu25", samples_per_bone="length")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_equals_dense_full_renderer_images_and_gradients(dtype):
    joints = clip_for("ntu25", T=5)[None].to(dtype)
    two = torch.stack([joints[0], joints[0] + torch.tensor([0.6, 0.0, 0.2], dtype=dtype)], 1)
    r = DrAction("ntu25", image_size=(30, 36), num_frames=3, samples_per_bone=3).to(dtype).eval()
    results = {}
    for mode in ("fast", "dense"):
        r.rasterizer = mode
        r.zero_grad(set_to_none=True)
        x = two.clone().requires_grad_()
        img = r(x)
        g = torch.sin(torch.arange(img.numel(), dtype=dtype)).reshape(img.shape)
        (img * g).sum().backward()
        results[mode] = (img.detach(), x.grad, {n: p.grad.clone() for n, p in r.named_parameters()})
    (ia, ja, pa), (ib, jb, pb) = results["fast"], results["dense"]
    torch.testing.assert_close(ia, ib, atol=1e-4, rtol=0)
    torch.testing.assert_close(ja, jb, atol=1e-4, rtol=1e-4)
    assert ja.abs().max() > 1e-3
    for name in pa:
        torch.testing.assert_close(pa[name], pb[name], atol=1e-4, rtol=1e-4, msg=name)
        assert pa[name].abs().max() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("mode", ["fast", "dense"])
def test_gradcheck_full_renderer_joints_and_params(mode):
    r = DrAction([(0, 1), (1, 2)], image_size=(9, 10), num_frames=2, samples_per_bone=1,
                 nfm=True, rasterizer=mode).double().eval()  # fmt: skip
    # distinct depths everywhere: a depth tie would make the compositing order (and the image)
    # jump under the finite-difference perturbation
    joints = torch.tensor([[0.0, 0.0, 0.0], [0.12, 0.3, 0.02], [0.0, 0.55, 0.05]], dtype=torch.float64)
    joints = torch.stack([joints, joints + 0.03])[None]  # (1, 2, 3, 3)
    cam = r.frame_camera(joints[:, None], torch.ones(1, 1, 2, dtype=torch.bool))
    params = {n: p.detach().clone() for n, p in r.named_parameters()}
    names = ["appearance.features", "appearance.depth_mix", "log_scales", "appearance.nfm.head.weight"]

    def f(x, *ps):
        override = dict(params, **dict(zip(names, ps)))
        return functional_call(r, override, (x,), {"camera": cam})

    inputs = [joints.clone().requires_grad_()] + [params[n].clone().requires_grad_() for n in names]
    # fast mode checks random projections u^T J v of the full Jacobian (J is large); the
    # rasterisers alone get the full check in test_render_raster.py
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


def test_auto_framing_keeps_every_joint_in_view():
    g = torch.Generator().manual_seed(0)
    for fmt in ("ntu25", "coco17", "smpl24"):
        base = clip_for(fmt, T=10)
        for k in range(3):
            yaw = float(torch.rand(1, generator=g)) * 2 * math.pi
            c, s = math.cos(yaw), math.sin(yaw)
            rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
            shift = torch.randn(3, generator=g) * 3
            p0 = base @ rot.T + shift
            p1 = p0 + torch.tensor([0.9, 0.0, -0.4])
            joints = torch.stack([p0, p1])[None]  # (1, 2, T, J, 3)
            r = DrAction(fmt, image_size=(48, 64), num_frames=4, fov_deg=20 + 30 * k).eval()
            res = r.render(joints)
            uv, depth = res.camera.project(joints.reshape(1, -1, 3))
            assert (depth > 0).all()
            assert (uv[..., 0] >= 0).all() and (uv[..., 0] <= 64).all()
            assert (uv[..., 1] >= 0).all() and (uv[..., 1] <= 48).all()
            assert uv[..., 1].max() - uv[..., 1].min() > 0.3 * 48  # framed, not a dot


@pytest.mark.parametrize("yaw", [0.0, math.pi])  # SMPL faces +z; Kinect/NTU subjects face -z
def test_front_view_puts_left_side_on_image_right(yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    joints = (smpl_clip("walk in place", 4) @ rot.T)[None]
    res = DrAction("smpl24", image_size=64, num_frames=2).eval().render(joints)
    uv, _ = res.camera.project(joints.reshape(1, -1, 3))
    uv = uv.reshape(4, 24, 2)
    left, right = SMPL24.joint_names.index("left_hip"), SMPL24.joint_names.index("right_hip")
    assert (uv[:, left, 0] > uv[:, right, 0]).all()
    head, pelvis = SMPL24.joint_names.index("head"), 0
    assert (uv[:, head, 1] < uv[:, pelvis, 1]).all()  # up is up


def test_explicit_camera_is_used():
    joints = clip_for("ntu25", T=4)[None]
    r = DrAction("ntu25", image_size=32, num_frames=2).eval()
    auto = r.render(joints).camera
    moved = Camera(auto.R, auto.t + torch.tensor([0.3, 0.0, 0.0]), auto.fx, auto.fy, auto.cx, auto.cy, 32, 32)
    a, b = r(joints, camera=auto), r(joints, camera=moved)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="camera is for batch"):
        r(joints, camera=Camera.from_fov(auto.R.expand(2, 3, 3), auto.t.expand(2, 3), 30.0, 32, 32))


def test_determinism_eval_and_seeded_train():
    joints = clip_for("ntu25", T=30)[None].repeat(2, 1, 1, 1)
    r = DrAction("ntu25", image_size=32, num_frames=6)
    r.eval()
    assert torch.equal(r(joints), r(joints))
    r.train()
    a = r.render(joints, generator=torch.Generator().manual_seed(5))
    b = r.render(joints, generator=torch.Generator().manual_seed(5))
    c = r.render(joints, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.images, b.images) and torch.equal(a.frame_index, b.frame_index)
    assert not torch.equal(a.frame_index, c.frame_index)
    # same seed => same init, independent of the global RNG
    assert torch.equal(DrAction("ntu25").appearance.features, DrAction("ntu25").appearance.features)


def test_temporal_sampling_segments():
    L = torch.tensor([24, 5, 1])
    ev = segment_indices(L, 12, random=False)
    assert ev[0].tolist() == list(range(1, 24, 2))  # segment middles
    assert ev[1].tolist() == [min(4, math.floor((k + 0.5) * 5 / 12)) for k in range(12)]  # T < T'
    assert ev[2].tolist() == [0] * 12
    tr = segment_indices(L, 12, random=True, generator=torch.Generator().manual_seed(0))
    k = torch.arange(12)
    assert ((tr[0] >= 2 * k) & (tr[0] < 2 * k + 2)).all()  # one frame inside each segment
    assert (tr[1:] <= (L[1:, None] - 1)).all() and (tr >= 0).all()


def test_padding_and_absent_second_person():
    r = DrAction("ntu25", image_size=32, num_frames=4).eval()
    clip = clip_for("ntu25", T=7)
    padded = torch.cat([clip, torch.full((5, 25, 3), float("nan"))])[None]
    torch.testing.assert_close(r(padded, lengths=[7]), r(clip[None]), atol=1e-6, rtol=0)
    two = torch.stack([clip, torch.zeros_like(clip)])[None]  # NTU convention: absent actor = zeros
    res = r.render(two)
    assert res.person_mask.tolist() == [[True, False]]
    torch.testing.assert_close(res.images, r(clip[None]), atol=1e-6, rtol=0)


def test_frozen_renderer_still_passes_gradients_to_joints():
    r = DrAction("ntu25", image_size=24, num_frames=2, learnable=False).eval()
    assert not any(p.requires_grad for p in r.parameters())
    x = clip_for("ntu25", T=3)[None].requires_grad_()
    r(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r: r(torch.zeros(0, 4, 25, 3)), r"B=0"),
        (lambda r: r(torch.zeros(1, 0, 25, 3)), r"T=0"),
        (lambda r: r(torch.zeros(1, 4, 24, 3)), r"ntu25.*\(\.\.\., 25, 3\)"),
        (lambda r: r(torch.zeros(1, 3, 4, 25, 3)), r"P=3"),
        (lambda r: r(torch.zeros(4, 25, 3)), r"\(B, T, J, 3\)"),
        (lambda r: r(torch.zeros(1, 4, 25, 3), lengths=[5]), r"lengths\[0\] = 5"),
    ],
)
def test_bad_input_shapes(make, match):
    r = DrAction("ntu25", image_size=16, num_frames=2)
    with pytest.raises(ValueError, match=match):
        make(r)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_joints_name_the_index(bad):
    r = DrAction("ntu25", image_size=16, num_frames=2)
    x = clip_for("ntu25", T=6)[None].repeat(2, 1, 1, 1)
    x[1, 3, 7, 2] = bad
    with pytest.raises(ValueError, match=r"NaN/inf at sample 1, person 0, frame 3, joint 7"):
        r(x)


def test_bad_bones():
    with pytest.raises(ValueError, match=r"bone 1 = \(1, 7\).*out of\s+range \[0, 5\)"):
        DrAction([(0, 1), (1, 7)], num_joints=5)
    with pytest.raises(ValueError, match="negative joint index"):
        DrAction([(0, 1), (-1, 2)])
    with pytest.raises(ValueError, match="out of\\s+range"):
        custom_format([(0, 1), (1, 9)], num_joints=5)
