"""Tree helpers and the analytic initialisation of :mod:`posrft.body.ik` (its step 1).

SMPL joint ``k`` is *known* when a format joint maps to it alone (a one-hot row of ``W``).
Top-down over the tree, joint ``j``'s *anchors* are the first known joints down each branch of
its subtree; with the subtree at rest the global rotation ``G_j`` takes the rest offsets
``s (J_a - J_j)`` to the target offsets ``Y_a - X_j``: a weighted Kabsch fit
(``roma.rigid_vectors_registration``) when they span a plane, otherwise the smallest rotation
(the swing) of ``G_parent`` that aligns the one direction. The root is placed by a rigid
registration of its anchors (or at the pelvis target when the pelvis is known).

Twist about a single bone is not observable from that bone's own joints. For a *hinge* child
``c`` (knee, elbow) it is read from the grandchild ``g``: the twist ``tau`` of ``G_j`` about
the bone direction ``d`` is the root of ``e . R_d(tau) h0 = b_c . h`` (``e``: unit target bone
``c -> g``, ``h0 = G_j h`` the hinge axis, ``b_c`` the unit rest bone ``c -> g``) for which the
child's bend is a positive rotation about the hinge; with
``A = e.h0 - (e.d)(d.h0)``, ``B = e.(d x h0)``, ``C = (e.d)(d.h0)`` it is
``tau = atan2(B, A) +- arccos((b_c.h - C) / sqrt(A^2 + B^2))``. A nearly straight chain
(bones within ~17 deg) keeps the swing's twist.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import roma
import torch
from torch import Tensor

from posrft.body.formats import SMPL24_PARENTS

NUM_JOINTS = len(SMPL24_PARENTS)



@lru_cache(maxsize=1)
def tree() -> dict:
    """The SMPL tree as index tables.

    ``strict[k, j]``: j is a strict ancestor of k; ``path[k, m]``: bone ``parent(m) -> m``
    carries k (m on the path root -> k, m != root); ``children[j]``: list; ``driving``: joints
    with a child (the only ones whose rotation moves a joint), ascending; ``pair_k``,
    ``pair_j``, ``pair_slot``: every (descendant k, strict ancestor j) pair and j's position
    in ``driving``.
    """
    n = NUM_JOINTS
    strict = torch.zeros(n, n, dtype=torch.bool)
    for k in range(n):
        p = SMPL24_PARENTS[k]
        while p >= 0:
            strict[k, p] = True
            p = SMPL24_PARENTS[p]
    path = strict.clone()
    path[:, 0] = False
    path |= torch.eye(n, dtype=torch.bool)
    path[0, 0] = False
    children = [[c for c in range(n) if SMPL24_PARENTS[c] == j] for j in range(n)]
    driving = [j for j in range(n) if children[j]]
    slot = {j: i for i, j in enumerate(driving)}
    pairs = strict.nonzero().tolist()
    return {
        "strict": strict, "path": path, "children": children, "driving": driving,
        "pair_k": torch.tensor([k for k, _ in pairs]), "pair_j": torch.tensor([j for _, j in pairs]),
        "pair_slot": torch.tensor([slot[j] for _, j in pairs]),
    }  # fmt: skip


def parents_tensor(device) -> Tensor:
    p = torch.tensor(SMPL24_PARENTS, device=device)
    return p.clamp_min(0)


def fk_globals(rotmats: Tensor, offsets: Tensor, root: Tensor) -> tuple[Tensor, Tensor]:
    """FK returning global rotations too: ``rotmats`` (B, 24, 3, 3), bone ``offsets``
    (B, 24, 3) (``s_j b_j``; entry 0 unused), ``root`` (B, 3) pelvis position ->
    ``(G (B, 24, 3, 3), X (B, 24, 3))``."""
    g = [rotmats[:, 0]]
    x = [root]
    for j in range(1, NUM_JOINTS):
        p = SMPL24_PARENTS[j]
        g.append(g[p] @ rotmats[:, j])
        x.append(x[p] + (g[p] @ offsets[:, j, :, None])[..., 0])
    return torch.stack(g, 1), torch.stack(x, 1)


def known_joints(w: Tensor) -> dict[int, int]:
    """SMPL joint -> format row for rows that map one SMPL joint alone (one-hot rows)."""
    out: dict[int, int] = {}
    for i in range(w.shape[0]):
        nz = (w[i].abs() > 1e-12).nonzero()[:, 0].tolist()
        if len(nz) == 1 and abs(float(w[i, nz[0]]) - 1.0) < 1e-9 and nz[0] not in out:
            out[nz[0]] = i
    return out


def _anchors(j: int, known: Mapping[int, int]) -> list[int]:
    """First known joints down each branch of ``j``'s subtree (``j`` excluded)."""
    out, stack = [], list(tree()["children"][j])
    while stack:
        c = stack.pop()
        if c in known:
            out.append(c)
        else:
            stack.extend(tree()["children"][c])
    return sorted(out)


def _rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """Smallest rotations (B, 3, 3) taking directions ``a`` to ``b`` (B, 3)."""
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis = torch.linalg.cross(a, b, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sin, (a * b).sum(-1, keepdim=True))
    # antiparallel: any axis perpendicular to a
    ortho = torch.linalg.cross(a, torch.eye(3, dtype=a.dtype)[a.abs().argmin(-1)], dim=-1)
    axis = torch.where(sin > 1e-9, axis, ortho)
    return roma.rotvec_to_rotmat(axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12) * angle)


def _hinge_twist(g: Tensor, d: Tensor, e: Tensor, b_c: Tensor, axis: Tensor) -> Tensor:
    """Twist ``G <- R_d(tau) G`` about the bone direction ``d`` so that the hinge child's
    bend (rest child bone ``b_c``, target child bone ``e``, flexion axis ``axis`` in the
    child's frame) is a positive rotation about the hinge (module docstring, step 1).

    g (B, 3, 3), d, e, b_c (B, 3), axis (3,) -> twisted g (B, 3, 3); unchanged where the
    chain is nearly straight (the twist is then not determined by the grandchild).
    """
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bc = b_c / b_c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    h0 = g @ axis  # (B, 3)
    kappa = (bc * axis).sum(-1)
    ed, dh = (e * d).sum(-1), (d * h0).sum(-1)
    a = (e * h0).sum(-1) - ed * dh
    b = (e * torch.linalg.cross(d, h0, dim=-1)).sum(-1)
    c = ed * dh
    rho = torch.sqrt(a * a + b * b)
    phi = torch.atan2(b, a)
    base = torch.arccos(((kappa - c) / rho.clamp_min(1e-12)).clamp(-1.0, 1.0))
    best = torch.zeros_like(phi)
    best_ok = torch.zeros_like(phi, dtype=torch.bool)
    for sign in (1.0, -1.0):
        tau = phi + sign * base
        gt = roma.rotvec_to_rotmat(d * tau[:, None]) @ g
        u = (gt @ bc[..., None])[..., 0]  # child bone direction with the child at rest
        flex = (torch.linalg.cross(u, e, dim=-1) * (gt @ axis)).sum(-1)
        ok = flex > 0
        take = ok & (~best_ok | (tau.abs() < best.abs()))
        best = torch.where(take, tau, best)
        best_ok |= ok
    bent = torch.linalg.cross(d, e, dim=-1).norm(dim=-1) > 0.3  # > ~17 deg between the bones
    tau = torch.where(bent & best_ok & (rho > 1e-3), best, torch.zeros_like(best))
    return roma.rotvec_to_rotmat(d * tau[:, None]) @ g


def initial_scale(y, conf, rest, known) -> Tensor:
    """Median ratio of target to rest length over bones whose both joints are known."""
    ratios, weights = [], []
    for k, row in known.items():
        p = SMPL24_PARENTS[k]
        if p < 0 or p not in known:
            continue
        rest_len = (rest[k] - rest[p]).norm()
        if rest_len < 1e-6:
            continue
        ratios.append((y[:, row] - y[:, known[p]]).norm(dim=-1) / rest_len)
        weights.append((conf[:, row] > 0) & (conf[:, known[p]] > 0))
    if not ratios:
        return torch.ones(y.shape[0], dtype=y.dtype)
    r = torch.stack(ratios, 1)
    w = torch.stack(weights, 1)
    r = torch.where(w, r, torch.nan)
    med = torch.nanmedian(r, dim=1).values
    return torch.where(torch.isfinite(med), med, torch.ones_like(med))


def initial_betas(y, conf, rest, shape_dirs, known, weight) -> Tensor:
    """Shape coefficients (B, nb) whose bone lengths match the target's, linearised:
    ``|b_k + dS_k beta| ~ |b_k| + u_k . dS_k beta`` over bones with both joints known,
    solved as ridge least squares (``weight`` per coefficient)."""
    b, nb = y.shape[0], shape_dirs.shape[-1]
    rows, rhs, wts = [], [], []
    for k, row in known.items():
        p = SMPL24_PARENTS[k]
        if p < 0 or p not in known:
            continue
        bone = rest[k] - rest[p]
        length = bone.norm()
        if length < 1e-6:
            continue
        rows.append((bone / length) @ (shape_dirs[k] - shape_dirs[p]))  # (nb,)
        rhs.append((y[:, row] - y[:, known[p]]).norm(dim=-1) - length)  # (B,)
        wts.append(((conf[:, row] > 0) & (conf[:, known[p]] > 0)).to(y.dtype))
    if not rows:
        return torch.zeros(b, nb, dtype=y.dtype)
    a = torch.stack(rows)  # (E, nb)
    r, wt = torch.stack(rhs, 1), torch.stack(wts, 1)  # (B, E)
    lhs = torch.einsum("be,ei,ej->bij", wt, a, a) + weight**2 * torch.eye(nb, dtype=y.dtype)
    return torch.linalg.solve(lhs, torch.einsum("be,ei->bi", wt * r, a)[..., None])[..., 0]


def initialise(y, conf, w, rest, scale, hinges):
    """Rotations and translation of step 1 (module docstring) -> (R (B, 24, 3, 3), t (B, 3)).

    ``rest`` (24, 3) or per pose (B, 24, 3); ``scale`` (B,) bone length factor."""
    b = y.shape[0]
    rest = rest.expand(b, NUM_JOINTS, 3) if rest.ndim == 2 else rest
    known = known_joints(w)
    eye = torch.eye(3, dtype=y.dtype).expand(b, 3, 3)
    glob: list[Tensor | None] = [None] * NUM_JOINTS
    pos: list[Tensor | None] = [None] * NUM_JOINTS
    rot = eye[:, None].repeat(1, NUM_JOINTS, 1, 1)
    s = scale[:, None]

    def target(k):
        return y[:, known[k]], conf[:, known[k]]

    # root: rigid registration of the rest anchors (and the pelvis itself when known)
    anchors = _anchors(0, known) + ([0] if 0 in known else [])
    if anchors:
        src = torch.stack([(rest[:, a] - rest[:, 0]) * s for a in anchors], 1)
        dst = torch.stack([target(a)[0] for a in anchors], 1)
        wt = torch.stack([target(a)[1] for a in anchors], 1)
        wsum = wt.sum(1, keepdim=True).clamp_min(1e-12)
        src_c = src - (wt[..., None] * src).sum(1, keepdim=True) / wsum[..., None]
        dst_c = dst - (wt[..., None] * dst).sum(1, keepdim=True) / wsum[..., None]
        g0 = _kabsch_or_swing(src_c, dst_c, wt, eye)
        centre_dst = (wt[..., None] * dst).sum(1) / wsum
        centre_src = (wt[..., None] * src).sum(1) / wsum
        root = centre_dst - (g0 @ centre_src[..., None])[..., 0]  # pelvis position
        if 0 in known:
            have = conf[:, known[0]] > 0
            root = torch.where(have[:, None], y[:, known[0]], root)
    else:
        g0, root = eye, rest[:, 0].clone()
    glob[0], pos[0] = g0, root
    rot[:, 0] = g0
    for j in range(1, NUM_JOINTS):
        p = SMPL24_PARENTS[j]
        pos[j] = pos[p] + (glob[p] @ ((rest[:, j] - rest[:, p]) * s)[..., None])[..., 0]
        anchors = _anchors(j, known)
        if not anchors:
            glob[j] = glob[p]
            continue
        src = torch.stack([(rest[:, a] - rest[:, j]) * s for a in anchors], 1)
        dst = torch.stack([target(a)[0] - pos[j] for a in anchors], 1)
        wt = torch.stack([target(a)[1] for a in anchors], 1)
        g = _kabsch_or_swing(src, dst, wt, glob[p])
        kids = tree()["children"][j]
        if hinges and len(kids) == 1 and kids[0] in hinges and anchors == [kids[0]]:
            c = kids[0]
            grand = tree()["children"][c]
            if len(grand) == 1 and grand[0] in known:
                gc = grand[0]
                e = target(gc)[0] - target(c)[0]
                axis = torch.as_tensor(hinges[c], dtype=y.dtype)
                g_tw = _hinge_twist(g, dst[:, 0], e, rest[:, gc] - rest[:, c], axis)
                have = (target(gc)[1] > 0) & (target(c)[1] > 0)
                g = torch.where(have[:, None, None], g_tw, g)
        glob[j] = g
        rot[:, j] = glob[p].transpose(-1, -2) @ g
    transl = root - rest[:, 0]
    return rot, transl


def _kabsch_or_swing(src: Tensor, dst: Tensor, wt: Tensor, g_default: Tensor) -> Tensor:
    """Rotation taking ``src`` (B, A, 3) to ``dst`` with weights ``wt`` (B, A): Kabsch when
    the weighted directions span a plane, else the swing of ``g_default`` aligning the
    strongest direction; ``g_default`` where every weight is zero."""
    cov = torch.einsum("ba,bai,baj->bij", wt, dst, src)
    sv = torch.linalg.svdvals(cov)
    planar = sv[:, 1] > 1e-3 * sv[:, 0].clamp_min(1e-12)
    if bool(planar.any()):
        kab = roma.rigid_vectors_registration(src, dst, weights=wt)
    else:
        kab = g_default
    best = (wt * src.norm(dim=-1)).argmax(1)
    idx = torch.arange(src.shape[0])
    a = (g_default @ src[idx, best][..., None])[..., 0]
    swing = _rotation_between(a, dst[idx, best]) @ g_default
    out = torch.where(planar[:, None, None], kab, swing)
    none = wt.sum(1) <= 0
    return torch.where(none[:, None, None], g_default, out)
