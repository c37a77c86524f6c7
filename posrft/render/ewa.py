"""EWA splatting primitives shared by the dense and fast rasterisers.

Projection (Zwicker et al. 2002, as in 3D Gaussian splatting): with camera-space mean
``(x, y, z) = R mu + t`` and the Jacobian of the perspective map

    Jp = [[fx / z, 0, -fx x / z^2],
          [0, fy / z, -fy y / z^2]],

the screen-space covariance is ``Sigma2d = Jp R Sigma R^T Jp^T + h I`` where ``h`` (0.3 px^2)
is the low-pass dilation that keeps every splat at least about a pixel wide.  The rasterisation
rules are in :mod:`posrft.render.raster`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posrft.render.camera import Camera


@dataclass(frozen=True)
class RasterRules:
    """Constants of the rasterisation rules (see the module docstring)."""

    alpha_min: float = 1.0 / 255.0
    alpha_max: float = 0.99
    near: float = 0.01
    dilation: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha_min < self.alpha_max < 1.0:
            raise ValueError(
                f"need 0 < alpha_min < alpha_max < 1, got {self.alpha_min}, {self.alpha_max}"
            )
        if self.near <= 0.0 or self.dilation < 0.0:
            raise ValueError(f"need near > 0 and dilation >= 0, got {self.near}, {self.dilation}")


def project_gaussians(
    means: torch.Tensor, covs: torch.Tensor, camera: Camera, rules: RasterRules = RasterRules()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of ``means (F, N, 3)``, ``covs (F, N, 3, 3)`` through ``F`` cameras.

    Returns ``means2d (F, N, 2)`` in pixels, ``cov2d (F, N, 2, 2)`` (dilation included) and
    ``depth (F, N)``.  Depth is clamped to ``near`` inside the divisions so that culled splats
    (``depth <= near``) stay finite and get no gradient.
    """
    pc = camera.to_camera(means)
    x, y, z = pc.unbind(-1)
    zs = z.clamp_min(rules.near)
    fx, fy = camera.fx, camera.fy
    means2d = torch.stack([fx * x / zs + camera.cx, fy * y / zs + camera.cy], dim=-1)
    zero = torch.zeros_like(zs)
    jac = torch.stack(
        [
            torch.stack([fx / zs, zero, -fx * x / zs**2], dim=-1),
            torch.stack([zero, fy / zs, -fy * y / zs**2], dim=-1),
        ],
        dim=-2,
    )  # (F, N, 2, 3)
    R = camera.R.to(means.dtype)[:, None]  # (F, 1, 3, 3)
    m = jac @ R  # (F, N, 2, 3)
    cov2d = m @ covs @ m.transpose(-1, -2)
    cov2d = cov2d + rules.dilation * torch.eye(2, dtype=means.dtype, device=means.device)
    return means2d, cov2d, z


def conic_of(cov2d: torch.Tensor) -> torch.Tensor:
    """Upper triangle ``(qa, qb, qc)`` of ``Q = Sigma2d^-1``, shape ``(..., 3)``."""
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det = a * c - b * b
    return torch.stack([c / det, -b / det, a / det], dim=-1)


def gaussian_alpha(dx, dy, qa, qb, qc, opacity):
    """Unclamped ``o * exp(-(qa dx^2 + 2 qb dx dy + qc dy^2) / 2)``; one formula for both paths."""
    return opacity * torch.exp(-0.5 * (qa * dx * dx + qc * dy * dy) - qb * dx * dy)


def depth_order(depth: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """Compositing order ``(F, N)`` (argsort of depth, culled splats last, stable)."""
    key = torch.where(live, depth.detach(), torch.full_like(depth, float("inf")))
    return torch.argsort(key, dim=1, stable=True)


def check_splats(means2d, cov2d, depth, colors, opacity) -> None:
    """Raise ``ValueError`` unless the splat tensors have matching ``(F, N, ...)`` shapes."""
    if opacity.ndim != 2:
        raise ValueError(f"rasterize: opacity must be (F, N), got {tuple(opacity.shape)}")
    F, N = opacity.shape
    shapes = {
        "means2d": (means2d, (F, N, 2)),
        "cov2d": (cov2d, (F, N, 2, 2)),
        "depth": (depth, (F, N)),
        "colors": (colors, (F, N, 3)),
    }
    for name, (x, shape) in shapes.items():
        if tuple(x.shape) != shape:
            raise ValueError(f"rasterize: {name} must be {shape}, got {tuple(x.shape)}")
