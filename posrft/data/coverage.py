"""How well a pose prior covers motion it was not drawn from: nearest-neighbour MPJPE.

Held-out set (:func:`heldout_action_poses`): frames of the procedural action clips of
:mod:`posrft.data.actions` -- 37 scripted classes (jump, squat, sit down / stand up, bow,
lunge, kick, punch, hop, touch toes, ...), each performed by ``subjects`` performers with the
stand-in's bone lengths (scale 1, no joint noise, so the skeleton is the prior's) and random
tempo, amplitude, phase and heading, ``frames`` frames per clip evenly spaced in time. The
clips are joint-angle scripts with their own timing, so most frames lie *between* postures
(a jump's crouch, push-off, flight and landing; a half-way squat), which is what the prior
has to cover; they are not drawn from the prior's sampler.

Distance: MPJPE (mm) after turning each pose to face +z (:func:`posecodes.body_frame`) and
centring the pelvis. :func:`coverage` reports, against ``N`` prior poses, the held-out set's
nearest-neighbour MPJPE (median, mean, 90th percentile), the prior's own nearest-neighbour
MPJPE (each of ``M`` prior poses against the other prior poses), the fraction of held-out poses
farther than the prior's own 90th percentile, the median per action class, and which prior
family is nearest. Every clip starts and ends in (or passes through) the standing base pose of
:data:`posrft.data.action_motions.BASE_COORDS`, which any prior covers; the figures are also
given for the *moving* frames alone, those more than ``MOVING_MM`` from that pose.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import torch

from posrft.data.action_motions import BASE_COORDS
from posrft.data.actions import _clip_seed, action_names, make_clips, subject_for
from posrft.data.limits import pose_from_coords
from posrft.data.posecodes import body_frame
from posrft.data.prior import single_thread
from posrft.data.skeleton import pose_joints

MOVING_MM = 100.0


def heldout_action_poses(subjects: int = 6, frames: int = 24, seed: int = 2024
                         ) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """Held-out joints (N, 24, 3) float32 and their class labels (module docstring)."""
    names = action_names()
    subj, labels, seeds = [], [], []
    for k in range(subjects):
        base = replace(subject_for(seed, k), scale=1.0, noise=0.0)
        for name in names:
            subj.append(base)
            labels.append(name)
            seeds.append(_clip_seed(seed, k, names.index(name)))
    clips = make_clips(labels, subj, seeds, fmt="smpl24", num_frames=frames)
    return clips.reshape(-1, 24, 3), [lab for lab in labels for _ in range(frames)]


def canonical(joints: np.ndarray) -> np.ndarray:
    """(B, 24, 3) facing +z with the pelvis at the origin (float64)."""
    j = body_frame(np.asarray(joints, dtype=np.float64))
    return j - j[:, :1]


def nearest_mpjpe(query: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False,
                  chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Nearest neighbour under MPJPE of canonical poses ``query`` (Q, 24, 3) in ``reference``
    (N, 24, 3), by brute force in float32 chunks (exact up to float32 rounding). Returns
    ``(distance_mm (Q,), index (Q,))``. ``exclude_self``: query ``i`` is reference ``i`` and
    is skipped."""
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    r = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    dists, idxs = [], []
    with single_thread():
        for s in range(0, len(q), chunk):
            qq = q[s : s + chunk]
            d = (qq[:, None] - r[None]).norm(dim=-1).mean(-1)  # (q, N) MPJPE in metres
            if exclude_self:
                d[torch.arange(len(qq)), torch.arange(s, s + len(qq))] = float("inf")
            best = d.min(1)
            dists.append(best.values.double() * 1000.0)
            idxs.append(best.indices)
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy()


def coverage(prior_joints: np.ndarray, prior_family: list[str], heldout: np.ndarray,
             labels: list[str], self_queries: int = 2000,
             fixed_mm: float | None = None) -> dict:  # fmt: skip
    """The coverage figures of the module docstring (all distances in mm); ``fixed_mm``: also
    the fraction of held-out poses farther than this (one threshold to compare two priors)."""
    ref = canonical(prior_joints)
    held = canonical(heldout)
    d, idx = nearest_mpjpe(held, ref)
    m = min(self_queries, len(ref))
    d_self, _ = nearest_mpjpe(ref[:m], ref, exclude_self=True)
    p90_self = float(np.percentile(d_self, 90))
    per_class = {}
    for name in dict.fromkeys(labels):
        sel = np.array([lab == name for lab in labels])
        per_class[name] = float(np.median(d[sel]))
    nearest_family = Counter(prior_family[i] for i in idx)
    jump = np.array([lab == "jump up" for lab in labels])
    base = pose_from_coords(torch.deg2rad(torch.from_numpy(BASE_COORDS))).reshape(1, 72)
    stand = canonical(pose_joints(base).numpy())
    moving = np.linalg.norm(held - stand, axis=-1).mean(-1) * 1000.0 > MOVING_MM
    dm = d[moving]
    return {
        "prior_poses": len(ref), "heldout_poses": len(held),
        "nn_mm_median": float(np.median(d)), "nn_mm_mean": float(d.mean()),
        "nn_mm_p90": float(np.percentile(d, 90)),
        "self_nn_mm_median": float(np.median(d_self)), "self_nn_mm_p90": p90_self,
        "frac_beyond_self_p90": float((d > p90_self).mean()),
        "moving_poses": int(moving.sum()), "moving_nn_mm_median": float(np.median(dm)),
        "moving_nn_mm_mean": float(dm.mean()), "moving_nn_mm_p90": float(np.percentile(dm, 90)),
        "moving_frac_beyond_self_p90": float((dm > p90_self).mean()),
        **({} if fixed_mm is None else {
            "fixed_mm": float(fixed_mm), "frac_beyond_fixed": float((d > fixed_mm).mean()),
            "moving_frac_beyond_fixed": float((dm > fixed_mm).mean())}),
        "per_class_median_mm": dict(sorted(per_class.items(), key=lambda x: -x[1])),
        "nearest_family": dict(nearest_family.most_common()),
        "jump_nearest_family": dict(Counter(prior_family[i] for i in idx[jump]).most_common()),
    }  # fmt: skip
