"""Fast CPU rasteriser: each splat is evaluated only inside its own screen-space window.

Same rules and same result as :func:`posrft.render.raster.rasterize_dense` (see
:mod:`posrft.render.raster`), organised as a sparse list of (splat, pixel) entries:

1. Windows (no gradient).  Splat ``i`` can reach ``a >= alpha_min`` only inside the ellipse
   ``d^T Q d <= s_i = 2 ln(o_i / alpha_min)``, whose bounding box has half-widths
   ``sqrt(s_i Sigma2d_xx)``, ``sqrt(s_i Sigma2d_yy)``; it is widened by half a pixel and
   clipped to the image.  Splats are bucketed by window size (a ~1.5x geometric ladder of
   square windows), so each bucket is one batched evaluation of ``M x S x S`` candidates,
   and the candidates passing the alpha rule become entries.
2. Order (no gradient).  Entries are sorted by ``(frame, pixel, depth rank)``: each pixel's
   splats then form one contiguous, front-to-back segment.
3. Compositing (differentiable).  Alpha is recomputed for the entries only (the same
   formula), and the exclusive transmittance per segment is
   ``T = exp(E - E[segment start])`` with ``E`` the global exclusive cumulative sum of
   ``log(1 - a)`` in float64 (``a <= alpha_max`` keeps the log finite; float64 keeps the
   subtraction of two long prefix sums exact to ~1e-9).  ``C = index_add(a T c) +
   T_final * background`` with ``log T_final = index_add(log(1 - a))``.

Autograd differentiates step 3 with respect to means, covariances, colours and opacities.
"""

from __future__ import annotations

import torch

from posrft.render.ewa import RasterRules, check_splats, conic_of, depth_order, gaussian_alpha

_MAX_CANDIDATES = 1 << 21


def _ladder(limit: int) -> list[int]:
    """Window sizes 2, 3, 4, 6, 8, 12, 16, 24, ... up to the first one >= ``limit``."""
    sizes = [2, 3]
    while sizes[-1] < limit:
        sizes.append(sizes[-2] * 2)
    return sizes


@torch.no_grad()
def _entries(means2d, cov2d, conic, opacity, live, height, width, rules):
    """Flat splat ids and pixel coordinates ``(x, y)`` of every entry with ``a >= alpha_min``."""
    dt = means2d.dtype
    u = means2d[..., 0].reshape(-1)
    v = means2d[..., 1].reshape(-1)
    o = opacity.reshape(-1)
    q = conic.reshape(-1, 3)
    s = 2.0 * torch.log(torch.clamp(o / rules.alpha_min, min=1.0))
    rx = torch.sqrt(s * cov2d[..., 0, 0].reshape(-1))
    ry = torch.sqrt(s * cov2d[..., 1, 1].reshape(-1))
    # pixel j is inside iff |j + 0.5 - u| <= rx; half a pixel of slack absorbs rounding
    x_lo = torch.floor(u - rx - 1.0).clamp(0, width).long()
    x_hi = torch.ceil(u + rx).clamp(-1, width - 1).long()
    y_lo = torch.floor(v - ry - 1.0).clamp(0, height).long()
    y_hi = torch.ceil(v + ry).clamp(-1, height - 1).long()
    alive = live.reshape(-1) & (o >= rules.alpha_min) & (x_lo <= x_hi) & (y_lo <= y_hi)
    alive &= torch.isfinite(u) & torch.isfinite(v)
    extent = torch.maximum(x_hi - x_lo + 1, y_hi - y_lo + 1)
    extent = torch.where(alive, extent, torch.zeros_like(extent))

    sids, xs, ys = [], [], []
    prev = 0
    for size in _ladder(max(height, width)):
        in_bucket = torch.nonzero((extent > prev) & (extent <= size)).squeeze(1)
        prev = size
        # bound the candidate tensors (M x S x S) to ~2M elements per step
        for ids in in_bucket.split(max(1, _MAX_CANDIDATES // (size * size))):
            x0 = torch.clamp(torch.minimum(x_lo[ids], torch.full_like(ids, width - size)), min=0)
            y0 = torch.clamp(torch.minimum(y_lo[ids], torch.full_like(ids, height - size)), min=0)
            off = torch.arange(size, device=ids.device)
            px = x0[:, None, None] + off[None, None, :]  # (M, 1, S)
            py = y0[:, None, None] + off[None, :, None]  # (M, S, 1)
            dx = (px.to(dt) + 0.5) - u[ids][:, None, None]
            dy = (py.to(dt) + 0.5) - v[ids][:, None, None]
            qi = q[ids][:, :, None, None]
            raw = gaussian_alpha(dx, dy, qi[:, 0], qi[:, 1], qi[:, 2], o[ids][:, None, None])
            keep = raw >= rules.alpha_min
            if size > width or size > height:
                keep &= (px < width) & (py < height)
            m, iy, ix = torch.nonzero(keep, as_tuple=True)
            sids.append(ids[m])
            xs.append(x0[m] + ix)
            ys.append(y0[m] + iy)
    if not sids:
        empty = torch.zeros(0, dtype=torch.long, device=means2d.device)
        return empty, empty, empty
    return torch.cat(sids), torch.cat(xs), torch.cat(ys)


def rasterize_fast(
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
    """Windowed rasteriser; same contract and result as ``rasterize_dense``: ``(F, 3, H, W)``."""
    check_splats(means2d, cov2d, depth, colors, opacity)
    F, N = opacity.shape
    dt = means2d.dtype
    device = means2d.device
    conic = conic_of(cov2d)
    live = depth > rules.near
    order = depth_order(depth, live)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=device).expand(F, N))

    sid, px, py = _entries(
        means2d, cov2d, conic.detach(), opacity.detach(), live, height, width, rules
    )
    hw = height * width
    with torch.no_grad():
        pix = (sid // N) * hw + py * width + px
        key, perm = torch.sort(pix * N + rank.reshape(-1).index_select(0, sid))
        sid, px, py = torch.stack([sid, px, py]).index_select(1, perm).unbind(0)
        pix = key // N
        n = sid.numel()
        first = torch.ones(n, dtype=torch.bool, device=device)
        first[1:] = pix[1:] != pix[:-1]
        pos = torch.arange(n, device=device)
        start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), dim=0).values

    # one gather of every per-splat quantity, rows contiguous: (9, F*N) -> (9, E)
    packed = torch.cat(
        [
            means2d.reshape(-1, 2),
            conic.reshape(-1, 3),
            opacity.reshape(-1, 1),
            colors.reshape(-1, 3),
        ],
        dim=1,
    ).t().contiguous()
    u, v, qa, qb, qc, o, r, g, b = packed.index_select(1, sid).unbind(0)
    dx = (px.to(dt) + 0.5) - u
    dy = (py.to(dt) + 0.5) - v
    alpha = gaussian_alpha(dx, dy, qa, qb, qc, o).clamp(max=rules.alpha_max)

    log1m = torch.log1p(-alpha.to(torch.float64))
    excl = torch.cumsum(log1m, 0) - log1m
    trans = torch.exp(excl - excl.index_select(0, start)).to(dt)
    weight = torch.stack([r, g, b]) * (alpha * trans)  # (3, E)
    img = torch.zeros(3, F * hw, dtype=dt, device=device).index_add(1, pix, weight)
    log_final = torch.zeros(F * hw, dtype=torch.float64, device=device).index_add(0, pix, log1m)
    img = img + torch.exp(log_final).to(dt) * background.to(dt)[:, None]
    return img.reshape(3, F, height, width).transpose(0, 1)
