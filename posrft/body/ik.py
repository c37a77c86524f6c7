"""Inverse kinematics: joints of any SMPL-mappable skeleton format -> SMPL local rotations.

A format's joints are an affine map of the SMPL-24 joints, ``Y = W X`` (``W`` of
:meth:`SkeletonFormat.smpl_matrix`), and the SMPL joints are forward kinematics (FK) of local
rotations ``R`` on bone offsets (rest joints ``J``, tree ``parent``, ``p = parent(j)``)::

    G_0 = R_0,  X_0 = J_0 + S_0 beta + t;      G_j = G_p R_j,  X_j = X_p + G_p s_j b_j(beta)
    b_j(beta) = J_j - J_p + (S_j - S_p) beta,  s_j = exp(sigma + eps_j)

:func:`inverse_kinematics` minimises, per pose and in float64,

    sum_i c_i |(W X)_i - Y_i|^2 + |r_prior(R)|^2 + lambda_s^2 |eps|^2 + lambda_b^2 |beta|^2

over the local rotations, the translation ``t``, the log bone scales (``sigma`` shared, ``eps``
per bone) and optionally shape coefficients ``beta`` (``S``: per-joint shape directions, e.g.
:func:`joint_shape_dirs` of a :class:`~posrft.body.model.BodyModel`).

1. **Analytic initialisation** along the tree: Kabsch / swing per joint, twist of a hinge's
   parent from the grandchild (:mod:`posrft.body.ik_init`).
2. **Levenberg-Marquardt** through the FK with an analytic Jacobian. With a right perturbation
   ``R_j <- R_j exp([delta_j]x)`` a descendant moves by ``dX_k = (G_j delta_j) x (X_k - X_j)``;
   ``dX_k/dt = I``; ``dX_k/dsigma = X_k - X_0``; ``dX_k/deps_m = X_m - X_p(m)`` for each bone
   ``m`` that carries ``k``; ``dX_k/dbeta = S_0 + sum_m G_p(m) s_m (S_m - S_p(m))``. A
   ``prior`` (e.g. joint limits, :mod:`posrft.data.ik`) adds per-joint residuals ``r_j(R_j)``
   whose 3x3-block Jacobian is taken by forward differences. Damping adapts per pose (a step
   is kept only if it lowers the cost).

What joints cannot tell: a leaf joint's rotation (feet, head, hands: no joint below them)
moves nothing, so it stays the identity; the twist of a bone about itself moves only the
joints below its child, so where that child is a leaf (ankle -> foot, neck -> head,
wrist -> hand) it is decided by the prior alone (else it keeps the initial, smallest swing),
and elsewhere it is shared between the bone and its child by the prior (a straight limb) or
fixed by a hinge child's bend (knee, elbow).

The result reports the fitted joints and the per-joint residual in the input format, so a
skeleton whose bones do not match SMPL's (another body, another joint definition) shows how
far it is from any SMPL pose.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Mapping, Sequence

import roma
import torch
from torch import Tensor

from posrft.body.formats import SkeletonFormat, get_format
from posrft.body.ik_init import (
    NUM_JOINTS,
    fk_globals,
    initial_betas,
    initial_scale,
    initialise,
    known_joints,
    parents_tensor,
    tree,
)
from posrft.body.rotations import rotmat_to_pose6d

__all__ = ["BONE_SCALE_MODES", "IKResult", "JointPrior", "inverse_kinematics", "joint_shape_dirs"]

BONE_SCALE_MODES = ("none", "uniform", "per_bone")
#: A per-joint residual of local rotations: ``(B, 24, 3, 3) -> (B, 24, K)``, entry ``j``
#: depending on ``R_j`` alone (so its Jacobian is block diagonal).
JointPrior = Callable[[Tensor], Tensor]
SIGMA_WEIGHT = 1e-3  # keeps the shared log-scale near its initial value where no bone is seen


@dataclass
class IKResult:
    """Result of :func:`inverse_kinematics` (float32).

    Attributes:
        rotmats: (B, 24, 3, 3) SMPL local rotations (global orientation first).
        transl: (B, 3) translation: ``X_pelvis = J_pelvis + t``.
        bone_scale: (B, 24) length factor of bone ``parent(j) -> j`` (entry 0 is 1).
        betas: (B, nb) shape coefficients, or ``None`` without ``shape_dirs``.
        joints: (B, 24, 3) fitted SMPL joints.
        fitted: (B, J, 3) fitted joints in the input format (``W @ joints``).
        residual: (B, J) distance fitted - target per format joint, metres (NaN where the
            target was missing or had zero confidence).
        iterations: LM iterations run.
    """

    rotmats: Tensor
    transl: Tensor
    bone_scale: Tensor
    betas: Tensor | None
    joints: Tensor
    fitted: Tensor
    residual: Tensor
    iterations: int

    @property
    def pose6d(self) -> Tensor:
        """(B, 144) 6D rotations of the 24 joints (``[:, :132]``: the 22 body joints)."""
        return rotmat_to_pose6d(self.rotmats)

    @property
    def mpjpe(self) -> Tensor:
        """(B,) mean residual over the joints that had a target, metres."""
        return torch.nanmean(self.residual, dim=1)


def joint_shape_dirs(body_model) -> Tensor:
    """Per-joint shape directions ``S`` (J, 3, nb) float64 of a :class:`BodyModel`:
    ``J_regressor @ shapedirs``, so its rest joints are ``J_0 + S beta``."""
    smpl = body_model.smpl
    reg = smpl.J_regressor[: body_model.num_joints].double()
    return torch.einsum("jv,vcb->jcb", reg, smpl.shapedirs.double())


# ----------------------------------------------------------------------------- LM


@dataclass
class _State:
    rot: Tensor  # (B, 24, 3, 3)
    transl: Tensor  # (B, 3)
    sigma: Tensor  # (B,)
    eps: Tensor  # (B, 24), entry 0 unused (kept at 0)
    beta: Tensor  # (B, nb)

    def take(self, mask: Tensor, other: "_State") -> "_State":
        """``other`` where ``mask`` (B,) else ``self``."""
        out = []
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            out.append(torch.where(mask.reshape(-1, *([1] * (a.ndim - 1))), b, a))
        return _State(*out)

    def index(self, idx: Tensor) -> "_State":
        return _State(*(getattr(self, f.name)[idx] for f in fields(self)))

    def put(self, idx: Tensor, part: "_State") -> "_State":
        """A copy with poses ``idx`` replaced by ``part``."""
        out = []
        for f in fields(self):
            a = getattr(self, f.name).clone()
            a[idx] = getattr(part, f.name)
            out.append(a)
        return _State(*out)


class _Problem:
    """Residuals, cost and normal equations of one batch (module docstring, step 2).

    Parameters per pose, in order: ``delta`` of the driving joints (``3 * 19``), ``t`` (3),
    ``sigma`` (1, unless ``mode == "none"``), ``eps`` (23, ``"per_bone"``), ``beta`` (nb).
    """

    def __init__(self, y, conf, w, rest, shape_dirs, prior, mode, lam_s, lam_b, sigma0):
        self.y, self.w, self.rest, self.prior, self.mode = y, w, rest, prior, mode
        self.sqrt_c = conf.sqrt()
        self.s_dirs = shape_dirs
        self.nb = 0 if shape_dirs is None else shape_dirs.shape[-1]
        self.lam_s, self.lam_b, self.sigma0 = lam_s, lam_b, sigma0
        par = parents_tensor(y.device)
        self.bones = rest - rest[par]
        self.bones[0] = 0.0
        if shape_dirs is not None:
            self.s_bones = shape_dirs - shape_dirs[par]
            self.s_bones[0] = 0.0
        t = tree()
        self.driving = torch.tensor(t["driving"])
        self.nd = len(t["driving"])
        self.n_rot = 3 * self.nd
        self.n_scale = {"none": 0, "uniform": 1, "per_bone": NUM_JOINTS}[mode]
        self.n_params = self.n_rot + 3 + self.n_scale + self.nb
        self.w_identity = w.shape == (NUM_JOINTS, NUM_JOINTS) and bool(
            torch.equal(w, torch.eye(NUM_JOINTS, dtype=w.dtype))
        )

    def scales(self, st: _State) -> Tensor:
        if self.mode == "none":
            return torch.ones_like(st.eps)
        return (st.sigma[:, None] + (st.eps if self.mode == "per_bone" else 0.0)).exp()

    def forward(self, st: _State) -> tuple[Tensor, Tensor, Tensor]:
        """``(G, X, s)``: global rotations, SMPL joints and bone scales of ``st``."""
        s = self.scales(st)
        bones = self.bones.expand(st.rot.shape[0], -1, -1)
        root = self.rest[0] + st.transl
        if self.nb:
            bones = bones + torch.einsum("jcn,bn->bjc", self.s_bones, st.beta)
            root = root + torch.einsum("cn,bn->bc", self.s_dirs[0], st.beta)
        g, x = fk_globals(st.rot, bones * s[..., None], root)
        return g, x, s

    def _map(self, x: Tensor) -> Tensor:
        return x if self.w_identity else torch.einsum("ik,bk...->bi...", self.w, x)

    def residuals(self, st: _State, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Data (B, J*3), prior (B, 24*K) or None, and regulariser (B, R) residuals."""
        r = (self.sqrt_c[..., None] * (self._map(x) - self.y)).flatten(1)
        rp = None if self.prior is None else self.prior(st.rot).flatten(1)
        reg = []
        if self.mode != "none":
            reg.append(SIGMA_WEIGHT * (st.sigma - self.sigma0)[:, None])
        if self.mode == "per_bone":
            reg.append(self.lam_s * st.eps[:, 1:])
        if self.nb:
            reg.append(self.lam_b * st.beta)
        reg_t = torch.cat(reg, 1) if reg else r.new_zeros(r.shape[0], 0)
        return r, rp, reg_t

    def cost(self, st: _State) -> Tensor:
        _, x, _ = self.forward(st)
        r, rp, reg = self.residuals(st, x)
        out = (r * r).sum(1) + (reg * reg).sum(1)
        return out if rp is None else out + (rp * rp).sum(1)

    def _joint_jacobian(self, g_rot: Tensor, x: Tensor, s: Tensor) -> Tensor:
        """``dX/dparams`` (B, 24, 3, P) of the SMPL joints (module docstring)."""
        b, t = x.shape[0], tree()
        k, j, slot = t["pair_k"], t["pair_j"], t["pair_slot"]
        cols = g_rot[:, j].transpose(-1, -2)  # (B, pairs, c, 3): column c of G_j
        d = (x[:, k] - x[:, j])[:, :, None]  # (B, pairs, 1, 3)
        vals = torch.linalg.cross(cols, d.expand_as(cols), dim=-1)
        jr = x.new_zeros(b, NUM_JOINTS * self.nd, 3, 3)
        jr[:, k * self.nd + slot] = vals
        jr = jr.view(b, NUM_JOINTS, self.nd, 3, 3).permute(0, 1, 4, 2, 3)
        parts = [jr.reshape(b, NUM_JOINTS, 3, self.n_rot)]
        parts.append(torch.eye(3, dtype=x.dtype).expand(b, NUM_JOINTS, 3, 3))
        if self.mode != "none":
            parts.append((x - x[:, :1])[..., None])
        path = t["path"].to(x.dtype)
        if self.mode == "per_bone":
            bone_vec = x - x[:, parents_tensor(x.device)]  # (B, m, 3): X_m - X_p(m)
            parts.append(torch.einsum("km,bmc->bkcm", path[:, 1:], bone_vec[:, 1:]))
        if self.nb:
            par = parents_tensor(x.device)
            rotated = torch.einsum("bmcd,mdn->bmcn", g_rot[:, par], self.s_bones)
            rotated = rotated * s[:, :, None, None]
            parts.append(torch.einsum("km,bmcn->bkcn", path, rotated) + self.s_dirs[0])
        return torch.cat(parts, -1)

    def normal_equations(self, st: _State) -> tuple[Tensor, Tensor, Tensor]:
        """``(H, g, cost)``: Gauss-Newton matrix (B, P, P), gradient (B, P), cost (B,)."""
        g_rot, x, s = self.forward(st)
        b = x.shape[0]
        jd = self._map(self._joint_jacobian(g_rot, x, s)) * self.sqrt_c[..., None, None]
        jd = jd.reshape(b, -1, self.n_params)
        r, rp, reg = self.residuals(st, x)
        h = jd.transpose(1, 2) @ jd
        grad = (jd.transpose(1, 2) @ r[..., None])[..., 0]
        cost = (r * r).sum(1) + (reg * reg).sum(1)
        k = self.n_rot + 3
        diag = torch.diagonal(h, dim1=1, dim2=2)
        if self.mode != "none":  # regulariser rows: one per scale / shape parameter
            weights = [SIGMA_WEIGHT] + [self.lam_s] * (self.n_scale - 1)
            weights += [self.lam_b] * self.nb
            lam = torch.tensor(weights, dtype=x.dtype)
            diag[:, k:] += lam**2
            grad[:, k:] += lam * reg
        elif self.nb:
            diag[:, k:] += self.lam_b**2
            grad[:, k:] += self.lam_b * reg
        if rp is not None:
            jp = _prior_jacobian(self.prior, st.rot, rp.reshape(b, NUM_JOINTS, -1))
            jp = jp[:, self.driving]  # (B, nd, K, 3)
            rp3 = rp.reshape(b, NUM_JOINTS, -1)[:, self.driving]
            blocks = jp.transpose(-1, -2) @ jp  # (B, nd, 3, 3)
            hb = h[:, : self.n_rot, : self.n_rot].view(b, self.nd, 3, self.nd, 3)
            idx = torch.arange(self.nd)
            hb[:, idx, :, idx, :] += blocks.permute(1, 0, 2, 3)
            grad[:, : self.n_rot] += (jp.transpose(-1, -2) @ rp3[..., None]).reshape(b, -1)
            cost = cost + (rp * rp).sum(1)
        return h, grad, cost

    def step(self, st: _State, delta: Tensor) -> _State:
        b = delta.shape[0]
        inc = delta.new_zeros(b, NUM_JOINTS, 3)
        inc[:, self.driving] = delta[:, : self.n_rot].reshape(b, self.nd, 3)
        rot = st.rot @ roma.rotvec_to_rotmat(inc)
        k = self.n_rot
        transl = st.transl + delta[:, k : k + 3]
        sigma, eps, beta = st.sigma, st.eps, st.beta
        k += 3
        if self.mode != "none":
            sigma = sigma + delta[:, k]
            if self.mode == "per_bone":
                eps = torch.cat([eps[:, :1], eps[:, 1:] + delta[:, k + 1 : k + NUM_JOINTS]], 1)
            k += self.n_scale
        if self.nb:
            beta = beta + delta[:, k : k + self.nb]
        return _State(rot, transl, sigma, eps, beta)


def _prior_jacobian(prior: JointPrior, rot: Tensor, base: Tensor, h: float = 1e-7) -> Tensor:
    """Forward differences of a per-joint prior under right perturbations: (B, 24, K, 3)."""
    cols = []
    for a in range(3):
        v = torch.zeros(3, dtype=rot.dtype)
        v[a] = h
        cols.append((prior(rot @ roma.rotvec_to_rotmat(v)) - base) / h)
    return torch.stack(cols, -1)


def _inputs(target, fmt: SkeletonFormat, confidence, mode: str) -> tuple[Tensor, Tensor]:
    """Checked float64 targets (B, J, 3) and confidences (B, J); NaN joints get weight 0."""
    target = torch.as_tensor(target)
    if target.ndim == 2:
        target = target[None]
    fmt.check_joints(target, "ik target joints")
    if target.ndim != 3:
        raise ValueError(
            f"ik target joints: expected (B, {fmt.num_joints}, 3), got {tuple(target.shape)}"
        )
    if fmt.smpl_map is None:
        raise ValueError(f"format {fmt.name!r} has no map from SMPL joints: IK needs one")
    if mode not in BONE_SCALE_MODES:
        raise ValueError(f"bone_scale must be one of {BONE_SCALE_MODES}, got {mode!r}")
    y = target.detach().to(torch.float64)
    if confidence is None:
        conf = torch.ones(y.shape[:2], dtype=torch.float64)
    else:
        conf = torch.as_tensor(confidence).detach().to(torch.float64)
        if conf.ndim == 1:
            conf = conf[None].expand(y.shape[0], -1)
        if conf.shape != y.shape[:2]:
            raise ValueError(
                f"confidence: expected shape {tuple(y.shape[:2])}, got {tuple(conf.shape)}"
            )
        if not bool(torch.isfinite(conf).all()) or bool((conf < 0).any()):
            raise ValueError("confidence: expected finite weights >= 0")
    missing = ~torch.isfinite(y).all(-1)
    conf = torch.where(missing, torch.zeros_like(conf), conf)
    y = torch.where(missing[..., None], torch.zeros_like(y), y)
    return y, conf


def inverse_kinematics(
    target: Tensor,
    fmt: str | SkeletonFormat = "smpl24",
    *,
    rest_joints: Tensor | None = None,
    confidence: Tensor | None = None,
    bone_scale: str = "per_bone",
    shape_dirs: Tensor | None = None,
    prior: JointPrior | None = None,
    hinges: Mapping[int, Sequence[float]] | None = None,
    iterations: int = 20,
    scale_weight: float = 0.01,
    beta_weight: float = 0.01,
    tol: float = 1e-6,
    chunk: int = 256,
) -> IKResult:
    """SMPL rotations whose joints, mapped to ``fmt``, match ``target`` (module docstring).

    Args:
        target: (B, J, 3) or (J, 3) joints of ``fmt`` in metres; NaN marks a missing joint.
        fmt: a registered format name or :class:`SkeletonFormat` with an SMPL map.
        rest_joints: (24, 3) SMPL rest joints (default: the offline stand-in's).
        confidence: (B, J) or (J,) weights >= 0 of the target joints (default 1).
        bone_scale: ``"none"`` (the rest skeleton as is), ``"uniform"`` (one length factor)
            or ``"per_bone"`` (one factor per bone, pulled to the shared one by
            ``scale_weight`` metres of residual per unit of log scale).
        shape_dirs: (24, 3, nb) per-joint shape directions: also fit ``betas`` (pulled to 0
            by ``beta_weight``).
        prior: per-joint residual of the local rotations (:data:`JointPrior`).
        hinges: SMPL child joint -> flexion axis in its local frame (e.g. knee ``(1, 0, 0)``),
            used to initialise the parent's twist from the grandchild.
        iterations: LM iterations at most; ``tol``: a pose is done when a step lowers its
            cost by less than this fraction; ``chunk``: poses solved together.
    """
    f = get_format(fmt)
    y, conf = _inputs(target, f, confidence, bone_scale)
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if rest_joints is None:
        from posrft.body.standin import standin_rest_joints

        rest_joints = standin_rest_joints()
    rest = torch.as_tensor(rest_joints, dtype=torch.float64)
    if rest.shape != (NUM_JOINTS, 3):
        raise ValueError(f"rest_joints: expected shape (24, 3), got {tuple(rest.shape)}")
    if shape_dirs is not None:
        shape_dirs = torch.as_tensor(shape_dirs, dtype=torch.float64)
        if shape_dirs.ndim != 3 or shape_dirs.shape[:2] != (NUM_JOINTS, 3):
            raise ValueError(f"shape_dirs: expected (24, 3, nb), got {tuple(shape_dirs.shape)}")
    w = torch.as_tensor(f.smpl_matrix(), dtype=torch.float64)
    nb = 0 if shape_dirs is None else shape_dirs.shape[-1]
    parts = [
        _solve(y[i : i + chunk], conf[i : i + chunk], w, rest, shape_dirs, prior, hinges,
               bone_scale, int(iterations), scale_weight, beta_weight, tol)
        for i in range(0, y.shape[0], chunk)
    ]  # fmt: skip
    if not parts:
        z = torch.zeros(0)
        return IKResult(z.reshape(0, 24, 3, 3), z.reshape(0, 3), z.reshape(0, 24),
                        None if shape_dirs is None else z.reshape(0, nb), z.reshape(0, 24, 3),
                        z.reshape(0, f.num_joints, 3), z.reshape(0, f.num_joints), 0)  # fmt: skip

    def cat(name):
        return None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])

    return IKResult(
        rotmats=cat("rotmats"), transl=cat("transl"), bone_scale=cat("bone_scale"),
        betas=cat("betas"), joints=cat("joints"), fitted=cat("fitted"),
        residual=cat("residual"), iterations=max(p.iterations for p in parts),
    )  # fmt: skip


def _solve(y, conf, w, rest, shape_dirs, prior, hinges, mode, iterations, lam_s, lam_b, tol):
    b = y.shape[0]
    known = known_joints(w)
    if mode == "none":
        scale0 = torch.ones(b, dtype=y.dtype)
    else:
        scale0 = initial_scale(y, conf, rest, known)
    nb = 0 if shape_dirs is None else shape_dirs.shape[-1]
    if nb:
        beta0 = initial_betas(y, conf, rest, shape_dirs, known, max(lam_b, 1e-3))
        shaped = rest + torch.einsum("jcn,bn->bjc", shape_dirs, beta0)
        rot, transl = initialise(y, conf, w, shaped, scale0, hinges)
        transl = transl + rest[0] - shaped[:, 0]  # X_0 = J_0 + S_0 beta + t
    else:
        beta0 = torch.zeros(b, 0, dtype=y.dtype)
        rot, transl = initialise(y, conf, w, rest, scale0, hinges)
    sigma0 = scale0.log()
    zeros = torch.zeros(b, NUM_JOINTS, dtype=y.dtype)
    st = _State(rot, transl, sigma0.clone(), zeros, beta0)
    mu = torch.full((b,), 1e-4, dtype=y.dtype)
    active = torch.arange(b)  # poses still improving: later iterations solve only those
    it = 0
    for it in range(1, iterations + 1):
        prob = _Problem(y[active], conf[active], w, rest, shape_dirs, prior, mode, lam_s, lam_b,
                        sigma0[active])  # fmt: skip
        cur = st.index(active)
        h, grad, cost = prob.normal_equations(cur)
        diag = torch.diagonal(h, dim1=1, dim2=2)
        a = h + torch.diag_embed(mu[active, None] * diag + 1e-12)
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):  # not positive definite: damp harder for those poses
            a = a + torch.diag_embed((info != 0)[:, None] * (1e-6 + diag))
            chol, _ = torch.linalg.cholesky_ex(a)
        delta = -torch.cholesky_solve(grad[..., None], chol)[..., 0]
        cand = prob.step(cur, delta)
        new_cost = prob.cost(cand)
        better = torch.isfinite(new_cost) & (new_cost < cost)
        st = st.put(active, cur.take(better, cand))
        m = mu[active]
        mu[active] = torch.where(better, m / 3.0, m * 4.0).clamp(1e-12, 1e10)
        gain = torch.where(better, (cost - new_cost) / cost.clamp_min(1e-300), 0.0)
        done = (better & (gain < tol)) | (new_cost < 1e-20) | (mu[active] >= 1e10)
        active = active[~done]
        if active.numel() == 0:
            break
    prob = _Problem(y, conf, w, rest, shape_dirs, prior, mode, lam_s, lam_b, sigma0)
    _, x, s = prob.forward(st)
    fit = torch.einsum("ik,bkc->bic", w, x)
    res = (fit - y).norm(dim=-1)
    res = torch.where(conf > 0, res, torch.full_like(res, float("nan")))
    s = s.clone()
    s[:, 0] = 1.0
    return IKResult(
        rotmats=st.rot.float(), transl=st.transl.float(), bone_scale=s.float(),
        betas=st.beta.float() if nb else None, joints=x.float(), fitted=fit.float(),
        residual=res.float(), iterations=it,
    )  # fmt: skip
