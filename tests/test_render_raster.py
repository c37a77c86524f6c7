"""EWA projection and rasterisers: closed forms, gradcheck, fast == dense, occlusion, rules."""

from __future__ import annotations

import math

import pytest
import torch

from posrft.render.camera import Camera
from posrft.render.ewa import RasterRules, project_gaussians
from posrft.render.raster import rasterize, rasterize_dense
from posrft.render.raster_fast import rasterize_fast

D = torch.float64


def random_scene(F=2, N=12, H=14, W=17, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(F, N, 2, generator=g, dtype=dtype) * torch.tensor([W, H], dtype=dtype)
    A = torch.randn(F, N, 2, 2, generator=g, dtype=dtype) * 1.5
    cov = A @ A.transpose(-1, -2) + 0.5 * torch.eye(2, dtype=dtype)
    depth = torch.rand(F, N, generator=g, dtype=dtype) * 4 + 0.5
    colors = torch.rand(F, N, 3, generator=g, dtype=dtype)
    opacity = torch.rand(F, N, generator=g, dtype=dtype) * 0.9 + 0.05
    return means, cov, depth, colors, opacity


def camera(B=1, W=32, H=24, fov=50.0, dtype=D):
    return Camera.from_fov(torch.eye(3, dtype=dtype).expand(B, 3, 3), torch.zeros(B, 3, dtype=dtype), fov, W, H)


def test_single_splat_matches_closed_form():
    H, W, sigma, o = 9, 11, 1.7, 0.8
    mu = torch.tensor([[[5.2, 4.1]]], dtype=D)
    cov = (sigma**2 * torch.eye(2, dtype=D))[None, None]
    color = torch.tensor([[[0.9, 0.2, 0.4]]], dtype=D)
    bg = torch.tensor([0.1, 0.3, 0.5], dtype=D)
    img = rasterize_fast(mu, cov, torch.ones(1, 1, dtype=D), color, torch.full((1, 1), o, dtype=D), H, W, bg)
    for i, j in [(4, 5), (0, 0), (8, 10), (2, 7)]:
        r2 = (j + 0.5 - 5.2) ** 2 + (i + 0.5 - 4.1) ** 2
        a = o * math.exp(-r2 / (2 * sigma**2))
        a = 0.0 if a < 1 / 255 else min(a, 0.99)
        expect = color[0, 0] * a + bg * (1 - a)
        torch.testing.assert_close(img[0, :, i, j], expect, atol=1e-12, rtol=0)


def test_projection_matches_autograd_jacobian_of_pinhole():
    cam = camera(B=1)
    R = torch.linalg.qr(torch.randn(3, 3, dtype=D, generator=torch.Generator().manual_seed(1)))[0]
    if torch.det(R) < 0:
        R = -R
    cam = Camera.from_fov(R[None], torch.tensor([[0.1, -0.2, 3.0]], dtype=D), 50.0, 32, 24)
    mu = torch.tensor([[[0.3, -0.1, 0.4]]], dtype=D)
    A = torch.randn(3, 3, dtype=D, generator=torch.Generator().manual_seed(2)) * 0.1
    sigma = (A @ A.T)[None, None]
    m2d, c2d, depth = project_gaussians(mu, sigma, cam)
    uv, z = cam.project(mu)
    torch.testing.assert_close(m2d, uv)
    torch.testing.assert_close(depth, z)
    Jfull = torch.autograd.functional.jacobian(lambda p: cam.project(p.reshape(1, 1, 3))[0].reshape(2), mu.reshape(3))
    expect = Jfull @ sigma[0, 0] @ Jfull.T + 0.3 * torch.eye(2, dtype=D)
    torch.testing.assert_close(c2d[0, 0], expect)


@pytest.mark.parametrize("fn", [rasterize_dense, rasterize_fast], ids=["dense", "fast"])
def test_gradcheck_double(fn):
    means, cov, depth, colors, opacity = random_scene(F=1, N=3, H=7, W=8, seed=3)
    bg = torch.tensor([0.2, 0.1, 0.3], dtype=D)
    inputs = [t.clone().requires_grad_() for t in (means, cov, colors, opacity)]

    def f(m, c, col, o):
        return fn(m, c, depth, col, o, 7, 8, bg)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_equals_dense_images_and_gradients(dtype, tol, seed):
    H, W = 20, 23
    scene = random_scene(F=3, N=40, H=H, W=W, seed=seed, dtype=dtype)
    means, cov, depth, colors, opacity = (t.clone().requires_grad_() for t in scene)
    depth = depth.detach()
    bg = torch.tensor([0.05, 0.1, 0.2], dtype=dtype)
    g = torch.randn(3, 3, H, W, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    outs, grads = [], []
    for fn in (rasterize_dense, rasterize_fast):
        img = fn(means, cov, depth, colors, opacity, H, W, bg)
        outs.append(img)
        grads.append(torch.autograd.grad((img * g).sum(), [means, cov, colors, opacity]))
    torch.testing.assert_close(outs[1], outs[0], atol=tol, rtol=0)
    for gf, gd in zip(grads[1], grads[0]):
        torch.testing.assert_close(gf, gd, atol=tol, rtol=tol)


def test_fast_handles_large_and_offscreen_splats():
    H, W = 16, 16
    means = torch.tensor([[[8.0, 8.0], [-30.0, 5.0], [8.0, 40.0], [15.9, 0.1]]], dtype=D)
    cov = torch.stack([torch.eye(2, dtype=D) * s for s in (400.0, 30.0, 30.0, 2.0)])[None]
    depth = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=D)
    colors = torch.rand(1, 4, 3, dtype=D, generator=torch.Generator().manual_seed(0))
    opacity = torch.full((1, 4), 0.95, dtype=D)
    bg = torch.zeros(3, dtype=D)
    a = rasterize_dense(means, cov, depth, colors, opacity, H, W, bg)
    b = rasterize_fast(means, cov, depth, colors, opacity, H, W, bg)
    torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["fast", "dense"])
def test_nearer_splat_occludes_farther(mode):
    H, W = 12, 12
    means = torch.tensor([[[6.0, 6.0], [6.0, 6.0]]], dtype=D)
    cov = (4.0 * torch.eye(2, dtype=D)).expand(1, 2, 2, 2)
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    colors = torch.tensor([[red, blue]], dtype=D)
    opacity = torch.ones(1, 2, dtype=D)
    bg = torch.zeros(3, dtype=D)
    for depths, front in (([1.0, 2.0], red), ([2.0, 1.0], blue)):
        img = rasterize(means, cov, torch.tensor([depths], dtype=D), colors, opacity, H, W, bg, mode=mode)
        px = img[0, :, 5, 5]  # pixel centre (5.5, 5.5): alpha = 0.99 * ... ~ 0.94 for the front one
        a = math.exp(-0.5 * 0.5 / 4.0)
        expect = torch.tensor(front, dtype=D) * a + (1 - a) * a * torch.tensor(red if front == blue else blue, dtype=D)
        torch.testing.assert_close(px, expect, atol=1e-12, rtol=0)
        assert px[0 if front == red else 2] > 0.9


def test_alpha_threshold_and_near_plane_rules():
    H, W = 10, 10
    means = torch.tensor([[[5.0, 5.0], [5.0, 5.0]]], dtype=D)
    cov = (4.0 * torch.eye(2, dtype=D)).expand(1, 2, 2, 2)
    colors = torch.ones(1, 2, 3, dtype=D)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=D)
    rules = RasterRules(near=0.1)
    # splat 0 is too faint (opacity below 1/255), splat 1 is in front of the near plane
    opacity = torch.tensor([[0.9 / 255, 0.9]], dtype=D)
    depth = torch.tensor([[1.0, 0.05]], dtype=D)
    for mode in ("fast", "dense"):
        img = rasterize(means, cov, depth, colors, opacity, H, W, bg, rules, mode)
        torch.testing.assert_close(img, bg.reshape(1, 3, 1, 1).expand(1, 3, H, W))


def test_bad_shapes_raise():
    means, cov, depth, colors, opacity = random_scene(F=1, N=3)
    with pytest.raises(ValueError, match="colors must be"):
        rasterize_fast(means, cov, depth, colors[..., :2], opacity, 8, 8, torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="mode"):
        rasterize(means, cov, depth, colors, opacity, 8, 8, torch.zeros(3, dtype=D), mode="tiles")


def test_fast_path_chunking_gives_the_same_image(monkeypatch):
    import posrft.render.raster_fast as rf

    scene = random_scene(F=2, N=30, H=16, W=16, seed=4)
    bg = torch.tensor([0.3, 0.2, 0.1], dtype=D)
    whole = rasterize_fast(*scene, 16, 16, bg)
    monkeypatch.setattr(rf, "_MAX_CANDIDATES", 40)  # forces many small chunks per bucket
    torch.testing.assert_close(rasterize_fast(*scene, 16, 16, bg), whole, atol=1e-12, rtol=0)
