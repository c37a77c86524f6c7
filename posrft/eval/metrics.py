"""Evaluation metrics shared by the rewards and the evaluation suite (math in one place).

3D joint errors
---------------
For predicted and ground-truth joints ``P, G`` of shape ``(B, J, 3)`` and an alignment ``A``:

    MPJPE_b = 1/|S| Σ_{j∈S} ‖A(P_b)_j − G'_b,j‖₂          (in the units of the input)

over a joint subset ``S`` (default: all ``J``), where

* ``align="pelvis"``: ``A(P) = P − P_root``, ``G' = G − G_root`` (root-relative; the usual
  "MPJPE");
* ``align="procrustes"``: ``A(P) = s R P + t`` with ``(s, R, t)`` the least-squares similarity
  transform of ``P`` onto ``G`` over the joints of ``S`` (Umeyama, via
  ``roma.rigid_points_registration(..., compute_scaling=True)``; ``R`` is a proper rotation),
  ``G' = G`` ("PA-MPJPE");
* ``align="none"``: ``A(P) = P``, ``G' = G``.

:func:`pose_errors_mm` reports the batch means in millimetres for joints given in metres.

Retrieval recalls
-----------------
For ``N`` paired text / pose embeddings (row ``i`` of each is a pair) and a similarity matrix
``S = T Pᵀ``, text→pose recall@k is the fraction of texts whose own pose is among the ``k`` most
similar poses (ties counted against the query: rank = #{poses scoring strictly higher} +
#{others scoring equal}); pose→text uses ``Sᵀ``. "Pool" recalls rank each query among its own
pair and ``pool − 1`` other items drawn at random (seeded) instead of all ``N``.
mRecall is the mean of all reported recalls.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import roma
import torch
from torch import Tensor

Align = Literal["pelvis", "procrustes", "none"]
ALIGNMENTS: tuple[str, ...] = ("pelvis", "procrustes", "none")

__all__ = [
    "ALIGNMENTS",
    "align_joints",
    "joint_errors",
    "mpjpe",
    "pa_mpjpe",
    "pose_errors_mm",
    "procrustes_align",
    "recall_at_k",
    "retrieval_recalls",
    "pool_recall_at_k",
]


def _check_joints(pred: Tensor, gt: Tensor) -> None:
    if not isinstance(pred, Tensor) or not isinstance(gt, Tensor):
        raise TypeError("pred and gt must be torch tensors of shape (B, J, 3)")
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must both be (B, J, 3) and equal; got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}"
        )


def procrustes_align(pred: Tensor, gt: Tensor) -> Tensor:
    """``s R pred + t`` (B, J, 3): the similarity transform of ``pred`` that best fits ``gt``
    in least squares (Umeyama; proper rotation, positive scale)."""
    _check_joints(pred, gt)
    rot, trans, scale = roma.rigid_points_registration(pred, gt, compute_scaling=True)
    return scale[:, None, None] * (pred @ rot.transpose(-1, -2)) + trans[:, None, :]


def align_joints(
    pred: Tensor, gt: Tensor, align: Align = "pelvis", root: int = 0
) -> tuple[Tensor, Tensor]:
    """Apply the alignment of the module docstring; returns ``(A(pred), G')``, both (B, J, 3)."""
    _check_joints(pred, gt)
    if align == "pelvis":
        return pred - pred[:, root : root + 1], gt - gt[:, root : root + 1]
    if align == "procrustes":
        return procrustes_align(pred, gt), gt
    if align == "none":
        return pred, gt
    raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")


def _subset(x: Tensor, joints: Sequence[int] | Tensor | None) -> Tensor:
    if joints is None:
        return x
    idx = torch.as_tensor(joints, dtype=torch.long, device=x.device)
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(f"joints must be a non-empty list of joint indices, got {joints!r}")
    if int(idx.min()) < 0 or int(idx.max()) >= x.shape[1]:
        raise ValueError(f"joints {idx.tolist()} out of range for {x.shape[1]} joints")
    return x.index_select(1, idx)


def joint_errors(
    pred: Tensor,
    gt: Tensor,
    align: Align = "pelvis",
    joints: Sequence[int] | Tensor | None = None,
    root: int = 0,
) -> Tensor:
    """Per-joint Euclidean errors ``(B, |S|)`` after alignment (module docstring).

    For ``"procrustes"`` the transform is fitted on the subset ``S`` only.
    """
    _check_joints(pred, gt)
    if align == "procrustes":
        pred, gt = _subset(pred, joints), _subset(gt, joints)
        a, g = align_joints(pred, gt, "procrustes")
    else:
        a, g = align_joints(pred, gt, align, root)
        a, g = _subset(a, joints), _subset(g, joints)
    return (a - g).norm(dim=-1)


def mpjpe(
    pred: Tensor,
    gt: Tensor,
    align: Align = "pelvis",
    joints: Sequence[int] | Tensor | None = None,
    root: int = 0,
) -> Tensor:
    """Mean per-joint position error per sample ``(B,)``, in the units of the input."""
    return joint_errors(pred, gt, align, joints, root).mean(dim=-1)


def pa_mpjpe(pred: Tensor, gt: Tensor, joints: Sequence[int] | Tensor | None = None) -> Tensor:
    """Procrustes-aligned MPJPE per sample ``(B,)``, in the units of the input."""
    return mpjpe(pred, gt, "procrustes", joints)


def pose_errors_mm(
    pred: Tensor, gt: Tensor, joints: Sequence[int] | Tensor | None = None
) -> dict[str, float]:
    """Batch means ``{"mpjpe_mm", "pa_mpjpe_mm"}`` for joints ``(B, J, 3)`` in metres."""
    pred, gt = pred.double(), gt.double()
    return {
        "mpjpe_mm": float(mpjpe(pred, gt, "pelvis", joints).mean()) * 1000.0,
        "pa_mpjpe_mm": float(pa_mpjpe(pred, gt, joints).mean()) * 1000.0,
    }


# ----------------------------------------------------------------------------- retrieval


def _ranks(sim: Tensor, target: Tensor) -> Tensor:
    """Rank (0 = best) of column ``target[i]`` in row ``i`` of ``sim`` (Q, M); ties count
    against the query (pessimistic), so a constant similarity never scores."""
    own = sim.gather(1, target[:, None])
    higher = (sim > own).sum(1)
    ties = (sim == own).sum(1) - 1
    return higher + ties


def recall_at_k(sim: Tensor, ks: Iterable[int], target: Tensor | None = None) -> dict[int, float]:
    """Recall@k of queries (rows of ``sim`` (Q, M)) whose correct item is ``target[i]``
    (default ``i``): the fraction ranked within the top ``k``."""
    if sim.ndim != 2:
        raise ValueError(f"sim must be (queries, items), got {tuple(sim.shape)}")
    if target is None:
        if sim.shape[0] > sim.shape[1]:
            raise ValueError(f"sim {tuple(sim.shape)}: more queries than items needs a target")
        target = torch.arange(sim.shape[0], device=sim.device)
    ranks = _ranks(sim, target)
    return {int(k): float((ranks < k).float().mean()) for k in ks}


def pool_recall_at_k(
    sim: Tensor, ks: Iterable[int], pool: int = 32, seed: int = 0
) -> dict[int, float]:
    """Recall@k of each query ``i`` against its own item and ``pool − 1`` others drawn
    uniformly without replacement (seeded, independent per query) from the ``N − 1`` others."""
    n = sim.shape[0]
    if sim.shape != (n, n):
        raise ValueError(f"pool recall needs a square similarity matrix, got {tuple(sim.shape)}")
    if not 2 <= pool <= n:
        raise ValueError(f"pool must be in [2, N={n}], got {pool}")
    gen = torch.Generator().manual_seed(int(seed))
    # pool-1 distinct others per row: the smallest of random keys, own index excluded
    keys = torch.rand(n, n, generator=gen)
    keys.fill_diagonal_(2.0)
    others = keys.topk(pool - 1, dim=1, largest=False).indices.to(sim.device)
    cols = torch.cat([torch.arange(n, device=sim.device)[:, None], others], dim=1)
    sub = sim.gather(1, cols)  # own item in column 0
    return recall_at_k(sub, ks, target=torch.zeros(n, dtype=torch.long, device=sim.device))


def retrieval_recalls(
    text_emb: Tensor,
    pose_emb: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    pool: int | None = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Recalls in both directions for paired embeddings ``(N, D)`` (cosine similarity).

    Keys: ``t2p_R@k``, ``p2t_R@k`` (full set), ``t2p_pool{pool}_R@k``, ``p2t_pool{pool}_R@k``
    (random pools, only if ``pool`` and ``N >= pool``), ``mRecall`` (mean of them all) and
    ``mRecall_full`` (mean of the full-set recalls only, PoseScript's mRecall when
    ``ks = (5, 10, 20)``); values are fractions in [0, 1].
    """
    if text_emb.shape != pose_emb.shape or text_emb.ndim != 2:
        raise ValueError(
            f"text_emb and pose_emb must be equal (N, D), got {tuple(text_emb.shape)} and "
            f"{tuple(pose_emb.shape)}"
        )
    t = torch.nn.functional.normalize(text_emb.double(), dim=-1)
    p = torch.nn.functional.normalize(pose_emb.double(), dim=-1)
    sim = t @ p.T
    out: dict[str, float] = {}
    for name, s in (("t2p", sim), ("p2t", sim.T)):
        for k, v in recall_at_k(s, ks).items():
            out[f"{name}_R@{k}"] = v
    if pool is not None and sim.shape[0] >= pool:
        for name, s in (("t2p", sim), ("p2t", sim.T)):
            for k, v in pool_recall_at_k(s, ks, pool, seed).items():
                out[f"{name}_pool{pool}_R@{k}"] = v
    full = [v for k, v in out.items() if "pool" not in k]
    out["mRecall"] = sum(out.values()) / len(out)
    out["mRecall_full"] = sum(full) / len(full)
    return out
