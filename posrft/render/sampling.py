"""Input checking and temporal sampling of skeleton clips for the renderer.

Layout accepted by :class:`posrft.render.DrAction`: ``(B, T, J, 3)`` (one person) or
``(B, P, T, J, 3)`` with ``P`` people rendered into the same frames (``P <= max_people``),
in metres.  Optional ``lengths (B,)`` gives each clip's number of valid frames (padding after
it is ignored).  A person ``p >= 1`` whose joints are all exactly zero over the valid frames is
absent (the NTU convention for a missing second actor) unless ``person_mask (B, P)`` says
otherwise; person 0 is always present.

Temporal sampling to ``T'`` frames: clip ``b`` of length ``L`` is split into ``T'`` equal
segments and frame ``k`` is ``floor((k + u) L / T')`` with ``u = 0.5`` (segment middle) in
evaluation and ``u ~ U[0, 1)`` per segment in training; ``L < T'`` repeats frames.
"""

from __future__ import annotations

import numpy as np
import torch

from posrft.body.formats import SkeletonFormat


def as_clip_tensor(
    joints: torch.Tensor | np.ndarray, fmt: SkeletonFormat, max_people: int, dtype: torch.dtype
) -> torch.Tensor:
    """Validate the shape and return ``(B, P, T, J, 3)`` in ``dtype``."""
    if isinstance(joints, np.ndarray):
        joints = torch.from_numpy(joints)
    if not isinstance(joints, torch.Tensor):
        raise ValueError(f"joints must be a tensor or numpy array, got {type(joints).__name__}")
    if joints.ndim == 4:
        joints = joints.unsqueeze(1)
    elif joints.ndim != 5:
        raise ValueError(
            f"joints must be (B, T, J, 3) or (B, P, T, J, 3), got shape {tuple(joints.shape)}"
        )
    B, P, T = joints.shape[:3]
    if B == 0:
        raise ValueError(f"joints {tuple(joints.shape)}: empty batch (B=0)")
    if T == 0:
        raise ValueError(f"joints {tuple(joints.shape)}: empty sequence (T=0 frames)")
    if P == 0 or P > max_people:
        raise ValueError(f"joints {tuple(joints.shape)}: P={P} people, expected 1..{max_people}")
    fmt.check_joints(joints, "joints")
    if not (joints.is_floating_point() or joints.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"joints must be a real-valued tensor, got dtype {joints.dtype}")
    return joints.to(dtype)


def check_lengths(lengths, batch: int, frames: int, device) -> torch.Tensor:
    """``(B,)`` long valid-frame counts in ``[1, T]`` (default: all ``T``)."""
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.is_floating_point():
        raise ValueError(
            f"lengths must be ({batch},) integers, got {tuple(lengths.shape)} {lengths.dtype}"
        )
    bad = (lengths < 1) | (lengths > frames)
    if bad.any():
        b = int(bad.nonzero()[0])
        raise ValueError(f"lengths[{b}] = {int(lengths[b])} is outside [1, T={frames}]")
    return lengths.long()


def frame_valid(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, T)`` bool: frame ``t`` is inside clip ``b``."""
    return torch.arange(frames, device=lengths.device)[None] < lengths[:, None]


def check_finite(joints: torch.Tensor, valid: torch.Tensor, person_mask: torch.Tensor) -> None:
    """Raise naming the first (sample, person, frame, joint) with a NaN/inf among used joints."""
    used = valid[:, None, :] & person_mask[:, :, None]  # (B, P, T)
    bad = ~torch.isfinite(joints).all(-1) & used[..., None]
    if bad.any():
        b, p, t, j = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"joints contain NaN/inf at sample {b}, person {p}, frame {t}, joint {j} "
            f"(value {joints[b, p, t, j].tolist()})"
        )


def default_person_mask(
    joints: torch.Tensor, valid: torch.Tensor, person_mask=None
) -> torch.Tensor:
    """``(B, P)`` bool presence (see the module docstring)."""
    B, P = joints.shape[:2]
    if person_mask is not None:
        mask = torch.as_tensor(person_mask, device=joints.device)
        if mask.shape != (B, P):
            raise ValueError(f"person_mask must be ({B}, {P}), got {tuple(mask.shape)}")
        mask = mask.bool()
        if not mask.any(1).all():
            b = int((~mask.any(1)).nonzero()[0])
            raise ValueError(f"person_mask[{b}] marks every person absent; nothing to render")
        return mask
    used = valid[:, None, :, None, None]
    nonzero = ((joints != 0) & used).flatten(2).any(-1)  # NaN != 0 counts as present
    nonzero[:, 0] = True
    return nonzero


def segment_indices(
    lengths: torch.Tensor,
    num_frames: int,
    *,
    random: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(B, T')`` frame indices, one per segment (see the module docstring)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    B = lengths.shape[0]
    k = torch.arange(num_frames, dtype=torch.float64)
    if random:
        u = torch.rand(B, num_frames, generator=generator, dtype=torch.float64)
    else:
        u = torch.full((B, num_frames), 0.5, dtype=torch.float64)
    L = lengths.cpu().to(torch.float64)[:, None]
    idx = torch.floor((k + u) * L / num_frames).long()
    return torch.minimum(idx, lengths.cpu()[:, None] - 1).to(lengths.device)


def gather_frames(joints: torch.Tensor, index: torch.Tensor, lengths: torch.Tensor):
    """Sampled joints and their velocities, both ``(B, P, T', J, 3)``.

    Velocity is the central difference ``(X[t+1] - X[t-1]) / 2`` in metres per frame, one-sided
    at the clip ends and zero for a one-frame clip.
    """
    B, P, T, J, _ = joints.shape
    hi = torch.minimum(index + 1, lengths[:, None] - 1)
    lo = torch.clamp(index - 1, min=0)

    def take(ix):
        ix = ix[:, None, :, None, None].expand(B, P, ix.shape[1], J, 3)
        return torch.gather(joints, 2, ix)

    span = (hi - lo).clamp(min=1).to(joints.dtype)[:, None, :, None, None]
    return take(index), (take(hi) - take(lo)) / span
