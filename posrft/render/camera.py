"""Pinhole camera shared by the renderer, datasets (2D keypoints) and rewards (reprojection).

Conventions (OpenCV): camera coordinates have x to the image right, y down, z forward (depth).
A world point ``X`` maps to camera coordinates ``X_c = R X + t`` and to pixels

    u = fx * x_c / z_c + cx,        v = fy * y_c / z_c + cy,

where pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)`` so its centre is
``(j + 0.5, i + 0.5)`` and the image spans ``u in [0, W]``, ``v in [0, H]``.  ``cx = W / 2``,
``cy = H / 2`` and square pixels ``fx = fy = (H / 2) / tan(fov_y / 2)``.

:func:`auto_frame` places one camera per batch element so that every given point is in view:
it looks at the centre of the points' bounding box from the front of the body, i.e. from
``centre + D * facing`` along ``-facing``, with the world ``up`` axis pointing up in the image.
``facing`` is ``normalize((left - right) x up)`` averaged over the format's left/right joint
pairs (SMPL: +z, Kinect/NTU: -z, both y-up); without left/right names it is +z (the SMPL front
view, i.e. the camera looks along -z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_AXES = {"x": 0, "y": 1, "z": 2}


def axis_vector(axis: str | tuple[float, float, float] | torch.Tensor, dtype=torch.float32):
    """``"y"``, ``"-z"`` or an explicit 3-vector as a unit tensor ``(3,)``."""
    if isinstance(axis, str):
        sign = -1.0 if axis.startswith("-") else 1.0
        name = axis.lstrip("+-").lower()
        if name not in _AXES:
            raise ValueError(f"axis {axis!r} is not one of x, y, z, -x, -y, -z")
        vec = torch.zeros(3, dtype=dtype)
        vec[_AXES[name]] = sign
        return vec
    vec = torch.as_tensor(axis, dtype=dtype).reshape(-1)
    if vec.numel() != 3 or not torch.isfinite(vec).all() or vec.norm() < 1e-8:
        raise ValueError(f"axis must be a finite non-zero 3-vector, got {axis!r}")
    return vec / vec.norm()


@dataclass(frozen=True)
class Camera:
    """A batch of pinhole cameras sharing intrinsics.

    Attributes:
        R: ``(B, 3, 3)`` world-to-camera rotations.
        t: ``(B, 3)`` world-to-camera translations.
        fx, fy, cx, cy: intrinsics in pixels.
        width, height: image size in pixels.
    """

    R: torch.Tensor
    t: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.R.ndim != 3 or self.R.shape[1:] != (3, 3):
            raise ValueError(f"Camera.R must be (B, 3, 3), got {tuple(self.R.shape)}")
        if self.t.shape != (self.R.shape[0], 3):
            raise ValueError(
                f"Camera.t must be (B, 3) = ({self.R.shape[0]}, 3), got {tuple(self.t.shape)}"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Camera image size must be positive, got {self.width}x{self.height}")

    @property
    def batch_size(self) -> int:
        return self.R.shape[0]

    @staticmethod
    def focal_from_fov(fov_deg: float, height: int) -> float:
        """``f = (H / 2) / tan(fov_y / 2)`` for a vertical field of view in degrees."""
        if not 0.0 < fov_deg < 180.0:
            raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
        return (height / 2.0) / math.tan(math.radians(fov_deg) / 2.0)

    @classmethod
    def from_fov(cls, R: torch.Tensor, t: torch.Tensor, fov_deg: float, width: int, height: int):
        """Camera with square pixels, a vertical field of view and a centred principal point."""
        f = cls.focal_from_fov(fov_deg, height)
        return cls(R, t, f, f, width / 2.0, height / 2.0, width, height)

    def to(self, dtype: torch.dtype) -> "Camera":
        return Camera(self.R.to(dtype), self.t.to(dtype), self.fx, self.fy, self.cx, self.cy,
                      self.width, self.height)  # fmt: skip

    def repeat_interleave(self, n: int) -> "Camera":
        """Each camera repeated ``n`` times (e.g. one per rendered frame)."""
        return Camera(self.R.repeat_interleave(n, 0), self.t.repeat_interleave(n, 0), self.fx,
                      self.fy, self.cx, self.cy, self.width, self.height)  # fmt: skip

    def _batched(self, points: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        if points.ndim < 2 or points.shape[0] != self.batch_size or points.shape[-1] != 3:
            raise ValueError(
                f"{what} must be (B={self.batch_size}, ..., 3), got {tuple(points.shape)}"
            )
        extra = points.ndim - 2
        R = self.R.to(points.dtype).reshape(self.batch_size, *([1] * extra), 3, 3)
        t = self.t.to(points.dtype).reshape(self.batch_size, *([1] * extra), 3)
        return R, t

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """World points ``(B, ..., 3)`` to camera coordinates ``(B, ..., 3)``: ``R X + t``."""
        R, t = self._batched(points, "points")
        return (R @ points.unsqueeze(-1)).squeeze(-1) + t

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points ``(B, ..., 3)`` to pixels ``uv (B, ..., 2)`` and depth ``z_c (B, ...)``.

        Points at or behind the camera (``z_c <= 0``) give non-finite or mirrored ``uv``; check
        ``depth > 0`` before using them.
        """
        pc = self.to_camera(points)
        z = pc[..., 2]
        u = self.fx * pc[..., 0] / z + self.cx
        v = self.fy * pc[..., 1] / z + self.cy
        return torch.stack([u, v], dim=-1), z


def facing_direction(
    points: torch.Tensor,
    pairs: tuple[tuple[int, int], ...],
    up: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Body facing direction per batch element, ``(B, 3)`` unit vectors orthogonal to ``up``.

    ``points`` is ``(B, M, J, 3)`` (M poses per element: frames x people); ``pairs`` are
    ``(left, right)`` joint indices.  ``facing = normalize(mean(left - right) x up)``; where
    that is degenerate (no pairs, a person lying along ``up``) it falls back to +z projected
    orthogonally to ``up`` (or +x when ``up`` is z).
    """
    B = points.shape[0]
    up = up.to(points.dtype)
    fallback = torch.tensor([0.0, 0.0, 1.0], dtype=points.dtype)
    if abs(float(fallback @ up)) > 0.9:
        fallback = torch.tensor([1.0, 0.0, 0.0], dtype=points.dtype)
    fallback = fallback - (fallback @ up) * up
    fallback = (fallback / fallback.norm()).expand(B, 3)
    if not pairs:
        return fallback.clone()
    left = points[:, :, [a for a, _ in pairs]]
    right = points[:, :, [b for _, b in pairs]]
    diff = left - right  # (B, M, K, 3)
    if valid is not None:
        diff = diff * valid.reshape(B, -1, 1, 1).to(diff.dtype)
    lateral = diff.sum(dim=(1, 2))
    facing = torch.linalg.cross(lateral, up.expand_as(lateral), dim=-1)
    norm = facing.norm(dim=-1, keepdim=True)
    # degenerate when left-right is (nearly) parallel to up or vanishes
    ok = (norm > 1e-3 * lateral.norm(dim=-1, keepdim=True)) & (norm > 1e-12)
    return torch.where(ok, facing / norm.clamp_min(1e-12), fallback)


def look_at_rotation(forward: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """World-to-camera rotations ``(B, 3, 3)`` for a camera looking along ``forward (B, 3)``.

    Rows are the camera axes in world coordinates: ``z = forward``, ``y = -up`` (image down)
    made orthogonal to ``z``, ``x = y x z`` (image right).
    """
    z = forward / forward.norm(dim=-1, keepdim=True)
    down = -up.to(forward.dtype).expand_as(z)
    y = down - (down * z).sum(-1, keepdim=True) * z
    y = y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x = torch.linalg.cross(y, z, dim=-1)
    return torch.stack([x, y, z], dim=1)


@torch.no_grad()
def auto_frame(
    points: torch.Tensor,
    *,
    width: int,
    height: int,
    fov_deg: float = 35.0,
    up: str | tuple[float, float, float] = "y",
    facing: torch.Tensor | None = None,
    fill: float = 0.85,
    min_depth: float = 0.2,
) -> Camera:
    """Cameras ``(B,)`` that keep every point of ``points (B, K, 3)`` inside the image.

    The camera looks along ``-facing`` (``facing (B, 3)`` or ``(3,)``, default +z, made
    orthogonal to ``up``) at the centre ``c`` of each element's bounding box.  In camera-aligned offsets ``(x', y', z') = R (X - c)`` a point
    projects inside the central ``fill`` fraction of the image iff
    ``|x'| <= fill * tan(fov_x / 2) * (D + z')`` (same for y), so the distance is
    ``D = max(max(|x'| / tx, |y'| / ty) - z', min_depth - z')`` over all points.
    The framing is a viewing choice, not part of the differentiable function: no gradients.
    ``points`` may contain rows flagged invalid by a NaN; those are ignored.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"auto_frame expects points shaped (B, K, 3), got {tuple(points.shape)}")
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    B = points.shape[0]
    pts = points.detach()
    finite = torch.isfinite(pts).all(-1)  # (B, K)
    if not finite.any(-1).all():
        raise ValueError("auto_frame: a batch element has no finite point to frame")
    big = torch.finfo(pts.dtype).max
    lo = torch.where(finite[..., None], pts, big).amin(1)
    hi = torch.where(finite[..., None], pts, -big).amax(1)
    centre = 0.5 * (lo + hi)
    upv = axis_vector(up, pts.dtype)
    if facing is None:
        facing = facing_direction(pts.new_zeros(B, 1, 0, 3), (), upv)
    facing = torch.as_tensor(facing, dtype=pts.dtype).expand(B, 3)
    facing = facing - (facing @ upv)[:, None] * upv  # a level camera: view direction _|_ up
    if (facing.norm(dim=-1) < 1e-6).any():
        raise ValueError("auto_frame: facing must not be parallel to the up axis")
    R = look_at_rotation(-facing, upv)
    rel = torch.where(finite[..., None], pts, centre[:, None]) - centre[:, None]
    off = torch.einsum("bij,bkj->bki", R, rel)
    f = Camera.focal_from_fov(fov_deg, height)
    ty = fill * (height / 2.0) / f
    tx = fill * (width / 2.0) / f
    need = torch.maximum(off[..., 0].abs() / tx, off[..., 1].abs() / ty) - off[..., 2]
    need = torch.maximum(need, min_depth - off[..., 2])
    dist = need.amax(-1).clamp_min(min_depth)  # (B,)
    # camera centre C = c - D * z_axis; t = -R C
    cam_centre = centre - dist[:, None] * R[:, 2]
    t = -torch.einsum("bij,bj->bi", R, cam_centre)
    return Camera.from_fov(R, t, fov_deg, width, height)
