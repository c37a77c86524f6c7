"""A pose prior without downloads: randomised key poses that stay anatomical and grounded.

Sampling one candidate (all steps batched in torch, driven by one ``torch.Generator``):

1. pick a key pose (:mod:`posrft.data.keyposes`) with probability proportional to
   ``FAMILY_WEIGHT[family] * weight / (sum of the weights in its family)``: families are
   balanced, not poses (mirror images and variants split their family's share);
2. with probability ``p_blend`` slerp every joint rotation towards a *partner*, ``t ~ U(0.15,
   0.85)``: ``R = R_a exp(t log(R_a^T R_b))``; the label, contacts, balance rule and flight are
   the nearer pose's. Partners: another key pose of the same family and tilt (families in
   :data:`BLEND_FAMILIES`) and, in the second library, the poses that follow or precede it in a
   motion (:data:`posrft.data.keyposes_motion.TRANSITIONS`: stand -> counter-movement ->
   push-off -> flight -> landing, stand -> half squat -> squat, stand -> forward lean, ...);
3. with probability ``p_arms`` (``arms_free`` poses) graft the arms (collars to wrists) of a
   gesture pose (wave, point, arms crossed...): label ``"<pose>+<gesture>"``;
4. perturb the anatomical coordinates (:mod:`posrft.data.limits`) with Gaussian noise of
   ``sigma = noise * clip(0.05 * range, 1.5 deg, 7 deg)`` per joint axis (mobile joints move
   more; left and right get the same amplitudes), fold them back into the limit boxes by
   reflection at the bounds (:func:`limits.reflect_coords`; so candidates are never rejected
   for limits, the check in step 7 is a safety net), and perturb the global orientation by a
   few degrees; hands (joints 22, 23) stay identity;
5. *ground* the pose (before the yaw): tilt the whole body by the smallest rotation that puts
   the required support points (``contacts_all``) on one horizontal plane (two points: level
   their segment; three or more: level their least-squares plane); a static pose on a single
   support is tilted so that its centre of mass is over it. Corrections above ``max_fix_deg``
   reject the candidate;
6. turn it about the vertical by ``yaw ~ U(-yaw_deg, yaw_deg)``;
7. reject it if any limit is violated, capsules penetrate, a required contact is off the
   ground (> 5 cm) or a static pose is off balance (:mod:`posrft.data.plausibility`);
8. place the floor: at the lowest support point, or for an ``airborne`` key pose (a jump's
   flight) ``h ~ U(FLIGHT_M)`` below it (``PoseSamples.ground``). Flight heights come from
   their own generator, so the poses do not depend on them.

Two libraries (``version``): 1 is the original key-pose set; 2 (the default) adds the motion
phases, forward leans and sports stances of :mod:`posrft.data.keyposes_motion` and the
transitions between phases. ``version=1`` reproduces the first library's samples exactly.

Candidates are drawn in fixed batches of :data:`BATCH` and kept in order, so the first ``k``
poses of ``sample_poses(n, seed)`` do not depend on ``n``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import roma
import torch

from posrft.body.formats import SMPL24_JOINTS
from posrft.data import keyposes as kp_lib
from posrft.data import limits, plausibility
from posrft.data.skeleton import pose_joints

BATCH = 512
CONTACT_TOL = 0.05
BLEND_FAMILIES = frozenset({
    "standing", "walking", "running", "sitting_chair", "sitting_floor", "squatting",
    "kneeling", "lying_back", "reaching", "bending",
})  # fmt: skip
BLEND_FAMILIES_V2 = BLEND_FAMILIES | {"leaning", "sports"}
FLIGHT_M = (0.05, 0.4)  # height of the lowest support point above the floor in flight
# relative frequency of each family among *candidates*; families whose candidates are often
# rejected (multi-contact poses: measured acceptance 15-50 %) are drawn more often so that the
# accepted poses stay roughly balanced
FAMILY_WEIGHT = {"standing": 1.5, "walking": 1.5, "running": 1.2, "sitting_chair": 1.5,
                 "sitting_floor": 2.5, "kneeling": 2.0, "squatting": 2.0, "crouching": 1.8,
                 "all_fours": 3.0, "plank": 2.0, "lying_back": 1.5}
# arm-gesture families share standing legs; they are frequent through arm grafting anyway
FAMILY_WEIGHT.update({f: 0.6 for f in (
    "a_pose", "t_pose", "arms_raised", "waving", "pointing", "clapping", "hands_on_hips",
    "hands_on_head", "arms_crossed", "carrying", "gesture")})
FAMILY_WEIGHT.update({"arms_crossed": 1.2, "hands_on_head": 0.9})
# the second library: jumps have many phases now, sports stances are many families' worth
FAMILY_WEIGHT_V2 = {**FAMILY_WEIGHT, "jumping": 2.0, "leaning": 1.2, "sports": 2.0}
ARM_JOINTS = [SMPL24_JOINTS.index(f"{s}_{j}") for s in ("left", "right")
              for j in ("collar", "shoulder", "elbow", "wrist")]  # fmt: skip
_GROUPS = list(kp_lib.SUPPORT_GROUPS)


@dataclass
class PoseSamples:
    """Accepted samples of :func:`sample_poses`.

    Attributes:
        pose: (n, 72) float32 axis-angle (global orientation + 23 joints; hands identity).
        joints: (n, 24, 3) float32 joints of :func:`posrft.data.skeleton.pose_joints`.
        key_pose: n labels, e.g. ``"walk_midstance"``, ``"kneel_one_m+wave"``.
        family: n family names, e.g. ``"walking"``.
        seed: the seed used.
        stats: ``candidates``, ``accepted`` and rejections per reason.
        ground: (n,) float32 height (y) of the floor in the frame of ``joints``: a joint
            touches it when ``y_j - SUPPORT_OFFSET_j`` equals it (step 8).
        airborne: (n,) bool, the pose is in flight (its floor is below its lowest point).
    """

    pose: np.ndarray
    joints: np.ndarray
    key_pose: list[str]
    family: list[str]
    seed: int
    stats: dict[str, int] = field(default_factory=dict)
    ground: np.ndarray | None = None
    airborne: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.key_pose)


@dataclass(frozen=True)
class _Library:
    names: list[str]
    families: list[str]
    coords: torch.Tensor  # (K, 24, 3) radians
    base_glob: torch.Tensor  # (K, 3, 3) tilt @ root
    tilt: list[str]
    contacts_all: torch.Tensor  # (K, G) bool
    contacts_any: torch.Tensor  # (K, G) bool
    static: torch.Tensor  # (K,) bool
    arms_free: torch.Tensor  # (K,) bool
    gestures: torch.Tensor  # (M,) indices of gesture poses
    prob: torch.Tensor  # (K,) sampling probabilities
    partners: list[list[int]]  # blend partners per pose
    airborne: torch.Tensor  # (K,) bool


@lru_cache(maxsize=2)
def library(version: int = 2) -> _Library:
    """The compiled key-pose library ``version`` (module docstring; cached)."""
    kps = kp_lib.key_poses(version=version)
    k = len(kps)
    coords = torch.tensor(np.deg2rad(np.stack([p.coords_deg() for p in kps])), dtype=torch.float32)
    root = roma.rotvec_to_rotmat(coords[:, 0])
    tilt = roma.rotvec_to_rotmat(
        torch.tensor(np.deg2rad([kp_lib.TILTS[p.tilt] for p in kps]), dtype=torch.float32)
    )
    cont_all = torch.zeros(k, len(_GROUPS), dtype=torch.bool)
    cont_any = torch.zeros(k, len(_GROUPS), dtype=torch.bool)
    for i, p in enumerate(kps):
        for g in p.contacts_all:
            cont_all[i, _GROUPS.index(g)] = True
        for g in p.contacts_any:
            cont_any[i, _GROUPS.index(g)] = True
    fams = [p.family for p in kps]
    fam_total = {f: sum(p.weight for p in kps if p.family == f) for f in set(fams)}
    weights = FAMILY_WEIGHT if version == 1 else FAMILY_WEIGHT_V2
    blend = BLEND_FAMILIES if version == 1 else BLEND_FAMILIES_V2
    prob = torch.tensor([weights.get(p.family, 1.0) * p.weight / fam_total[p.family]
                         for p in kps], dtype=torch.float64)  # fmt: skip
    partners = [
        [j for j, q in enumerate(kps) if j != i and q.family == p.family and q.tilt == p.tilt]
        if p.family in blend else []
        for i, p in enumerate(kps)
    ]  # fmt: skip
    if version == 2:
        _add_transitions(kps, partners)
    return _Library(
        names=[p.name for p in kps], families=fams, coords=coords, base_glob=tilt @ root,
        tilt=[p.tilt for p in kps], contacts_all=cont_all, contacts_any=cont_any,
        static=torch.tensor([p.static for p in kps]),
        arms_free=torch.tensor([p.arms_free for p in kps]),
        gestures=torch.tensor([i for i, p in enumerate(kps) if p.gesture]),
        prob=prob / prob.sum(), partners=partners,
        airborne=torch.tensor([p.airborne for p in kps]),
    )  # fmt: skip


def _add_transitions(kps: list, partners: list[list[int]]) -> None:
    """Make the poses of every transition (and their mirror images) blend partners."""
    from posrft.data.keyposes_motion import TRANSITIONS

    index = {p.name: i for i, p in enumerate(kps)}
    for a, b in TRANSITIONS:
        for name in (a, b):
            if name not in index:
                raise KeyError(f"transition ({a!r}, {b!r}): no key pose named {name!r}")
        # pair same-side versions: a with b, a_m with b_m (or with b when b has no mirror)
        for sa, sb in (("", ""), ("_m", "_m"), ("_m", ""), ("", "_m")):
            i, j = index.get(a + sa), index.get(b + sb)
            if i is None or j is None or (sa != sb and (a + "_m" in index) == (b + "_m" in index)):
                continue
            if j not in partners[i]:
                partners[i].append(j)
            if i not in partners[j]:
                partners[j].append(i)


def _noise_sigma(noise: float) -> torch.Tensor:
    width = limits.LIMITS_BOX_DEG[..., 1] - limits.LIMITS_BOX_DEG[..., 0]
    sigma = np.clip(0.05 * width, 1.5, 7.0) * noise
    sigma[0] = 0.0  # global orientation is perturbed separately
    sigma[22:] = 0.0  # hands stay identity
    return torch.tensor(np.deg2rad(sigma), dtype=torch.float32)


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen)


def _slerp(ra: torch.Tensor, rb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Geodesic interpolation ``R_a exp(t log(R_a^T R_b))`` (..., 3, 3), ``t`` broadcast (...)."""
    rel = roma.rotmat_to_rotvec(ra.transpose(-1, -2) @ rb)
    return ra @ roma.rotvec_to_rotmat(t[..., None] * rel)


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotations (B, 3, 3) taking unit vectors ``a`` to ``b`` (B, 3)."""
    axis = torch.linalg.cross(a, b, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    return roma.rotvec_to_rotmat(axis / sin.clamp_min(1e-9) * angle)


def _support_points(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per support group its lowest support point (B, G, 3) and height above ground (B, G)."""
    h_raw = joints[..., 1] - plausibility.SUPPORT_OFFSET.to(joints)  # (B, 24)
    pts, hts = [], []
    ground = h_raw.amin(-1)
    for g in _GROUPS:
        idx = torch.tensor([SMPL24_JOINTS.index(j) for j in kp_lib.SUPPORT_GROUPS[g]])
        h = h_raw[:, idx]
        arg = h.argmin(-1)
        p = joints[torch.arange(len(joints)), idx[arg]].clone()
        p[:, 1] = h.gather(-1, arg[:, None])[:, 0]
        pts.append(p)
        hts.append(p[:, 1] - ground)
    return torch.stack(pts, 1), torch.stack(hts, 1)


def _grounding(joints: torch.Tensor, need: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """Correction rotations (B, 3, 3) about the pelvis (module docstring, step 5)."""
    b = joints.shape[0]
    up = torch.tensor([0.0, 1.0, 0.0]).expand(b, 3)
    pts, _ = _support_points(joints)
    w = need.to(joints.dtype)  # (B, G)
    count = w.sum(-1)
    centre = (pts * w[..., None]).sum(1) / count.clamp_min(1)[:, None]
    d = (pts - centre[:, None]) * w[..., None]
    cov = d.transpose(1, 2) @ d  # (B, 3, 3)
    _, vec = torch.linalg.eigh(cov.double())
    vec = vec.to(joints.dtype)
    e1, e2 = vec[..., 2], vec[..., 1]  # largest, second largest
    n = up - (up * e1).sum(-1, keepdim=True) * e1
    n3 = n - (up * e2).sum(-1, keepdim=True) * e2
    n = torch.where((count >= 3)[:, None], n3, n)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    fix = _rotation_between(n, up)
    # a static pose on a single support: put the centre of mass above it
    com = plausibility.centre_of_mass(joints)
    v = com - centre
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    single = (count == 1) & static
    fix = torch.where(single[:, None, None], _rotation_between(v, up), fix)
    eye = torch.eye(3).expand(b, 3, 3)
    return torch.where((count >= 2)[:, None, None] | single[:, None, None], fix, eye)


def _candidates(gen: torch.Generator, lib: _Library, m: int, cfg: dict) -> dict:
    k = torch.multinomial(lib.prob, m, replacement=True, generator=gen)
    coords = lib.coords[k].clone()
    glob = lib.base_glob[k].clone()
    label = [lib.names[i] for i in k.tolist()]
    rule = k.clone()  # whose contacts/balance apply

    # blends with a partner of the same family
    u = _rand(gen, m)
    t = 0.15 + 0.7 * _rand(gen, m)
    pick = _rand(gen, m)
    rows, partner = [], []
    for i in range(m):
        partners = lib.partners[int(k[i])]
        if u[i] < cfg["p_blend"] and partners:
            rows.append(i)
            partner.append(partners[int(pick[i] * len(partners))])
    if rows:
        rows_t, partner_t, tt = torch.tensor(rows), torch.tensor(partner), t[rows]
        ra = limits.rotmat_from_coords(coords[rows_t])
        rb = limits.rotmat_from_coords(lib.coords[partner_t])
        coords[rows_t] = limits.coords_from_rotmat(_slerp(ra, rb, tt[:, None].expand(-1, 24)))
        glob[rows_t] = _slerp(glob[rows_t], lib.base_glob[partner_t], tt)
        for i, j, ti in zip(rows, partner, tt.tolist()):
            if ti > 0.5:
                rule[i], label[i] = j, lib.names[j]

    # arms of a gesture pose
    u = _rand(gen, m)
    pick = _rand(gen, m)
    for i in range(m):
        if u[i] < cfg["p_arms"] and bool(lib.arms_free[rule[i]]):
            g = int(lib.gestures[int(pick[i] * len(lib.gestures))])
            coords[i, ARM_JOINTS] = lib.coords[g, ARM_JOINTS]
            label[i] = f"{label[i]}+{lib.names[g]}"

    sigma = _noise_sigma(cfg["noise"])
    coords = limits.reflect_coords(coords + sigma * torch.randn(m, 24, 3, generator=gen))
    coords[:, 22:] = 0.0
    root_noise = torch.randn(m, 3, generator=gen) * math.radians(cfg["root_noise_deg"])
    glob = glob @ roma.rotvec_to_rotmat(root_noise)
    yaw = (2 * _rand(gen, m) - 1) * math.radians(cfg["yaw_deg"])
    return dict(coords=coords, glob=glob, rule=rule, label=label, yaw=yaw)


def _evaluate(lib: _Library, c: dict, max_fix_deg: float):
    """Ground, yaw and check candidates; returns poses (m, 72), joints, accepted mask, reasons."""
    m = c["coords"].shape[0]
    aa = limits.pose_from_coords(c["coords"])
    aa[:, 0] = roma.rotmat_to_rotvec(c["glob"])
    joints = pose_joints(aa.reshape(m, 72))
    need = lib.contacts_all[c["rule"]]
    static = lib.static[c["rule"]]
    fix = _grounding(joints, need, static)
    fix_angle = roma.rotmat_to_rotvec(fix).norm(dim=-1)
    yaw = roma.rotvec_to_rotmat(c["yaw"][:, None] * torch.tensor([0.0, 1.0, 0.0]))
    aa[:, 0] = roma.rotmat_to_rotvec(yaw @ fix @ c["glob"])
    pose = aa.reshape(m, 72)
    joints = pose_joints(pose)

    _, heights = _support_points(joints)
    off = heights > CONTACT_TOL
    any_need = lib.contacts_any[c["rule"]]
    reasons = {
        "grounding": fix_angle > math.radians(max_fix_deg),
        "limits": ~limits.within_limits(pose),
        "penetration": plausibility.self_penetrating(joints),
        "contact": (need & off).any(-1) | (any_need.any(-1) & (any_need & ~off).sum(-1).eq(0)),
        "balance": static & ~plausibility.balanced(joints, tol=CONTACT_TOL),
    }
    ok = torch.ones(m, dtype=torch.bool)
    for r in reasons.values():
        ok &= ~r
    return pose, joints, ok, reasons


@contextmanager
def single_thread():
    """Run torch on one intra-op thread inside the block (restored afterwards).

    The prior's ops are many small batched kernels; on a busy 2-core machine the thread
    synchronisation of a second intra-op thread made sampling 25x slower (0.25 s vs 6.8 s
    for 2,000 poses), so sampling, captioning and dataset building use one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_poses(
    n: int,
    seed: int = 0,
    *,
    version: int = 2,
    yaw_deg: float = 180.0,
    noise: float = 1.0,
    p_blend: float = 0.35,
    p_arms: float = 0.35,
    root_noise_deg: float = 3.0,
    max_fix_deg: float = 20.0,
    max_candidates: int | None = None,
) -> PoseSamples:
    """Draw ``n`` plausible poses (module docstring), deterministic for ``seed``.

    ``version``: the key-pose library (module docstring). ``yaw_deg = 0`` keeps every body
    facing +z (the canonical heading); 180 spreads the heading uniformly. Raises
    ``RuntimeError`` if ``max_candidates`` (default ``50 n + BATCH``) candidates yield fewer
    than ``n`` accepted poses.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    with single_thread():
        return _sample(n, seed, version, yaw_deg, noise, p_blend, p_arms, root_noise_deg,
                       max_fix_deg, max_candidates)  # fmt: skip


def _sample(n, seed, version, yaw_deg, noise, p_blend, p_arms, root_noise_deg, max_fix_deg,
            max_candidates) -> PoseSamples:
    lib = library(version)
    gen = torch.Generator().manual_seed(int(seed))
    gen_air = torch.Generator().manual_seed(int(seed) * 7919 + 17)  # flight heights only
    cfg = dict(noise=noise, p_blend=p_blend, p_arms=p_arms, yaw_deg=yaw_deg,
               root_noise_deg=root_noise_deg)  # fmt: skip
    limit = max_candidates if max_candidates is not None else 50 * n + BATCH
    poses, joints, labels, fams, grounds, flying = [], [], [], [], [], []
    stats = {"candidates": 0, "accepted": 0}
    got = 0
    while got < n:
        if stats["candidates"] >= limit:
            raise RuntimeError(
                f"sample_poses: only {got} of {n} poses accepted after {stats['candidates']} "
                f"candidates (rejections: {stats}); loosen noise or max_fix_deg"
            )
        c = _candidates(gen, lib, BATCH, cfg)
        pose, jts, ok, reasons = _evaluate(lib, c, max_fix_deg)
        stats["candidates"] += BATCH
        for r, mask in reasons.items():
            stats[f"rejected_{r}"] = stats.get(f"rejected_{r}", 0) + int(mask.sum())
        idx = ok.nonzero()[:, 0][: n - got]
        stats["accepted"] += int(ok.sum())
        for i, good in zip(c["rule"].tolist(), ok.tolist()):
            fam = lib.families[i]
            stats[f"candidates/{fam}"] = stats.get(f"candidates/{fam}", 0) + 1
            stats[f"accepted/{fam}"] = stats.get(f"accepted/{fam}", 0) + int(good)
        air = lib.airborne[c["rule"]]
        lift = FLIGHT_M[0] + (FLIGHT_M[1] - FLIGHT_M[0]) * _rand(gen_air, BATCH)
        floor = _lowest_support(jts) - torch.where(air, lift, torch.zeros_like(lift))
        poses.append(pose[idx])
        joints.append(jts[idx])
        grounds.append(floor[idx])
        flying.append(air[idx])
        labels += [c["label"][i] for i in idx.tolist()]
        fams += [lib.families[int(c["rule"][i])] for i in idx.tolist()]
        got += len(idx)
    return PoseSamples(
        pose=torch.cat(poses).numpy().astype(np.float32),
        joints=torch.cat(joints).numpy().astype(np.float32),
        key_pose=labels, family=fams, seed=int(seed), stats=stats,
        ground=torch.cat(grounds).numpy().astype(np.float32),
        airborne=torch.cat(flying).numpy(),
    )  # fmt: skip


def _lowest_support(joints: torch.Tensor) -> torch.Tensor:
    """(B,) the lowest support point's height ``min_j (y_j - SUPPORT_OFFSET_j)``."""
    return (joints[..., 1] - plausibility.SUPPORT_OFFSET.to(joints)).amin(-1)


def coverage_stats(samples: PoseSamples, *, max_pairs: int = 500, bin_deg: float = 10.0) -> dict:
    """Summary of a prior sample: coverage, family counts, rejection and diversity.

    Returns a dict with
        ``joint_coverage``: per joint and axis ``(min_deg, max_deg, coverage)`` where coverage
            is the fraction of ``bin_deg`` bins of the joint's limit range holding a sample
            (joints with a zero-width range and the root are skipped);
        ``mean_coverage``: the mean of those fractions;
        ``family_counts`` / ``key_pose_counts``: samples per family / per base key pose;
        ``rejection_rate``: 1 - accepted / candidates, plus ``rejection_by_reason`` (fraction of
            candidates failing each check; a candidate may fail several) and
            ``acceptance_by_family``;
        ``mpjpe_mean_mm`` / ``mpjpe_nn_mm``: mean pairwise MPJPE over the first ``max_pairs``
            poses, and the mean distance to each pose's nearest neighbour among them, after
            removing each pose's heading (:func:`posecodes.body_frame`) and centring the pelvis.
    """
    from posrft.data.posecodes import body_frame

    coords = torch.rad2deg(limits.anatomical_coords(torch.as_tensor(samples.pose))).numpy()
    box = limits.LIMITS_BOX_DEG
    cover, fracs = {}, []
    for j, name in enumerate(SMPL24_JOINTS):
        if j == 0 or j >= 22:
            continue
        cover[name] = {}
        for a, axis in enumerate("xyz"):
            lo, hi = box[j, a]
            edges = np.arange(lo, hi + bin_deg, bin_deg)
            hist, _ = np.histogram(np.clip(coords[:, j, a], lo, hi), bins=edges)
            frac = float((hist > 0).mean()) if len(hist) else 1.0
            fracs.append(frac)
            cover[name][axis] = (float(coords[:, j, a].min()), float(coords[:, j, a].max()), frac)
    fam_counts: dict[str, int] = {}
    kp_counts: dict[str, int] = {}
    for f, k in zip(samples.family, samples.key_pose):
        fam_counts[f] = fam_counts.get(f, 0) + 1
        base = k.split("+")[0]
        kp_counts[base] = kp_counts.get(base, 0) + 1
    st = samples.stats
    cand = max(st.get("candidates", 0), 1)
    by_family = {
        k.split("/", 1)[1]: st.get("accepted/" + k.split("/", 1)[1], 0) / v
        for k, v in st.items() if k.startswith("candidates/")
    }  # fmt: skip
    m = min(max_pairs, len(samples))
    jts = body_frame(samples.joints[:m])
    jts = jts - jts[:, :1]
    d = np.linalg.norm(jts[:, None] - jts[None], axis=-1).mean(-1) * 1000.0  # (m, m) mm
    off = ~np.eye(m, dtype=bool)
    return {
        "n": len(samples),
        "joint_coverage": cover,
        "mean_coverage": float(np.mean(fracs)),
        "family_counts": dict(sorted(fam_counts.items(), key=lambda x: -x[1])),
        "key_pose_counts": dict(sorted(kp_counts.items(), key=lambda x: -x[1])),
        "rejection_rate": 1.0 - st.get("accepted", 0) / cand,
        "rejection_by_reason": {
            k[len("rejected_"):]: v / cand for k, v in st.items() if k.startswith("rejected_")
        },
        "acceptance_by_family": dict(sorted(by_family.items(), key=lambda x: x[1])),
        "mpjpe_mean_mm": float(d[off].mean()) if m > 1 else 0.0,
        "mpjpe_nn_mm": float(np.where(off, d, np.inf).min(1).mean()) if m > 1 else 0.0,
    }
