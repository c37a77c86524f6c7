"""Alpha compositing of projected Gaussians: the rules, the dense reference and the dispatcher.

Rasterisation rules, applied identically by the dense reference (:func:`rasterize_dense`, every
Gaussian at every pixel) and the fast path (:func:`posrft.render.raster_fast.rasterize_fast`,
per-splat windows), so that the two agree to float rounding:

1. A splat is live iff its depth ``z > near``.
2. At pixel centre ``p = (j + 0.5, i + 0.5)`` with ``d = p - mu2d`` and conic ``Q = Sigma2d^-1``:
   ``a = o * exp(-d^T Q d / 2)``; it counts iff ``a >= alpha_min`` (1/255, the 3DGS rule), and
   is then clamped to ``alpha_max`` (0.99).  Consequently a splat touches only the ellipse
   ``d^T Q d <= 2 ln(o / alpha_min)``, whose bounding box ``|d_x| <= sqrt(2 ln(o/alpha_min)
   Sigma2d_xx)`` (same for y) is what the fast path evaluates: the cut-off is exact, not an
   approximation of the dense image.
3. Splats are composited in increasing depth of their centre (ties: lower index first):
   ``C(p) = sum_i c_i a_i T_i + T_final * background``, ``T_i = prod_{j<i} (1 - a_j)``.
"""

from __future__ import annotations

import torch

from posrft.render.ewa import RasterRules, check_splats, conic_of, depth_order, gaussian_alpha
from posrft.render.raster_fast import rasterize_fast


def rasterize_dense(
    means2d: torch.Tensor,
    cov2d: torch.Tensor,
    depth: torch.Tensor,
    colors: torch.Tensor,
    opacity: torch.Tensor,
    height: int,
    width: int,
    background: torch.Tensor,
    rules: RasterRules = RasterRules(),
) -> torch.Tensor:
    """Reference rasteriser: every Gaussian evaluated at every pixel.  Returns ``(F, 3, H, W)``.

    Memory is ``O(N H W)`` per frame (frames are processed one at a time); use it for tests and
    as the ground truth of the fast path, not for training.
    """
    check_splats(means2d, cov2d, depth, colors, opacity)
    dt = means2d.dtype
    conic = conic_of(cov2d)
    live = depth > rules.near
    order = depth_order(depth, live)
    xc = torch.arange(width, dtype=dt, device=means2d.device) + 0.5
    yc = torch.arange(height, dtype=dt, device=means2d.device) + 0.5
    bg = background.to(dt).reshape(3, 1, 1)
    frames = []
    for f in range(opacity.shape[0]):
        idx = order[f]
        u = means2d[f, idx, 0][:, None, None]
        v = means2d[f, idx, 1][:, None, None]
        q = conic[f, idx][:, :, None, None]
        o = opacity[f, idx][:, None, None]
        dx = xc[None, None, :] - u
        dy = yc[None, :, None] - v
        raw = gaussian_alpha(dx, dy, q[:, 0], q[:, 1], q[:, 2], o)  # (N, H, W)
        keep = (raw >= rules.alpha_min) & live[f, idx][:, None, None]
        alpha = torch.where(keep, raw.clamp(max=rules.alpha_max), torch.zeros_like(raw))
        trans = torch.cumprod(1.0 - alpha, dim=0)
        before = torch.cat([torch.ones_like(trans[:1]), trans[:-1]], dim=0)
        img = torch.einsum("nhw,nc->chw", alpha * before, colors[f, idx])
        frames.append(img + trans[-1][None] * bg)
    return torch.stack(frames)


def rasterize(
    means2d: torch.Tensor,
    cov2d: torch.Tensor,
    depth: torch.Tensor,
    colors: torch.Tensor,
    opacity: torch.Tensor,
    height: int,
    width: int,
    background: torch.Tensor,
    rules: RasterRules = RasterRules(),
    mode: str = "fast",
) -> torch.Tensor:
    """Composite ``F`` frames of ``N`` splats into ``(F, 3, H, W)``; ``mode`` is fast or dense."""
    if mode == "dense":
        fn = rasterize_dense
    elif mode == "fast":
        fn = rasterize_fast
    else:
        raise ValueError(f"rasterizer mode must be 'fast' or 'dense', got {mode!r}")
    return fn(means2d, cov2d, depth, colors, opacity, height, width, background, rules)
