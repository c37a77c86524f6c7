"""Registry of skeleton formats: joint names, bones, kinematic parents, and maps from SMPL joints.

A :class:`SkeletonFormat` is pure topology. The renderer (DrAction) only needs ``bones``; datasets
and metrics use ``parents`` (when the format is a tree) and :meth:`SkeletonFormat.from_smpl`,
which turns SMPL-24 joints into the format's joints with a fixed linear map

    X_fmt = W @ X_smpl,      W: (J_fmt, 24), rows sum to 1,

so that every converted joint is an affine combination of SMPL joints (translation-equivariant).
Where a format's joint has no SMPL counterpart (Kinect hand tips, COCO face points) the row
extrapolates along the nearest bone and the joint is listed in ``approximate``.

Built-ins: ``smpl24``, ``smpl22`` (body only, no hands), ``h36m17``, ``coco17`` and ``ntu25``
(Kinect v2). Arbitrary topologies come from :func:`custom_format`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

SMPL24_JOINTS: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
SMPL24_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)  # fmt: skip

_S = {name: i for i, name in enumerate(SMPL24_JOINTS)}


def _bones_from_parents(parents: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((p, j) for j, p in enumerate(parents) if p >= 0)


@dataclass(frozen=True)
class SkeletonFormat:
    """One skeleton topology.

    Attributes:
        name: registry key, e.g. ``"ntu25"``.
        joint_names: ``J`` names; ``left_*``/``right_*`` pairs define :attr:`flip_pairs`.
        bones: ``(parent_or_a, child_or_b)`` joint-index pairs; need not form a tree.
        parents: kinematic parent per joint (``-1`` for the root) when the format is a tree.
        smpl_map: per joint, ``{smpl_joint_name: weight}`` (weights sum to 1), or ``None``
            when the format has no defined relation to SMPL.
        approximate: joints whose SMPL map is an extrapolation rather than a correspondence.
    """

    name: str
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]
    parents: tuple[int, ...] | None = None
    smpl_map: tuple[Mapping[str, float], ...] | None = None
    approximate: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        j = len(self.joint_names)
        if j == 0:
            raise ValueError(f"format {self.name!r}: joint_names is empty")
        if len(set(self.joint_names)) != j:
            raise ValueError(f"format {self.name!r}: joint_names has duplicates")
        for k, (a, b) in enumerate(self.bones):
            if not (0 <= a < j and 0 <= b < j):
                raise ValueError(
                    f"format {self.name!r}: bone {k} = ({a}, {b}) has a joint index out of "
                    f"range [0, {j})"
                )
            if a == b:
                raise ValueError(f"format {self.name!r}: bone {k} connects joint {a} to itself")
        if self.parents is not None:
            if len(self.parents) != j:
                raise ValueError(
                    f"format {self.name!r}: parents has {len(self.parents)} entries, "
                    f"expected {j} (one per joint)"
                )
            for c, p in enumerate(self.parents):
                if p >= c and p != -1:
                    raise ValueError(
                        f"format {self.name!r}: parent of joint {c} is {p}; parents must "
                        "precede children (topological order) and the root uses -1"
                    )
        if self.smpl_map is not None:
            if len(self.smpl_map) != j:
                raise ValueError(f"format {self.name!r}: smpl_map needs one entry per joint")
            for name, row in zip(self.joint_names, self.smpl_map):
                unknown = set(row) - set(_S)
                if unknown:
                    raise ValueError(
                        f"format {self.name!r}: joint {name!r} maps from unknown SMPL joints "
                        f"{sorted(unknown)}"
                    )
                if abs(sum(row.values()) - 1.0) > 1e-9:
                    raise ValueError(
                        f"format {self.name!r}: weights of joint {name!r} sum to "
                        f"{sum(row.values())}, expected 1"
                    )

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """Index pairs ``(left, right)`` swapped by a left-right mirror."""
        idx = {n: i for i, n in enumerate(self.joint_names)}
        return tuple(
            (i, idx["right_" + n[5:]])
            for i, n in enumerate(self.joint_names)
            if n.startswith("left_") and "right_" + n[5:] in idx
        )

    def smpl_matrix(self) -> np.ndarray:
        """The ``(J, 24)`` float64 map ``W`` with ``X_fmt = W @ X_smpl``."""
        if self.smpl_map is None:
            raise ValueError(f"format {self.name!r} has no mapping from SMPL joints")
        w = np.zeros((self.num_joints, len(SMPL24_JOINTS)))
        for i, row in enumerate(self.smpl_map):
            for name, weight in row.items():
                w[i, _S[name]] = weight
        return w

    def from_smpl(self, joints: torch.Tensor) -> torch.Tensor:
        """Convert SMPL-24 joints ``(..., 24, 3)`` to this format's joints ``(..., J, 3)``."""
        if joints.shape[-2:] != (len(SMPL24_JOINTS), 3):
            raise ValueError(
                f"from_smpl expects SMPL joints shaped (..., 24, 3), got {tuple(joints.shape)}"
            )
        w = torch.as_tensor(self.smpl_matrix(), dtype=joints.dtype, device=joints.device)
        return torch.einsum("jk,...kc->...jc", w, joints)

    def check_joints(self, joints: torch.Tensor | np.ndarray, what: str = "joints") -> None:
        """Raise ``ValueError`` unless ``joints`` is ``(..., J, 3)`` with J matching this format."""
        shape = tuple(joints.shape)
        if len(shape) < 2 or shape[-1] != 3 or shape[-2] != self.num_joints:
            raise ValueError(
                f"{what} shaped {shape} do not match format {self.name!r}: expected "
                f"(..., {self.num_joints}, 3)"
            )


def _tree(name: str, joints: Sequence[str], parents: Sequence[int], smpl_map=None, approx=()):
    return SkeletonFormat(
        name=name,
        joint_names=tuple(joints),
        bones=_bones_from_parents(parents),
        parents=tuple(parents),
        smpl_map=None if smpl_map is None else tuple(smpl_map),
        approximate=frozenset(approx),
    )


def _one(name: str) -> dict[str, float]:
    return {name: 1.0}


def _extrapolate(end: str, base: str, t: float) -> dict[str, float]:
    """``end + t * (end - base)``: a point beyond ``end`` along the bone ``base -> end``."""
    return {end: 1.0 + t, base: -t}


def _mid(a: str, b: str) -> dict[str, float]:
    return {a: 0.5, b: 0.5}


SMPL24 = _tree("smpl24", SMPL24_JOINTS, SMPL24_PARENTS, [_one(n) for n in SMPL24_JOINTS])
SMPL22 = _tree("smpl22", SMPL24_JOINTS[:22], SMPL24_PARENTS[:22], [_one(n) for n in SMPL24_JOINTS[:22]])

_H36M_JOINTS = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)  # fmt: skip
H36M17 = _tree(
    "h36m17",
    _H36M_JOINTS,
    (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    [
        _one("pelvis"), _one("right_hip"), _one("right_knee"), _one("right_ankle"),
        _one("left_hip"), _one("left_knee"), _one("left_ankle"), _mid("spine1", "spine2"),
        _one("neck"), _one("head"), _extrapolate("head", "neck", 0.8),
        _one("left_shoulder"), _one("left_elbow"), _one("left_wrist"),
        _one("right_shoulder"), _one("right_elbow"), _one("right_wrist"),
    ],  # fmt: skip
    approx=("spine", "head_top"),
)

_COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# COCO's face points are surface landmarks; from joints alone they can only be placed up the
# neck-head axis (no facing direction), so they are marked approximate.
COCO17 = SkeletonFormat(
    name="coco17",
    joint_names=_COCO_JOINTS,
    bones=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),  # fmt: skip
    parents=None,
    smpl_map=(
        _extrapolate("head", "neck", 0.4),
        {"head": 1.3, "neck": -0.35, "left_shoulder": 0.05},
        {"head": 1.3, "neck": -0.35, "right_shoulder": 0.05},
        {"head": 1.1, "neck": -0.2, "left_shoulder": 0.1},
        {"head": 1.1, "neck": -0.2, "right_shoulder": 0.1},
        _one("left_shoulder"), _one("right_shoulder"), _one("left_elbow"), _one("right_elbow"),
        _one("left_wrist"), _one("right_wrist"), _one("left_hip"), _one("right_hip"),
        _one("left_knee"), _one("right_knee"), _one("left_ankle"), _one("right_ankle"),
    ),  # fmt: skip
    approximate=frozenset({"nose", "left_eye", "right_eye", "left_ear", "right_ear"}),
)

_NTU_JOINTS = (
    "spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist",
    "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip",
    "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee", "right_ankle",
    "right_foot", "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip",
    "right_thumb",
)  # fmt: skip
# Kinect v2 order; parents chosen so that the list is topological once spine_shoulder (20) is
# reordered: it is the parent of neck/shoulders but comes last in Kinect's numbering, so
# ``parents`` is None (not topologically ordered) and the bone list carries the structure.
NTU25 = SkeletonFormat(
    name="ntu25",
    joint_names=_NTU_JOINTS,
    bones=(
        (0, 1), (1, 20), (20, 2), (2, 3), (20, 4), (4, 5), (5, 6), (6, 7), (20, 8), (8, 9),
        (9, 10), (10, 11), (0, 12), (12, 13), (13, 14), (14, 15), (0, 16), (16, 17), (17, 18),
        (18, 19), (7, 21), (7, 22), (11, 23), (11, 24),
    ),  # fmt: skip
    parents=None,
    smpl_map=(
        _one("pelvis"), _mid("spine1", "spine2"), _mid("neck", "head"),
        _extrapolate("head", "neck", 0.6),
        _one("left_shoulder"), _one("left_elbow"), _one("left_wrist"), _one("left_hand"),
        _one("right_shoulder"), _one("right_elbow"), _one("right_wrist"), _one("right_hand"),
        _one("left_hip"), _one("left_knee"), _one("left_ankle"), _one("left_foot"),
        _one("right_hip"), _one("right_knee"), _one("right_ankle"), _one("right_foot"),
        _mid("spine3", "neck"),
        _extrapolate("left_hand", "left_wrist", 0.8), _mid("left_wrist", "left_hand"),
        _extrapolate("right_hand", "right_wrist", 0.8), _mid("right_wrist", "right_hand"),
    ),  # fmt: skip
    approximate=frozenset(
        {"spine_mid", "neck", "head", "spine_shoulder", "left_hand_tip", "left_thumb",
         "right_hand_tip", "right_thumb"}
    ),  # fmt: skip
)

_REGISTRY: dict[str, SkeletonFormat] = {}


def register_format(fmt: SkeletonFormat, *, overwrite: bool = False) -> SkeletonFormat:
    """Add ``fmt`` to the registry under ``fmt.name`` and return it."""
    if fmt.name in _REGISTRY and not overwrite:
        raise ValueError(f"skeleton format {fmt.name!r} is already registered")
    _REGISTRY[fmt.name] = fmt
    return fmt


def get_format(fmt: str | SkeletonFormat) -> SkeletonFormat:
    """Look a format up by name (a :class:`SkeletonFormat` passes through)."""
    if isinstance(fmt, SkeletonFormat):
        return fmt
    try:
        return _REGISTRY[fmt.lower()]
    except KeyError:
        raise KeyError(
            f"unknown skeleton format {fmt!r}; available: {', '.join(list_formats())}"
        ) from None


def list_formats() -> list[str]:
    return sorted(_REGISTRY)


def custom_format(
    bones: Sequence[tuple[int, int]],
    num_joints: int | None = None,
    joint_names: Sequence[str] | None = None,
    name: str = "custom",
) -> SkeletonFormat:
    """An arbitrary topology from a bone list, e.g. a 5-joint chain ``[(0,1),(1,2),(2,3),(3,4)]``.

    ``num_joints`` defaults to ``1 + max index`` in ``bones``; names default to ``joint_<i>``.
    """
    bones = tuple((int(a), int(b)) for a, b in bones)
    if num_joints is None:
        if joint_names is not None:
            num_joints = len(joint_names)
        elif bones:
            num_joints = 1 + max(max(a, b) for a, b in bones)
        else:
            raise ValueError("custom_format needs bones, num_joints or joint_names")
    if joint_names is None:
        joint_names = tuple(f"joint_{i}" for i in range(num_joints))
    if len(joint_names) != num_joints:
        raise ValueError(f"joint_names has {len(joint_names)} names, expected {num_joints}")
    return SkeletonFormat(name=name, joint_names=tuple(joint_names), bones=bones)


for _fmt in (SMPL24, SMPL22, H36M17, COCO17, NTU25):
    register_format(_fmt)
