"""Geometric plausibility of posed SMPL joints: self-penetration, ground contact and balance.

All checks take posed joints ``(B, 24, 3)`` (metres, y up) and are batched torch.

Self-penetration
    The body is approximated by capsules around bones (:data:`CAPSULES`: a segment between two
    points, each point an affine combination of joints, and a radius roughly the stand-in mesh's
    half thickness). Two capsules penetrate when the distance ``d`` between their axis segments
    (closed form, :func:`segment_distance`) is below ``overlap * (r1 + r2)``; ``overlap < 1``
    tolerates the soft-tissue contact of e.g. crossed arms or a hand on the hip. Only capsules
    that are at least three bones apart in the kinematic tree are compared (closer ones overlap
    at the joint by construction).

Ground and support
    The ground is the lowest *support point*: every joint ``j`` has a support height
    ``h_j = y_j - o_j`` where ``o_j`` is the distance from the joint centre to the skin it would
    rest on (:data:`SUPPORT_OFFSET`, e.g. 6 cm under the ankle, 10 cm under the pelvis). The
    ground is ``g = min_j h_j`` and joint ``j`` touches it when ``h_j - g < tol``.

Balance
    The centre of mass (segment midpoints weighted by de Leva's segment mass fractions) must
    project, in the ground plane, inside the axis-aligned box of the touching support points
    grown by ``margin`` (a foot extends a few centimetres beyond its joints).
"""

from __future__ import annotations

import torch

from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS

_J = {n: i for i, n in enumerate(SMPL24_JOINTS)}


def _at(name: str) -> dict[int, float]:
    return {_J[name]: 1.0}


def _beyond(end: str, base: str, t: float) -> dict[int, float]:
    """``end + t (end - base)``."""
    return {_J[end]: 1.0 + t, _J[base]: -t}


# (name, point a, point b, radius, joints whose bones it covers)
_CAPSULE_SPECS = [
    ("belly", _at("pelvis"), _at("spine2"), 0.11, ("pelvis", "spine1", "spine2")),
    ("chest", _at("spine2"), _at("neck"), 0.11, ("spine2", "spine3", "neck")),
    ("shoulders", _at("left_shoulder"), _at("right_shoulder"), 0.06,
     ("left_collar", "right_collar", "left_shoulder", "right_shoulder", "spine3")),
    ("head", _at("head"), _beyond("head", "neck", 1.2), 0.095, ("neck", "head")),
]  # fmt: skip
for _s in ("left", "right"):
    _CAPSULE_SPECS += [
        (f"{_s}_upperarm", _at(f"{_s}_shoulder"), _at(f"{_s}_elbow"), 0.045,
         (f"{_s}_shoulder", f"{_s}_elbow")),
        (f"{_s}_forearm", _at(f"{_s}_elbow"), _at(f"{_s}_wrist"), 0.035,
         (f"{_s}_elbow", f"{_s}_wrist")),
        (f"{_s}_hand", _at(f"{_s}_wrist"), _beyond(f"{_s}_hand", f"{_s}_wrist", 0.6), 0.03,
         (f"{_s}_wrist", f"{_s}_hand")),
        (f"{_s}_thigh", _at(f"{_s}_hip"), _at(f"{_s}_knee"), 0.07, (f"{_s}_hip", f"{_s}_knee")),
        (f"{_s}_shin", _at(f"{_s}_knee"), _at(f"{_s}_ankle"), 0.045,
         (f"{_s}_knee", f"{_s}_ankle")),
        (f"{_s}_foot", _at(f"{_s}_ankle"), _beyond(f"{_s}_foot", f"{_s}_ankle", 0.5), 0.035,
         (f"{_s}_ankle", f"{_s}_foot")),
    ]  # fmt: skip

CAPSULE_NAMES: tuple[str, ...] = tuple(s[0] for s in _CAPSULE_SPECS)


def _matrix(points: list[dict[int, float]]) -> torch.Tensor:
    m = torch.zeros(len(points), 24)
    for i, p in enumerate(points):
        for j, w in p.items():
            m[i, j] = w
    return m


_A = _matrix([s[1] for s in _CAPSULE_SPECS])
_B = _matrix([s[2] for s in _CAPSULE_SPECS])
CAPSULE_RADII = torch.tensor([s[3] for s in _CAPSULE_SPECS])


def _tree_distances() -> list[list[int]]:
    n = len(SMPL24_PARENTS)
    adj = [[] for _ in range(n)]
    for c, p in enumerate(SMPL24_PARENTS):
        if p >= 0:
            adj[c].append(p)
            adj[p].append(c)
    dist = []
    for s in range(n):
        d = [-1] * n
        d[s], frontier = 0, [s]
        while frontier:
            nxt = []
            for u in frontier:
                for v in adj[u]:
                    if d[v] < 0:
                        d[v] = d[u] + 1
                        nxt.append(v)
            frontier = nxt
        dist.append(d)
    return dist


def _pairs(min_hops: int = 3) -> torch.Tensor:
    dist = _tree_distances()
    joints = [[_J[n] for n in s[4]] for s in _CAPSULE_SPECS]
    out = []
    for i in range(len(joints)):
        for k in range(i + 1, len(joints)):
            if {_CAPSULE_SPECS[i][0], _CAPSULE_SPECS[k][0]} == {"left_hand", "right_hand"}:
                continue  # hands may touch (clapping, praying); capsules cannot tell palms apart
            if min(dist[a][b] for a in joints[i] for b in joints[k]) >= min_hops:
                out.append((i, k))
    return torch.tensor(out, dtype=torch.long)


CAPSULE_PAIRS = _pairs()
"""(P, 2) indices into :data:`CAPSULE_NAMES` of the capsule pairs that are tested."""


def capsule_segments(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Capsule axis end points ``a, b`` (B, C, 3) from joints (B, 24, 3)."""
    a = torch.einsum("cj,bjk->bck", _A.to(joints), joints)
    b = torch.einsum("cj,bjk->bck", _B.to(joints), joints)
    return a, b


def segment_distance(
    p0: torch.Tensor, p1: torch.Tensor, q0: torch.Tensor, q1: torch.Tensor, eps: float = 1e-9
) -> torch.Tensor:
    """Minimum distance between segments ``[p0, p1]`` and ``[q0, q1]`` (..., 3) -> (...).

    Minimises ``|p0 + s d1 - q0 - t d2|`` over ``s, t in [0, 1]`` (Ericson, Real-Time Collision
    Detection, 5.1.9): ``s`` from the unconstrained optimum clamped, ``t`` from ``s`` clamped,
    then ``s`` recomputed from the clamped ``t``. Degenerate (zero-length) segments are handled.
    """
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a = (d1 * d1).sum(-1)
    e = (d2 * d2).sum(-1)
    f = (d2 * r).sum(-1)
    c = (d1 * r).sum(-1)
    b = (d1 * d2).sum(-1)
    a_ok, e_ok = a > eps, e > eps
    a_safe, e_safe = a.clamp_min(eps), e.clamp_min(eps)
    denom = a * e - b * b
    # general case: s from the unconstrained optimum, t from s, s again from a clamped t
    s = torch.where(denom > eps, ((b * f - c * e) / denom.clamp_min(eps)).clamp(0, 1), 0.0)
    t = (b * s + f) / e_safe
    s_lo, s_hi = (-c / a_safe).clamp(0, 1), ((b - c) / a_safe).clamp(0, 1)
    s = torch.where(t < 0, s_lo, torch.where(t > 1, s_hi, s))
    t = t.clamp(0, 1)
    # degenerate segments: a point against a segment (or a point)
    s = torch.where(e_ok, s, (-c / a_safe).clamp(0, 1))
    t = torch.where(e_ok, t, 0.0)
    t = torch.where(a_ok, t, (f / e_safe).clamp(0, 1))
    s = torch.where(a_ok, s, 0.0)
    t = torch.where(a_ok | e_ok, t, 0.0)
    diff = (p0 + s[..., None] * d1) - (q0 + t[..., None] * d2)
    return diff.norm(dim=-1)


def penetration(joints: torch.Tensor, overlap: float = 0.6) -> torch.Tensor:
    """Per tested capsule pair, how deep it penetrates (B, P) metres; <= 0 means no contact
    beyond the tolerated overlap: ``overlap * (r1 + r2) - d``."""
    a, b = capsule_segments(joints)
    i, k = CAPSULE_PAIRS[:, 0], CAPSULE_PAIRS[:, 1]
    d = segment_distance(a[:, i], b[:, i], a[:, k], b[:, k])
    radii = CAPSULE_RADII.to(joints)
    return overlap * (radii[i] + radii[k]) - d


def self_penetrating(joints: torch.Tensor, overlap: float = 0.6) -> torch.Tensor:
    """Boolean (B,): some non-adjacent capsule pair penetrates (see :func:`penetration`)."""
    return (penetration(joints, overlap) > 0).any(-1)


def penetrating_pairs(joints: torch.Tensor, overlap: float = 0.6) -> list[tuple[str, str]]:
    """Names of the penetrating capsule pairs of ONE pose (24, 3) (for messages and tests)."""
    depth = penetration(joints[None], overlap)[0]
    return [
        (CAPSULE_NAMES[int(i)], CAPSULE_NAMES[int(k)])
        for (i, k), dd in zip(CAPSULE_PAIRS.tolist(), depth.tolist())
        if dd > 0
    ]


# distance from joint centre to the skin the joint would rest on (metres)
SUPPORT_OFFSET = torch.zeros(24)
for _name, _off in {
    "pelvis": 0.12, "left_hip": 0.10, "right_hip": 0.10, "spine1": 0.11, "spine2": 0.11,
    "spine3": 0.11, "neck": 0.06, "head": 0.10, "left_collar": 0.07, "right_collar": 0.07,
    "left_shoulder": 0.06, "right_shoulder": 0.06, "left_elbow": 0.04, "right_elbow": 0.04,
    "left_wrist": 0.03, "right_wrist": 0.03, "left_hand": 0.02, "right_hand": 0.02,
    "left_knee": 0.05, "right_knee": 0.05, "left_ankle": 0.06, "right_ankle": 0.06,
    "left_foot": 0.025, "right_foot": 0.025,
}.items():  # fmt: skip
    SUPPORT_OFFSET[_J[_name]] = _off


def support_heights(joints: torch.Tensor) -> torch.Tensor:
    """Height of every joint's support point above the ground (B, 24), metres, min is 0."""
    h = joints[..., 1] - SUPPORT_OFFSET.to(joints)
    return h - h.amin(-1, keepdim=True)


# de Leva (1996) mass fractions; segments as (proximal joint, distal joint, fraction)
_SEGMENTS = [
    ("pelvis", "spine1", 0.142), ("spine1", "spine3", 0.155), ("spine3", "neck", 0.16),
    ("neck", "head", 0.081),
]  # fmt: skip
for _s in ("left", "right"):
    _SEGMENTS += [
        (f"{_s}_shoulder", f"{_s}_elbow", 0.027), (f"{_s}_elbow", f"{_s}_wrist", 0.016),
        (f"{_s}_wrist", f"{_s}_hand", 0.006), (f"{_s}_hip", f"{_s}_knee", 0.142),
        (f"{_s}_knee", f"{_s}_ankle", 0.043), (f"{_s}_ankle", f"{_s}_foot", 0.014),
    ]  # fmt: skip
_COM_W = torch.zeros(24)
for _a, _b, _m in _SEGMENTS:
    _COM_W[_J[_a]] += _m / 2
    _COM_W[_J[_b]] += _m / 2
_COM_W /= _COM_W.sum()


def centre_of_mass(joints: torch.Tensor) -> torch.Tensor:
    """Approximate centre of mass (B, 3): segment midpoints weighted by mass fraction."""
    return torch.einsum("j,bjk->bk", _COM_W.to(joints), joints)


def balanced(joints: torch.Tensor, tol: float = 0.05, margin: float = 0.08) -> torch.Tensor:
    """Boolean (B,): the centre of mass is over the support region (module docstring)."""
    touching = support_heights(joints) < tol  # (B, 24)
    xz = joints[..., [0, 2]]
    big = torch.finfo(joints.dtype).max
    lo = torch.where(touching[..., None], xz, big).amin(-2) - margin
    hi = torch.where(touching[..., None], xz, -big).amax(-2) + margin
    com = centre_of_mass(joints)[:, [0, 2]]
    return ((com >= lo) & (com <= hi)).all(-1)
