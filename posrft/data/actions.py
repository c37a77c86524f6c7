"""Procedural skeleton action clips (SkeletonLLM data): SMPL poses -> FK -> SMPL-24 / NTU-25.

A clip of class ``label`` for a :class:`Subject` is made the way a motion-capture clip is:

1. per frame, anatomical joint coordinates (:mod:`posrft.data.limits`) = the standing base pose
   + a per-clip posture jitter (``N(0, 3 deg)`` per body joint, seeded) + the class's scripted
   offsets (:data:`posrft.data.action_motions.MOTIONS`, run at the subject's speed, phase and
   amplitude), clamped to the joint limits and turned into rotation matrices;
2. the root is turned about the vertical by ``heading`` (+ the script's yaw);
3. forward kinematics (:func:`posrft.body.fk.fk_joints`) on the offline stand-in body's rest
   joints (:func:`posrft.data.skeleton.rest_joints`, about 1.7 m) scaled by ``scale`` about the
   pelvis -- every bone length is ``scale`` times the stand-in's;
4. root translation from the feet: each frame is raised so that the lowest of the ankle / foot
   joints touches the ground ``y = 0`` (squats and sitting lower the pelvis, a lunge drops it),
   then lifted by the script's flight height times ``scale`` (jumps, hops); horizontally the
   body moves so that the feet on the ground do not slide (their mean velocity, weighted by
   ``exp(-height / 2 cm)``, is cancelled);
5. i.i.d. ``N(0, noise^2)`` joint noise (metres); other formats via ``from_smpl``.

Axes are posrft.body's: metres, ``y`` up, the body faces ``+z`` at heading 0 with its left on
``+x``; the pelvis starts over the origin. All randomness comes from ``seed`` (and the subject),
so a clip is a pure function of ``(label, fmt, num_frames, seed, subject)``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import roma
import torch
from datasets import Dataset, DatasetDict, Features, Sequence as Seq, Value

from posrft.body.fk import fk_joints
from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS, SkeletonFormat, get_format
from posrft.data.action_classes import (
    ACTION_CLASSES,
    ACTION_INDEX,
    DESCRIPTIONS,
    ActionClass,
    action_names,
    check_class_list,
    class_words,
    mirror_of,
    mirrored_unseen,
    uncovered_words,
    zero_shot_split,
)
from posrft.data.action_motions import BASE_COORDS, MOTIONS, Timing
from posrft.data.limits import clamp_coords, rotmat_from_coords
from posrft.data.loaders.ntu import iter_ntu, load_ntu_skeleton
from posrft.data.prior import single_thread
from posrft.data.skeleton import rest_joints
from posrft.data.synth import SPLITS, load_dataset_dir, save_dataset

logger = logging.getLogger("posrft.data")

__all__ = [
    "ACTION_CLASSES", "ActionClass", "NTU_TO_ACTION", "Subject", "action_names",
    "build_action_dataset", "check_class_list", "check_clip", "class_words", "clips_from_ntu",
    "load_action_clips", "load_action_dataset", "make_clip", "make_clips", "mirror_of",
    "mirrored_unseen", "sample_subject",
    "save_action_dataset", "subject_for", "uncovered_words", "zero_shot_split",
]  # fmt: skip

POSTURE_DEG = 3.0  # std of the per-clip posture jitter of every body joint
CONTACT_M = 0.02  # height scale of the foot-contact weights
_FEET = [SMPL24_JOINTS.index(n) for n in ("left_ankle", "right_ankle", "left_foot", "right_foot")]
_BODY = slice(1, 22)  # joints that get posture jitter: not the root, not the hands


@dataclass(frozen=True)
class Subject:
    """One performer. ``scale``: bone-length factor (1 = the 1.7 m stand-in); ``speed``: tempo
    factor; ``amplitude``: range-of-motion factor; ``noise``: joint noise std (metres);
    ``heading``: facing direction (degrees about ``+y``, 0 faces ``+z``); ``phase`` in [0, 1):
    cycle offset / start delay of the motion."""

    scale: float = 1.0
    speed: float = 1.0
    amplitude: float = 1.0
    noise: float = 0.0
    heading: float = 0.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value):
                raise ValueError(f"Subject.{name} must be finite, got {value!r}")
        for name in ("scale", "speed", "amplitude"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Subject.{name} must be > 0, got {getattr(self, name)!r}")
        if self.noise < 0:
            raise ValueError(f"Subject.noise must be >= 0 (metres), got {self.noise!r}")
        if not 0.0 <= self.phase < 1.0:
            raise ValueError(f"Subject.phase must be in [0, 1), got {self.phase!r}")


def sample_subject(rng: np.random.Generator, max_heading_deg: float = 45.0) -> Subject:
    """A random performer: scale U(0.88, 1.12) (1.5-1.9 m), speed U(0.8, 1.25), amplitude
    U(0.8, 1.15), noise U(0, 8 mm), heading U(-max, max) degrees, phase U(0, 1)."""
    u = rng.uniform(size=6)
    return Subject(
        scale=float(0.88 + 0.24 * u[0]),
        speed=float(0.8 + 0.45 * u[1]),
        amplitude=float(0.8 + 0.35 * u[2]),
        noise=float(0.008 * u[3]),
        heading=float(max_heading_deg * (2.0 * u[4] - 1.0)),
        phase=float(u[5] % 1.0),
    )


def subject_for(seed: int, subject_id: int) -> Subject:
    """Subject ``subject_id`` of the population drawn with ``seed`` (what datasets use)."""
    return sample_subject(np.random.default_rng([int(seed), int(subject_id), 0x5B]))


def _clip_seed(seed: int, subject_id: int, label_id: int) -> int:
    """The seed of one dataset clip (a 32-bit integer, distinct per subject and class)."""
    seq = np.random.SeedSequence([int(seed), int(subject_id), int(label_id)])
    return int(seq.generate_state(1)[0])


def check_clip(
    joints: np.ndarray | torch.Tensor, fmt: str | SkeletonFormat, where: str = "clip"
) -> np.ndarray:
    """``joints`` as a ``(T, J, 3)`` float32 array after checking it against format ``fmt``.

    Raises ``ValueError`` (prefixed with ``where``) for a rank other than 3, a last axis other
    than 3, ``J != fmt.num_joints`` (both numbers and the format named), no frames, or frames
    holding NaN / inf (their indices listed).
    """
    f = get_format(fmt)
    if isinstance(joints, torch.Tensor):
        joints = joints.detach().cpu().numpy()
    a = np.asarray(joints, dtype=np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(
            f"{where}: expected shape (T, J, 3) = (frames, joints, xyz), got {a.shape}"
        )
    if a.shape[1] != f.num_joints:
        raise ValueError(
            f"{where}: has {a.shape[1]} joints per frame but format {f.name!r} has "
            f"{f.num_joints}"
        )
    if a.shape[0] == 0:
        raise ValueError(f"{where}: has no frames (T = 0)")
    bad = np.flatnonzero(~np.isfinite(a).all(axis=(1, 2)))
    if bad.size:
        shown = bad[:20].tolist()
        more = f" (and {bad.size - 20} more)" if bad.size > 20 else ""
        raise ValueError(f"{where}: frames {shown}{more} contain NaN or inf values")
    return a


def _label_id(label: str) -> int:
    if label not in ACTION_INDEX:
        check_class_list([label])  # raises with close matches
    return ACTION_INDEX[label]


def _ground(joints: torch.Tensor, lift: torch.Tensor) -> torch.Tensor:
    """Root translation of step 4 (module doc) for ``joints`` (N, T, 24, 3), ``lift`` (N, T)."""
    feet = joints[:, :, _FEET]  # (N, T, 4, 3)
    low = feet[..., 1].amin(-1)  # (N, T)
    w = torch.exp(-(feet[..., 1] - low[..., None]) / CONTACT_M)  # (N, T, 4)
    vel = feet[:, 1:, :, [0, 2]] - feet[:, :-1, :, [0, 2]]  # (N, T-1, 4, 2)
    w_mid = w[:, 1:]
    slide = (w_mid[..., None] * vel).sum(2) / w_mid.sum(2)[..., None]  # (N, T-1, 2)
    xz = torch.cat([slide.new_zeros(slide.shape[0], 1, 2), -slide.cumsum(1)], 1)
    return torch.stack([xz[..., 0], lift - low, xz[..., 1]], -1)  # (N, T, 3)


def make_clips(
    labels: Sequence[str],
    subjects: Sequence[Subject],
    seeds: Sequence[int],
    *,
    fmt: str | SkeletonFormat = "smpl24",
    num_frames: int = 48,
) -> np.ndarray:
    """``N`` clips at once (one FK call): ``(N, T, J, 3)`` float32, ``J`` of ``fmt``.

    Clip ``i`` equals ``make_clip(labels[i], fmt=fmt, num_frames=num_frames, seed=seeds[i],
    subject=subjects[i])``.
    """
    if not (len(labels) == len(subjects) == len(seeds)):
        raise ValueError(
            f"labels, subjects and seeds need one entry per clip, got {len(labels)}, "
            f"{len(subjects)} and {len(seeds)}"
        )
    if int(num_frames) != num_frames or num_frames < 2:
        raise ValueError(f"num_frames must be an integer >= 2, got {num_frames!r}")
    f = get_format(fmt)
    if f.smpl_map is None:
        raise ValueError(f"format {f.name!r} has no mapping from SMPL joints; clips need one")
    n, t = len(labels), int(num_frames)
    if n == 0:
        return np.zeros((0, t, f.num_joints, 3), np.float32)
    tau = np.linspace(0.0, 1.0, t)
    coords = np.empty((n, t, 24, 3))
    yaw, lift = np.empty((n, t)), np.empty((n, t))
    noise_std = np.empty(n)
    rngs = []
    for i, (label, subj, seed) in enumerate(zip(labels, subjects, seeds)):
        rng = np.random.default_rng([int(seed), _label_id(label)])
        posture = np.zeros((24, 3))
        posture[_BODY] = rng.normal(0.0, POSTURE_DEG, size=(21, 3))
        m = MOTIONS[label](Timing(tau, subj.speed, subj.phase, subj.amplitude))
        coords[i] = BASE_COORDS + posture + m.coords
        yaw[i] = subj.heading + m.yaw
        lift[i] = m.lift * subj.scale
        noise_std[i] = subj.noise
        rngs.append(rng)
    with single_thread():
        c = clamp_coords(torch.deg2rad(torch.from_numpy(coords).float()))
        rot = rotmat_from_coords(c).reshape(n * t, 24, 3, 3)
        turn = roma.rotvec_to_rotmat(
            torch.from_numpy(np.deg2rad(yaw)).float().reshape(-1, 1) * torch.tensor([0.0, 1.0, 0.0])
        )
        rot = torch.cat([(turn @ rot[:, 0])[:, None], rot[:, 1:]], 1)
        scale = torch.tensor([s.scale for s in subjects], dtype=torch.float32)
        rest = rest_joints(torch.float32)[None] * scale[:, None, None]  # (N, 24, 3)
        rest = rest.repeat_interleave(t, 0)  # (N*T, 24, 3)
        joints = fk_joints(rot, rest, SMPL24_PARENTS).reshape(n, t, 24, 3)
        joints = joints + _ground(joints, torch.from_numpy(lift).float())[:, :, None]
        out = joints.numpy()
        for i, rng in enumerate(rngs):  # noise after the clean clip: same draws for any fmt
            if noise_std[i] > 0:
                out[i] += rng.normal(0.0, noise_std[i], size=out[i].shape).astype(np.float32)
        if f.name != "smpl24":
            out = f.from_smpl(torch.from_numpy(out)).numpy()
    return np.ascontiguousarray(out, dtype=np.float32)


def make_clip(
    label: str,
    *,
    fmt: str | SkeletonFormat = "smpl24",
    num_frames: int = 48,
    seed: int = 0,
    subject: Subject | None = None,
) -> np.ndarray:
    """One clip ``(T, J, 3)`` float32 in metres (module doc). ``subject=None`` draws one from
    ``seed`` (``subject_for(seed, 0)``); unknown labels raise ``ValueError``."""
    _label_id(label)
    subject = subject_for(seed, 0) if subject is None else subject
    return make_clips([label], [subject], [seed], fmt=fmt, num_frames=num_frames)[0]


# -------------------------------------------------------------------------------------- dataset


def _features() -> Features:
    subject = {k: Value("float64") for k in Subject.__dataclass_fields__}
    return Features({
        "joints": Seq(Seq(Seq(Value("float32"), length=3))),
        "format": Value("string"),
        "label": Value("string"),
        "label_id": Value("int64"),
        "description": Value("string"),
        "subject_id": Value("int64"),
        "seed": Value("int64"),
        "subject": subject,
    })  # fmt: skip


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= v < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise ValueError(
            f"n_per_class={n} with val_fraction={val_fraction} and test_fraction="
            f"{test_fraction} leaves no training subject; use more clips or smaller fractions"
        )
    for name, v, k in (("val_fraction", val_fraction, n_val), ("test_fraction", test_fraction, n_test)):
        if v > 0 and k == 0:  # an empty split breaks datasets.load_from_disk later, far from here
            raise ValueError(
                f"{name}={v} of n_per_class={n} subjects rounds to 0: that split would be empty; "
                f"use at least {math.floor(0.5 / v) + 1} subjects or {name}=0"
            )
    return n - n_val - n_test, n_val, n_test


def build_action_dataset(
    n_per_class: int,
    *,
    formats: Sequence[str] = ("smpl24",),
    num_frames: int = 48,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DatasetDict:
    """Clips of ``n_per_class`` subjects performing every class, split by subject.

    Subject ``k`` (:func:`subject_for(seed, k) <subject_for>`) performs each class once; subjects
    ``[0, n_train)`` go to ``train``, the next ``n_val`` to ``val``, the rest to ``test``
    (cross-subject: no performer is in two splits). Each clip appears once per format.

    Columns: ``joints`` (T, J, 3) float32 nested lists, ``format``, ``label``, ``label_id``
    (index in :data:`ACTION_CLASSES`, also for a class subset), ``description``,
    ``subject_id``, ``seed`` (the clip seed) and ``subject`` (the :class:`Subject` fields), so
    ``make_clip(label, fmt=format, num_frames=T, seed=seed, subject=Subject(**subject))``
    reproduces a row exactly.
    """
    if int(n_per_class) != n_per_class or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    names = action_names() if classes is None else check_class_list(classes)
    fmts = [get_format(f) for f in ([formats] if isinstance(formats, str) else formats)]
    if not fmts:
        raise ValueError("formats is empty: expected at least one skeleton format name")
    counts = _split_counts(int(n_per_class), val_fraction, test_fraction)
    dd, first = {}, 0
    for split, count in zip(SPLITS, counts):
        subj_ids = range(first, first + count)
        first += count
        subjects = {k: subject_for(seed, k) for k in subj_ids}
        meta = [(k, name) for k in subj_ids for name in names]
        seeds = [_clip_seed(seed, k, ACTION_INDEX[name]) for k, name in meta]
        rows: dict[str, list] = {k: [] for k in _features()}
        for f in fmts:
            clips = make_clips([m[1] for m in meta], [subjects[m[0]] for m in meta], seeds,
                               fmt=f, num_frames=num_frames) if meta else []  # fmt: skip
            for (k, name), clip_seed, clip in zip(meta, seeds, clips):
                rows["joints"].append(clip)  # ndarray: faster into Arrow than nested lists
                rows["format"].append(f.name)
                rows["label"].append(name)
                rows["label_id"].append(ACTION_INDEX[name])
                rows["description"].append(DESCRIPTIONS[name])
                rows["subject_id"].append(k)
                rows["seed"].append(clip_seed)
                rows["subject"].append(asdict(subjects[k]))
        dd[split] = Dataset.from_dict(rows, features=_features())
    return DatasetDict(dd)


def save_action_dataset(ds: DatasetDict, out_dir: str | os.PathLike) -> Path:
    """Write ``ds`` atomically (:func:`posrft.data.synth.save_dataset`); return the folder."""
    return save_dataset(ds, out_dir)


def load_action_dataset(path: str | os.PathLike) -> DatasetDict:
    """Load a folder written by :func:`save_action_dataset` (clear error if it is not one)."""
    return load_dataset_dir(path)


def load_action_clips(ds_split: Dataset, fmt: str | None = None) -> tuple[np.ndarray, list[str]]:
    """``(N, T, J, 3)`` float32 clips and their labels from one split.

    ``fmt`` keeps only rows of that format; without it all rows must share one format.
    """
    if fmt is not None:
        name = get_format(fmt).name
        ds_split = ds_split.filter(lambda f: f == name, input_columns="format")
    present = sorted(set(ds_split["format"]))
    if len(present) > 1:
        raise ValueError(
            f"split holds clips of several formats {present}; pass fmt= to pick one"
        )
    if not present:
        return np.zeros((0, 0, 0, 3), np.float32), []
    data = ds_split.with_format("numpy", columns=["joints"])["joints"]
    clips = [check_clip(np.stack([np.stack(f) for f in c]) if c.dtype == object else c,
                        present[0], where=f"row {i}") for i, c in enumerate(data)]  # fmt: skip
    lengths = sorted({c.shape[0] for c in clips})
    if len(lengths) > 1:
        raise ValueError(f"clips have different frame counts {lengths}; cannot stack them")
    return np.stack(clips), list(ds_split["label"])


# ------------------------------------------------------------------------------------ real NTU

#: NTU RGB+D action ids (1-based, ``Aaaa`` of the file name) that are one of our classes.
NTU_TO_ACTION: dict[int, str] = {8: "sit down", 9: "stand up", 10: "clap hands", 27: "jump up"}
_NTU = {n: i for i, n in enumerate(get_format("ntu25").joint_names)}
_NTU_FEET = [_NTU[n] for n in ("left_ankle", "right_ankle", "left_foot", "right_foot")]


def canonical_ntu(joints: np.ndarray) -> np.ndarray:
    """Put a Kinect clip ``(T, 25, 3)`` in the synthetic clips' frame: turned about ``y`` so the
    first frame's hip line (right -> left hip) points along ``+x`` (the body faces ``+z``),
    ``spine_base`` of the first frame over the origin, the lowest foot joint of the clip at
    ``y = 0``. Kinect camera space is right-handed with ``y`` up like ours."""
    j = np.asarray(joints, dtype=np.float64)
    j = j - np.array([j[0, 0, 0], 0.0, j[0, 0, 2]])
    hip = j[0, _NTU["left_hip"]] - j[0, _NTU["right_hip"]]
    a = math.atan2(hip[2], hip[0])
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # rotation by a about +y
    j = j @ rot.T
    j[..., 1] -= j[:, _NTU_FEET, 1].min()
    return j.astype(np.float32)


def clips_from_ntu(
    path_or_dir: str | os.PathLike,
    *,
    canonical: bool = True,
    skip: Iterable[str] = (),
    names: Mapping[int, str] | None = None,
) -> list[tuple[np.ndarray, str]]:
    """Real NTU RGB+D ``.skeleton`` files -> ``[(joints (T, 25, 3) float32, label), ...]``.

    ``path_or_dir`` is one file or a folder (every ``*.skeleton``, sorted, minus ``skip``;
    :func:`posrft.data.loaders.ntu.iter_ntu`). The most active body is kept (frames where it is
    absent are dropped; a file with no body at all is skipped with a warning). Labels:
    ``names`` (default :data:`NTU_TO_ACTION`) maps the file name's action id to a class name,
    otherwise ``"A%03d"``; ``"unknown"`` when the name is not ``SsssCcccPpppRrrrAaaa``.
    ``canonical`` applies :func:`canonical_ntu` (else Kinect camera space).
    """
    names = NTU_TO_ACTION if names is None else names
    p = Path(path_or_dir)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such NTU .skeleton file or folder")
    skels = [load_ntu_skeleton(p, max_bodies=1)] if p.is_file() else iter_ntu(p, skip, 1)
    out = []
    for sk in skels:
        if sk.num_bodies == 0 or not sk.present[0].any():
            logger.warning("%s: no body in any frame; skipped", sk.path)
            continue
        joints = check_clip(sk.joints[0][sk.present[0]], "ntu25", where=str(sk.path))
        if canonical:
            joints = canonical_ntu(joints)
        action = sk.sample.action if sk.sample is not None else None
        label = "unknown" if action is None else names.get(action, f"A{action:03d}")
        out.append((joints, label))
    return out
