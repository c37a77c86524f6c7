"""Pictures of a posed person from random cameras, for the image->pose dataset.

Camera (OpenCV pinhole, :class:`posrft.render.Camera`): the camera sits in front of the world's
+z side and looks at the body's bounding-box centre from an elevation ``phi ~ U(pitch_deg)``
(positive: from above); its distance is the one that just frames the body (as
:func:`posrft.render.auto_frame` does for a level camera; field of view ``fov_deg``) times
``zoom ~ U(zoom)``, so the person fills 65-90 % of the picture. The yaw of the viewpoint is
carried by the person's global orientation (the prior spreads headings over 360 deg), which
keeps the ground-truth global orientation inferable from the picture: it is expressed in a
world frame whose azimuth is the camera's.

Picture (``style``):

* ``"mesh"`` (default): the stand-in body's skinned mesh (smplx LBS, zero betas), every
  ``vertex_stride``-th vertex drawn as an isotropic Gaussian splat by the DrAction rasteriser
  (EWA splatting, front-to-back compositing), coloured by body part -- the joint with the
  largest skinning weight -- with the left side warm and the right side cool, so left and
  right, front and back can be told apart;
* ``"mesh_shaded"``: the same with the back of every part (the vertices behind the part's
  centre in the rest pose, which faces +z) at :data:`BACK_SHADE` of its colour, a local
  front/back cue as a face, a chest and toes give in a real picture. In ``"mesh"`` front and
  back differ only in *where* the warm and cool colours fall. Measured on the pretrained
  image->pose SFT it did not make the heading learnable within 200 steps
  (docs/pretrained.md, "What the image->pose SFT learns");
* ``"skeleton"``: DrAction's default bone rendering of the 24 joints (rainbow bones).

Both renderers are frozen and deterministic; cost on one CPU core at 56x56 is about 25 ms
(mesh) and 4 ms (skeleton) per picture.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from posrft.body.formats import SMPL24_JOINTS, custom_format
from posrft.render import Camera, DrAction
from posrft.render.camera import look_at_rotation

# part colours (upper, middle, lower segment) per limb; left warm, right cool
_PART_RGB = {
    "pelvis": (0.55, 0.55, 0.62), "spine1": (0.55, 0.55, 0.62), "spine2": (0.6, 0.6, 0.68),
    "spine3": (0.6, 0.6, 0.68), "neck": (0.95, 0.82, 0.68), "head": (0.95, 0.82, 0.68),
    "left_collar": (0.6, 0.6, 0.68), "right_collar": (0.6, 0.6, 0.68),
    "left_shoulder": (0.9, 0.2, 0.2), "left_elbow": (1.0, 0.5, 0.4),
    "left_wrist": (1.0, 0.75, 0.6), "left_hand": (1.0, 0.75, 0.6),
    "right_shoulder": (0.2, 0.7, 0.25), "right_elbow": (0.45, 0.85, 0.35),
    "right_wrist": (0.7, 0.95, 0.6), "right_hand": (0.7, 0.95, 0.6),
    "left_hip": (0.95, 0.55, 0.1), "left_knee": (1.0, 0.78, 0.2),
    "left_ankle": (1.0, 0.92, 0.5), "left_foot": (1.0, 0.92, 0.5),
    "right_hip": (0.15, 0.35, 0.9), "right_knee": (0.3, 0.6, 1.0),
    "right_ankle": (0.6, 0.8, 1.0), "right_foot": (0.6, 0.8, 1.0),
}  # fmt: skip


def sample_cameras(
    points: torch.Tensor,
    gen: torch.Generator,
    *,
    image_size: int,
    fov_deg: float = 35.0,
    pitch_deg: tuple[float, float] = (-10.0, 30.0),
    zoom: tuple[float, float] = (1.0, 1.35),
    fill: float = 0.9,
) -> Camera:
    """One random camera per body, framing ``points (B, K, 3)`` (module docstring).

    With ``R`` the look-at rotation along ``-facing``, ``facing = (0, sin phi, cos phi)``, and
    ``(x', y', z') = R (X - c)`` the offsets from the bounding-box centre ``c``, a point is
    inside the central ``fill`` of the picture iff ``|x'|, |y'| <= fill tan(fov/2) (D + z')``;
    ``D`` is the smallest such distance over all points, times ``zoom``.
    """
    b = points.shape[0]
    dtype = points.dtype
    phi = torch.deg2rad(pitch_deg[0] + (pitch_deg[1] - pitch_deg[0]) * torch.rand(b, generator=gen))
    z = zoom[0] + (zoom[1] - zoom[0]) * torch.rand(b, generator=gen)
    facing = torch.stack([torch.zeros(b), torch.sin(phi), torch.cos(phi)], -1).to(dtype)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=dtype)
    R = look_at_rotation(-facing, up)
    centre = 0.5 * (points.amin(1) + points.amax(1))
    off = torch.einsum("bij,bkj->bki", R, points - centre[:, None])
    half = fill * math.tan(math.radians(fov_deg) / 2.0)
    need = (off[..., :2].abs().amax(-1) / half - off[..., 2]).amax(-1)  # (B,)
    dist = z.to(dtype) * need.clamp_min(0.2)
    cam_pos = centre + dist[:, None] * facing
    t = -torch.einsum("bij,bj->bi", R, cam_pos)
    return Camera.from_fov(R, t, fov_deg, image_size, image_size)


@lru_cache(maxsize=2)
def _mesh_model():
    from posrft.body.model import BodyModel

    return BodyModel("smpl")


#: The view sentence of each heading bin (:func:`view_phrases`), in picture terms.
VIEW_PHRASES = {
    "front": "The person faces the camera.",
    "right": "The person faces the right of the picture.",
    "back": "The person faces away from the camera.",
    "left": "The person faces the left of the picture.",
}


def facing_yaw_deg(joints: torch.Tensor) -> torch.Tensor:
    """Heading (N,) in degrees of bodies with joints ``(N, 24, 3)`` (SMPL-24 order, y up):
    the angle of ``f = (J_left_hip - J_right_hip) x up`` about the vertical, measured from +z
    (towards the camera, 0) to +x (the picture's right, +90). The rest pose faces +z: 0."""
    lat = joints[:, 1] - joints[:, 2]
    # f = lat x (0, 1, 0) = (-lat_z, 0, lat_x)
    return torch.rad2deg(torch.atan2(-lat[:, 2], lat[:, 0]))


def view_phrases(joints: torch.Tensor) -> list[str]:
    """One :data:`VIEW_PHRASES` sentence per body: the 90-degree bin its heading falls in
    (front: |yaw| < 45, right: 45 <= yaw < 135, left: -135 <= yaw < -45, back: the rest)."""
    out = []
    for y in facing_yaw_deg(joints).tolist():
        key = "front" if abs(y) < 45 else "right" if 45 <= y < 135 else "left" if -135 <= y < -45 else "back"
        out.append(VIEW_PHRASES[key])
    return out


#: Colour factor of the back of each body part in the ``"mesh_shaded"`` style.
BACK_SHADE = 0.5


def mesh_colours(vertex_stride: int = 3, back_shade: float | None = BACK_SHADE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep (V',), rgb (V', 3))``: the drawn vertices and their colours (module docstring);
    ``back_shade=None`` leaves the back of each part unshaded (``"mesh"``)."""
    bm = _mesh_model()
    weights = bm.smpl.lbs_weights.detach()  # (V, 24)
    keep = torch.arange(0, weights.shape[0], vertex_stride)
    part = weights[keep].argmax(-1)
    rgb = torch.tensor([_PART_RGB[n] for n in SMPL24_JOINTS])[part]
    if back_shade is not None:
        z = bm.smpl.v_template.detach()[keep, 2]
        n = len(SMPL24_JOINTS)
        centre = torch.zeros(n, dtype=z.dtype).scatter_add_(0, part, z) / torch.bincount(part, minlength=n).clamp_min(1)
        rgb = torch.where((z < centre[part])[:, None], back_shade * rgb, rgb)
    return keep, rgb


@lru_cache(maxsize=8)
def _mesh_renderer(image_size: int, vertex_stride: int, back_shade: float | None) -> tuple[DrAction, torch.Tensor]:
    keep, rgb = mesh_colours(vertex_stride, back_shade)
    fmt = custom_format([], num_joints=len(keep), name="standin_mesh")
    r = DrAction(fmt, image_size=image_size, num_frames=1, learnable=False, nfm=False,
                 scales=(0.075, 0.7, 0.1), seed=0).eval()  # fmt: skip
    with torch.no_grad():
        logit = torch.log(rgb.clamp(1e-4, 1 - 1e-4)) - torch.log1p(-rgb.clamp(1e-4, 1 - 1e-4))
        r.appearance.prior_logit[:, :3] = logit
        r.appearance.prior_logit[:, 3] = math.log(0.95 / 0.05)
        r.appearance.depth_mix.fill_(-2.0)  # a little depth shading on top of the part colours
        for p in r.appearance.mlp.parameters():
            p.zero_()
    return r, keep


@lru_cache(maxsize=8)
def _skeleton_renderer(image_size: int) -> DrAction:
    return DrAction("smpl24", image_size=image_size, num_frames=1, learnable=False, nfm=False,
                    seed=0).eval()  # fmt: skip


def mesh_vertices(pose: torch.Tensor, vertex_stride: int = 3) -> torch.Tensor:
    """Posed stand-in vertices (B, V', 3) of axis-angle poses (B, 72), pelvis at rest."""
    bm = _mesh_model()
    out = bm(pose[:, :3], pose[:, 3:], return_verts=True)
    return out.vertices[:, ::vertex_stride]


@torch.no_grad()
def render_people(
    pose: np.ndarray | torch.Tensor,
    joints: np.ndarray | torch.Tensor,
    seed: int,
    *,
    image_size: int = 56,
    style: str = "mesh",
    vertex_stride: int = 3,
    batch: int = 64,
) -> tuple[list, Camera]:
    """Pictures (list of ``B`` PIL images) and cameras of posed bodies.

    ``pose`` (B, 72) axis-angle and ``joints`` (B, 24, 3) (its FK); the cameras are drawn from
    ``torch.Generator().manual_seed(seed)``, one per body, in order.
    """
    from posrft.render import to_pil

    if style not in ("mesh", "mesh_shaded", "skeleton"):
        raise ValueError(f"style must be 'mesh', 'mesh_shaded' or 'skeleton', got {style!r}")
    pose = torch.as_tensor(np.asarray(pose), dtype=torch.float32)
    joints = torch.as_tensor(np.asarray(joints), dtype=torch.float32)
    if pose.ndim != 2 or pose.shape[1] != 72 or joints.shape != (len(pose), 24, 3):
        raise ValueError(
            f"render_people: pose {tuple(pose.shape)} / joints {tuple(joints.shape)}: expected "
            "(B, 72) and (B, 24, 3)"
        )
    gen = torch.Generator().manual_seed(int(seed))
    images, cams = [], []
    for s in range(0, len(pose), batch):
        p, j = pose[s : s + batch], joints[s : s + batch]
        if style != "skeleton":
            r, keep = _mesh_renderer(image_size, vertex_stride, BACK_SHADE if style == "mesh_shaded" else None)
            verts = mesh_vertices(p, 1)[:, keep]
            cam = sample_cameras(torch.cat([verts, j], 1), gen, image_size=image_size)
            img = r(verts[:, None], camera=cam)[:, 0]
        else:
            cam = sample_cameras(j, gen, image_size=image_size)
            img = _skeleton_renderer(image_size)(j[:, None], camera=cam)[:, 0]
        images += to_pil(img)
        cams.append(cam)
    c0 = cams[0]
    camera = Camera(torch.cat([c.R for c in cams]), torch.cat([c.t for c in cams]),
                    c0.fx, c0.fy, c0.cx, c0.cy, image_size, image_size)  # fmt: skip
    return images, camera
