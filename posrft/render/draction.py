"""DrAction: a differentiable, format-agnostic renderer from skeleton clips to RGB frames.

    images = DrAction("ntu25")(joints)        # joints (B, T, J, 3) or (B, P, T, J, 3), metres
    images.shape == (B, 12, 3, 224, 224)     # values in [0, 1]

Pipeline per clip: check input (:mod:`~posrft.render.sampling`) -> camera (given, or
:func:`~posrft.render.camera.auto_frame` over the whole clip and all present people, a front
view) -> sample ``T'`` frames (random per segment in ``train()``, segment middles in
``eval()``) -> skin the Gaussian primitives (:mod:`~posrft.render.primitives`) -> EWA
projection (:mod:`~posrft.render.ewa`) -> appearance (:mod:`~posrft.render.appearance`) ->
alpha compositing (:mod:`~posrft.render.raster`, ``rasterizer="fast"`` or ``"dense"``).

Gradients flow to the joints and to every parameter.  The rendered images are a (piecewise)
smooth function of the joints for a given camera; auto-framing picks the camera from the clip
without gradient (a viewing choice), so pass ``camera=`` when the exact function matters.
``learnable=False`` freezes all parameters (the "fixed renderer" baseline);
``requires_grad_`` toggles it later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from posrft.body.formats import SkeletonFormat, custom_format, get_format
from posrft.render.appearance import Appearance
from posrft.render.camera import Camera, auto_frame, axis_vector, facing_direction
from posrft.render.ewa import RasterRules, project_gaussians
from posrft.render.primitives import build_layout, mean_bone_length, samples_per_bone_counts, skin
from posrft.render.raster import rasterize
from posrft.render.sampling import (
    as_clip_tensor,
    check_finite,
    check_lengths,
    default_person_mask,
    frame_valid,
    gather_frames,
    segment_indices,
)


@dataclass(frozen=True)
class RenderResult:
    """What :meth:`DrAction.render` returns.

    Attributes:
        images: ``(B, T', 3, H, W)`` in [0, 1].
        camera: the ``B`` cameras used (project joints with ``camera.project``).
        frame_index: ``(B, T')`` source frame of every rendered frame.
        person_mask: ``(B, P)`` which people were drawn.
    """

    images: torch.Tensor
    camera: Camera
    frame_index: torch.Tensor
    person_mask: torch.Tensor


def resolve_format(fmt, num_joints: int | None = None) -> SkeletonFormat:
    """A registry name, a :class:`SkeletonFormat`, or an explicit bone list ``[(a, b), ...]``."""
    if isinstance(fmt, (str, SkeletonFormat)):
        return get_format(fmt)
    try:
        bones = [tuple(b) for b in fmt]
    except TypeError:
        raise ValueError(
            f"fmt must be a format name, a SkeletonFormat or a bone list, got {fmt!r}"
        ) from None
    for k, b in enumerate(bones):
        if len(b) != 2:
            raise ValueError(f"bone {k} = {b!r} is not a (joint_a, joint_b) pair")
        if min(b) < 0:
            raise ValueError(f"bone {k} = {b!r} has a negative joint index")
    return custom_format(bones, num_joints=num_joints)


class DrAction(nn.Module):
    """Differentiable Gaussian-splatting renderer for one skeleton format.

    Args:
        fmt: format name (``"ntu25"``), :class:`SkeletonFormat`, or a bone list.
        num_joints: joint count for a bone list (default ``1 + max index``).
        image_size: ``H = W`` or ``(H, W)``.
        num_frames: ``T'`` rendered frames per clip.
        samples_per_bone: samples per bone, or ``"length"`` (``density`` per metre of the bone
            in ``reference_joints (J, 3)``).
        fov_deg, up, fill: auto-framing (vertical field of view, world up axis, image fraction).
        background: RGB in [0, 1].
        nfm: use the neural feature modulator.
        max_people: people per frame (2).
        learnable: ``False`` freezes every parameter.
        rasterizer: ``"fast"`` (windowed) or ``"dense"`` (reference).
        scales: initial ``(s_joint, s_along, s_across)`` (see :mod:`~posrft.render.primitives`);
            learnable through their logarithms.
        seed: seed of the parameter initialisation (``None``: the global RNG).
    """

    def __init__(
        self,
        fmt: str | SkeletonFormat | Sequence[tuple[int, int]] = "ntu25",
        *,
        num_joints: int | None = None,
        image_size: int | tuple[int, int] = 224,
        num_frames: int = 12,
        samples_per_bone: int | str = 10,
        density: float = 40.0,
        reference_joints: torch.Tensor | np.ndarray | None = None,
        fov_deg: float = 35.0,
        up: str | tuple[float, float, float] = "y",
        fill: float = 0.85,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        feature_dim: int = 16,
        hidden_dim: int = 32,
        nfm: bool = True,
        nfm_hidden: int = 16,
        max_people: int = 2,
        learnable: bool = True,
        rasterizer: str = "fast",
        rules: RasterRules = RasterRules(),
        scales: tuple[float, float, float] = (0.15, 0.7, 0.1),
        seed: int | None = 0,
    ):
        super().__init__()
        self.fmt = resolve_format(fmt, num_joints)
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if h < 1 or w < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if rasterizer not in ("fast", "dense"):
            raise ValueError(f"rasterizer must be 'fast' or 'dense', got {rasterizer!r}")
        if not (len(background) == 3 and all(0.0 <= c <= 1.0 for c in background)):
            raise ValueError(f"background must be 3 values in [0, 1], got {background}")
        self.height, self.width, self.num_frames = int(h), int(w), int(num_frames)
        self.fov_deg, self.fill, self.rules, self.rasterizer = fov_deg, fill, rules, rasterizer
        self.up = tuple(axis_vector(up, torch.float64).tolist())  # world up, unit 3-vector
        counts = samples_per_bone_counts(self.fmt, samples_per_bone, density, reference_joints)
        self.layout = build_layout(self.fmt, counts)
        self.max_people = max_people
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32))
        self.log_scales = nn.Parameter(torch.log(torch.tensor(scales, dtype=torch.float32)))
        with torch.random.fork_rng(devices=[]):  # reproducible init without touching global RNG
            if seed is not None:
                torch.manual_seed(seed)
            self.appearance = Appearance(
                self.layout, feature_dim=feature_dim, hidden_dim=hidden_dim,
                max_people=max_people, nfm=nfm, nfm_hidden=nfm_hidden,
            )  # fmt: skip
        if not learnable:
            self.requires_grad_(False)

    @property
    def num_primitives(self) -> int:
        return self.layout.num_primitives

    def frame_camera(self, joints: torch.Tensor, used: torch.Tensor) -> Camera:
        """Auto-framed cameras ``(B,)`` for clips ``(B, P, T, J, 3)``; ``used (B, P, T)`` marks
        the frames and people to keep in view (and to take the facing direction from)."""
        B, P, T, J, _ = joints.shape
        used = used.reshape(B, P * T)
        pts = joints.detach().reshape(B, P * T, J, 3)
        facing = facing_direction(pts, self.fmt.flip_pairs, axis_vector(self.up, pts.dtype), used)
        flat = torch.where(used[:, :, None, None], pts, torch.full_like(pts, float("nan")))
        return auto_frame(
            flat.reshape(B, P * T * J, 3), width=self.width, height=self.height,
            fov_deg=self.fov_deg, up=self.up, facing=facing, fill=self.fill,
        )  # fmt: skip

    def render(
        self,
        joints: torch.Tensor | np.ndarray,
        *,
        camera: Camera | None = None,
        lengths: torch.Tensor | Sequence[int] | None = None,
        person_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        frame_index: torch.Tensor | None = None,
    ) -> RenderResult:
        """Render clips (see the module docstring).

        Args:
            joints: ``(B, T, J, 3)`` or ``(B, P, T, J, 3)`` (``P <= max_people``), metres.
            camera: ``B`` cameras at this renderer's image size (default: auto-framed).
            lengths: ``(B,)`` valid frames per clip (default: all ``T``).
            person_mask: ``(B, P)`` bool presence (default: person 0, and any other person
                whose joints are not all zero).
            generator: randomness of the training-time frame sampling.
            frame_index: ``(B, T')`` source frames, overriding the sampling.
        """
        dtype = self.log_scales.dtype
        x = as_clip_tensor(joints, self.fmt, self.max_people, dtype)
        B, P, T, J, _ = x.shape
        lengths = check_lengths(lengths, B, T, x.device)
        valid = frame_valid(lengths, T)
        present = default_person_mask(x, valid, person_mask)
        check_finite(x, valid, present)
        used = valid[:, None, :] & present[:, :, None]  # (B, P, T)
        x = torch.where(used[..., None, None], x, torch.zeros_like(x))  # padding/absent -> 0
        if camera is None:
            camera = self.frame_camera(x, used)
        elif camera.batch_size != B or (camera.height, camera.width) != (self.height, self.width):
            raise ValueError(
                f"camera is for batch {camera.batch_size} at {camera.width}x{camera.height}; "
                f"expected batch {B} at {self.width}x{self.height}"
            )
        if frame_index is None:
            frame_index = segment_indices(
                lengths, self.num_frames, random=self.training, generator=generator
            )
        elif (
            frame_index.shape != (B, self.num_frames)
            or (frame_index < 0).any()
            or (frame_index >= lengths[:, None]).any()
        ):
            raise ValueError(
                f"frame_index must be ({B}, {self.num_frames}) indices in [0, length) of each clip"
            )
        frame_index = frame_index.to(x.device)
        pose, vel = gather_frames(x, frame_index, lengths)  # (B, P, T', J, 3)
        Tp = self.num_frames
        s_joint, s_along, s_across = torch.exp(self.log_scales).unbind()
        means, covs = skin(pose, self.layout, s_joint, s_along, s_across)  # (B, P, T', N, ...)
        N = means.shape[3]

        def frames_first(t: torch.Tensor) -> torch.Tensor:  # (B, P, T', N, ...) -> (B*T', P*N, ...)
            t = t.transpose(1, 2)
            return t.reshape(B * Tp, P * N, *t.shape[4:])

        cams = camera.repeat_interleave(Tp)
        means2d, cov2d, depth = project_gaussians(
            frames_first(means), frames_first(covs), cams, self.rules
        )
        depth_b = depth.reshape(B, Tp, P, N).transpose(1, 2)  # (B, P, T', N)
        depth01 = self._normalised_depth(depth_b, present)
        pos, vel_c = self._motion_features(means, vel, camera, pose, x, used)
        colors, opacity = self.appearance(depth01, pos, vel_c)
        opacity = opacity * present[:, :, None, None].to(dtype)
        images = rasterize(
            means2d, cov2d, depth, frames_first(colors), frames_first(opacity), self.height,
            self.width, self.background.to(dtype), self.rules, self.rasterizer,
        )  # fmt: skip
        images = images.reshape(B, Tp, 3, self.height, self.width)
        return RenderResult(images, camera, frame_index, present)

    def forward(self, joints, **kwargs) -> torch.Tensor:
        """``(B, T', 3, H, W)`` images; keyword arguments as in :meth:`render`."""
        return self.render(joints, **kwargs).images

    @staticmethod
    def _normalised_depth(depth: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(z - z_min) / (z_max - z_min)`` per frame over the present people's primitives."""
        live = present[:, :, None, None].expand_as(depth)
        big = torch.finfo(depth.dtype).max
        lo = torch.where(live, depth, big).amin(dim=(1, 3), keepdim=True)
        hi = torch.where(live, depth, -big).amax(dim=(1, 3), keepdim=True)
        return ((depth - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)

    def _motion_features(self, means, vel, camera, pose, clip, used):
        """Camera-frame primitive positions about the clip centre (mean of the used joints) and
        velocities, in units of the sampled frames' mean bone length of person 0."""
        w = used[..., None, None].to(clip.dtype)  # (B, P, T, 1, 1)
        centre = (clip * w).sum((1, 2, 3)) / (w.sum((1, 2, 3)) * clip.shape[3])  # (B, 3)
        scale = mean_bone_length(pose[:, 0], self.fmt.bones).mean(1).clamp_min(1e-3)  # (B,)
        R = camera.R.to(means.dtype)
        t = self.layout.t.to(vel.dtype)[:, None]
        vel_p = vel[..., self.layout.joint_a, :] * (1 - t) + vel[..., self.layout.joint_b, :] * t
        s = scale[:, None, None, None, None]
        pos = torch.einsum("bij,bptnj->bptni", R, means - centre[:, None, None, None]) / s
        return pos, torch.einsum("bij,bptnj->bptni", R, vel_p) / s


def render_skeleton(
    joints: torch.Tensor | np.ndarray,
    fmt: str | SkeletonFormat | Sequence[tuple[int, int]] = "ntu25",
    *,
    image_size: int | tuple[int, int] = 224,
    num_frames: int = 12,
    camera: Camera | None = None,
    lengths: Sequence[int] | None = None,
    person_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-shot ``(B, T', 3, H, W)`` rendering with a frozen, untrained renderer in eval mode."""
    renderer = DrAction(fmt, image_size=image_size, num_frames=num_frames, learnable=False).eval()
    with torch.no_grad():
        return renderer(joints, camera=camera, lengths=lengths, person_mask=person_mask)
