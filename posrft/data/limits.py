"""Anatomical joint limits for SMPL body joints, on anatomical joint coordinates.

Every SMPL joint rotation ``R`` is expressed in its parent's frame, whose axes at rest are the
world axes (x = the body's left, y = up, z = forward; rest pose = T-pose). Each joint gets three
*anatomical coordinates* ``c = (c_x, c_y, c_z)`` (radians), one per coordinate axis, from one of
two decompositions (:data:`DECOMPOSITION`):

* **Euler, twist innermost** (legs, spine, neck, head; intrinsic ``XZY``, toes ``XYZ``):
  ``R = R_x(c_x) R_z(c_z) R_y(c_y)``: flexion/extension about x first, then ab/adduction (or
  lateral bending) about the flexed segment's z, then the axial rotation about the bone itself.
  This is the clinical (ISB-like) convention: e.g. "hip abduction" of a flexed hip opens the
  knees sideways and "external rotation" turns about the thigh.
* **Swing-twist** about the bone axis ``a = x`` (collars, shoulders, elbows, wrists, hands):
  ``R = exp([s]_x) exp(tau [a]_x)`` with the swing ``s`` perpendicular to ``a``; ``c = s + tau a``.
  The shoulder has no privileged first axis (raising the arm forward or sideways are equally
  natural), which Euler angles would break (gimbal lock at 90 deg).

For a rotation about a single coordinate axis both equal the axis-angle vector, which is how
the key poses are written.

Limits are boxes on the coordinates (:data:`LIMITS_DEG`, left side and midline; the right side
is the mirror image). Hinge-like joints only bend one way:

* knee: flexion = +x (the shank swings backward), hyperextension at most 5 deg, +-8 deg varus;
* elbow: flexion = -y on the left / +y on the right (the forearm swings forward from the
  T-pose), hyperextension at most 5 deg.

A mirror ``x -> -x`` maps the coordinates ``(x, y, z)`` to ``(x, -y, -z)`` in both
decompositions, so a right joint's range on y and z is the negated, swapped range of its left
twin.

Shapes: poses are axis-angle ``(..., 72)`` or ``(..., 24, 3)``; all functions are batched,
differentiable in torch, and return radians unless named ``*_deg``.
"""

from __future__ import annotations

import math

import numpy as np
import roma
import torch

from posrft.body.formats import SMPL24_JOINTS

NUM_JOINTS = 24
_IDX = {n: i for i, n in enumerate(SMPL24_JOINTS)}

# decomposition ("XZY", "XYZ": intrinsic Euler; "swing": swing-twist about x) and
# ((x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi)) in degrees, for the left side and the midline.
# Sources: standard clinical ranges of motion (AAOS), split over
# the three spine joints, and loosened a little where SMPL's joints absorb soft-tissue motion.
# Signs: hip/spine/neck x < 0 bends the child forward for the hip (flexion) but x > 0 bends the
# spine and neck forward; knee x > 0 is flexion; ankle x > 0 is plantar flexion; left hip z > 0
# is abduction and y > 0 external rotation; left shoulder z > 0 raises the arm, y < 0 brings it
# forward; left wrist z < 0 is palmar flexion (palms down at rest).
LIMITS_DEG: dict[str, tuple[str, tuple[tuple[float, float], ...]]] = {
    "pelvis": ("XZY", ((-180, 180), (-180, 180), (-180, 180))),  # global orientation: free
    "left_hip": ("XZY", ((-125, 30), (-40, 60), (-30, 70))),
    "spine1": ("XZY", ((-20, 40), (-25, 25), (-20, 20))),
    "left_knee": ("XZY", ((-5, 150), (-30, 30), (-8, 8))),
    "spine2": ("XZY", ((-15, 30), (-20, 20), (-15, 15))),
    "left_ankle": ("XZY", ((-30, 55), (-20, 20), (-25, 25))),
    "spine3": ("XZY", ((-15, 30), (-20, 20), (-15, 15))),
    "left_foot": ("XYZ", ((-60, 30), (-10, 10), (-10, 10))),
    "neck": ("XZY", ((-35, 45), (-40, 40), (-30, 30))),
    "left_collar": ("swing", ((-15, 15), (-25, 20), (-15, 35))),
    "head": ("XZY", ((-35, 40), (-45, 45), (-30, 30))),
    "left_shoulder": ("swing", ((-90, 90), (-135, 45), (-100, 100))),
    "left_elbow": ("swing", ((-90, 90), (-150, 5), (-10, 10))),
    "left_wrist": ("swing", ((-60, 60), (-30, 30), (-75, 75))),
    "left_hand": ("swing", ((-20, 20), (-20, 20), (-20, 20))),
}


def mirror_name(name: str) -> str:
    """``left_x <-> right_x``; midline names are returned unchanged."""
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def _build_tables() -> tuple[tuple[str, ...], np.ndarray]:
    kinds = [""] * NUM_JOINTS
    box = np.zeros((NUM_JOINTS, 3, 2))
    for name, (kind, ranges) in LIMITS_DEG.items():
        r = np.asarray(ranges, dtype=np.float64)
        kinds[_IDX[name]] = kind
        box[_IDX[name]] = r
        if name.startswith("left_"):
            m = r.copy()
            m[1:] = -r[1:, ::-1]  # (x, y, z) -> (x, -y, -z): y and z ranges negate and swap
            kinds[_IDX[mirror_name(name)]] = kind
            box[_IDX[mirror_name(name)]] = m
    return tuple(kinds), box


DECOMPOSITION, LIMITS_BOX_DEG = _build_tables()
"""``DECOMPOSITION``: per joint ``"XZY"``/``"XYZ"`` (intrinsic Euler) or ``"swing"`` (swing-twist
about x); ``LIMITS_BOX_DEG``: (24, 3, 2) lower/upper bounds in degrees."""

_GROUPS = {k: torch.tensor([j for j, d in enumerate(DECOMPOSITION) if d == k])
           for k in sorted(set(DECOMPOSITION))}  # fmt: skip
_SWING_AXIS = torch.tensor([1.0, 0.0, 0.0])

MIRROR_PERM = np.array([_IDX[mirror_name(n)] for n in SMPL24_JOINTS])
"""Joint permutation of a left-right mirror (``joints[..., MIRROR_PERM, :]``)."""


def _as_joints_aa(pose: torch.Tensor | np.ndarray, what: str = "pose") -> torch.Tensor:
    pose = torch.as_tensor(pose)
    if not pose.is_floating_point():
        pose = pose.float()
    if pose.shape[-1] == 72:
        pose = pose.reshape(*pose.shape[:-1], NUM_JOINTS, 3)
    if pose.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(
            f"{what} shaped {tuple(pose.shape)}: expected axis-angle (..., 72) or (..., 24, 3)"
        )
    return pose


def swing_twist(rotmat: torch.Tensor, axis: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Swing-twist coordinates of rotations ``rotmat`` (..., 3, 3) about unit ``axis`` (3,).

    With q = (v, w) the unit quaternion of R (w >= 0), the twist angle is
    tau = 2 atan2(v . a, w), the swing is q_s = q * conj(q_twist) and the result is
    ``rotvec(q_s) + tau * a`` (..., 3). Inverse: :func:`from_swing_twist`.
    """
    axis = torch.as_tensor(axis, dtype=rotmat.dtype, device=rotmat.device)
    q = roma.rotmat_to_unitquat(rotmat)  # xyzw
    q = torch.where(q[..., 3:] < 0, -q, q)
    v, w = q[..., :3], q[..., 3]
    tau = 2.0 * torch.atan2((v * axis).sum(-1), w)
    half = tau / 2
    q_twist = torch.cat([torch.sin(half)[..., None] * axis, torch.cos(half)[..., None]], -1)
    swing = roma.unitquat_to_rotvec(roma.quat_product(q, roma.quat_conjugation(q_twist)))
    # the swing vector is perpendicular to the axis up to rounding; remove the residue
    swing = swing - (swing * axis).sum(-1, keepdim=True) * axis
    return swing + tau[..., None] * axis


def from_swing_twist(coords: torch.Tensor, axis: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from swing-twist coordinates (..., 3) about ``axis`` (3,):
    ``R = exp([s]_x) @ exp(tau [a]_x)`` with ``tau = c . a`` and ``s = c - tau a``."""
    axis = torch.as_tensor(axis, dtype=coords.dtype, device=coords.device)
    tau = (coords * axis).sum(-1, keepdim=True)
    return roma.rotvec_to_rotmat(coords - tau * axis) @ roma.rotvec_to_rotmat(tau * axis)


def _order(kind: str) -> list[int]:
    """Positions of the x, y, z angles in an Euler angle triple of convention ``kind``."""
    return [kind.index(a) for a in "XYZ"]


def coords_from_rotmat(rotmat: torch.Tensor) -> torch.Tensor:
    """Anatomical coordinates (..., 24, 3) of per-joint rotation matrices (..., 24, 3, 3)."""
    out = rotmat.new_zeros(rotmat.shape[:-1])
    for kind, idx in _GROUPS.items():
        r = rotmat[..., idx, :, :]
        if kind == "swing":
            c = swing_twist(r, _SWING_AXIS)
        else:
            c = roma.rotmat_to_euler(kind, r)[..., _order(kind)]
        out[..., idx, :] = c
    return out


def rotmat_from_coords(coords: torch.Tensor) -> torch.Tensor:
    """Per-joint rotation matrices (..., 24, 3, 3) from anatomical coordinates (..., 24, 3)."""
    out = coords.new_zeros(*coords.shape, 3)
    for kind, idx in _GROUPS.items():
        c = coords[..., idx, :]
        if kind == "swing":
            r = from_swing_twist(c, _SWING_AXIS)
        else:
            r = roma.euler_to_rotmat(kind, c[..., ["XYZ".index(a) for a in kind]])
        out[..., idx, :, :] = r
    return out


def anatomical_coords(pose: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Per-joint anatomical coordinates (..., 24, 3) in radians of axis-angle ``pose``."""
    return coords_from_rotmat(roma.rotvec_to_rotmat(_as_joints_aa(pose)))


def pose_from_coords(coords: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 24, 3) from anatomical coordinates (..., 24, 3) in radians."""
    return roma.rotmat_to_rotvec(rotmat_from_coords(coords))


def limits_rad(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(24, 3, 2)`` lower/upper bounds in radians."""
    return torch.as_tensor(np.deg2rad(LIMITS_BOX_DEG), dtype=dtype, device=device)


def limit_violation(pose: torch.Tensor | np.ndarray) -> torch.Tensor:
    """How far each coordinate lies outside its box, radians (..., 24, 3); 0 inside.

    ``max(lo - c, 0) + max(c - hi, 0)``: differentiable almost everywhere, so usable as a
    penalty (plausibility reward). The root (pelvis, global orientation) is never penalised.
    """
    c = anatomical_coords(pose)
    box = limits_rad(c.dtype, c.device)
    return torch.relu(box[..., 0] - c) + torch.relu(c - box[..., 1])


def within_limits(pose: torch.Tensor | np.ndarray, tol_deg: float = 0.5) -> torch.Tensor:
    """Boolean (...,): every joint's coordinates inside its box (with ``tol_deg`` slack)."""
    return (limit_violation(pose) <= math.radians(tol_deg)).flatten(-2).all(-1)


def describe_violations(pose: torch.Tensor | np.ndarray, tol_deg: float = 0.5) -> list[str]:
    """Human-readable list of violated limits for ONE pose, e.g. for error messages."""
    aa = _as_joints_aa(pose)
    if aa.dim() != 2:
        raise ValueError(f"describe_violations expects one pose (24, 3), got {tuple(aa.shape)}")
    c = torch.rad2deg(anatomical_coords(aa)).detach().cpu().numpy()
    out = []
    for j, name in enumerate(SMPL24_JOINTS):
        for k, axis_name in enumerate("xyz"):
            lo, hi = LIMITS_BOX_DEG[j, k]
            if c[j, k] < lo - tol_deg or c[j, k] > hi + tol_deg:
                out.append(f"{name}.{axis_name} = {c[j, k]:.1f} deg outside [{lo:g}, {hi:g}]")
    return out


def clamp_coords(coords: torch.Tensor) -> torch.Tensor:
    """Project anatomical coordinates (..., 24, 3) into the limit boxes."""
    box = limits_rad(coords.dtype, coords.device)
    return torch.maximum(torch.minimum(coords, box[..., 1]), box[..., 0])


def reflect_coords(coords: torch.Tensor) -> torch.Tensor:
    """Fold coordinates (..., 24, 3) back into the limit boxes by reflection at the bounds
    (``lo - d -> lo + d``), then clamp; unlike clamping it leaves no mass exactly on a bound
    (e.g. perturbed straight knees end up slightly bent, not all at the hyperextension limit)."""
    box = limits_rad(coords.dtype, coords.device)
    lo, hi = box[..., 0], box[..., 1]
    c = torch.where(coords < lo, 2 * lo - coords, coords)
    c = torch.where(c > hi, 2 * hi - c, c)
    return torch.maximum(torch.minimum(c, hi), lo)


def mirror_pose(pose: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Left-right mirror image of axis-angle poses (..., 24, 3): swap sides, (x,y,z)->(x,-y,-z)."""
    aa = _as_joints_aa(pose)
    sign = torch.tensor([1.0, -1.0, -1.0], dtype=aa.dtype, device=aa.device)
    return aa[..., torch.as_tensor(MIRROR_PERM), :] * sign
