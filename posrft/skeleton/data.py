"""Action clips for SkeletonLLM: load (or build) the action DatasetDict and split it by class.

The dataset is what :func:`posrft.data.actions.build_action_dataset` returns (columns
``joints``, ``format``, ``label``, ``label_id``, ``description``, ``subject_id``; splits
train/val/test), from disk (``dataset_path``) or built in memory. Every clip is checked with
:func:`posrft.data.actions.check_clip` (joint count of its format, finite values) so a bad row
fails with its split and row named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from posrft.data import action_classes, actions


@dataclass
class ClipSet:
    """Clips of one split and one format: ``clips (N, T, J, 3)`` float32, ``labels`` (N,)."""

    clips: np.ndarray
    labels: list[str]
    fmt: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, classes: Sequence[str]) -> "ClipSet":
        keep = set(classes)
        idx = [i for i, y in enumerate(self.labels) if y in keep]
        return ClipSet(self.clips[idx], [self.labels[i] for i in idx], self.fmt)


@dataclass
class ActionData:
    """Clip sets per ``(split, format)``, the zero-shot class split and class descriptions."""

    sets: dict[tuple[str, str], ClipSet]
    seen: list[str]
    unseen: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)

    def get(self, split: str, fmt: str) -> ClipSet:
        if (split, fmt) not in self.sets:
            have = sorted(self.sets)
            raise KeyError(f"no {fmt!r} clips in split {split!r}; the action data has {have}")
        return self.sets[(split, fmt)]


def class_descriptions() -> dict[str, str]:
    return {c.name: c.description for c in action_classes.ACTION_CLASSES}


def clip_sets(ds) -> dict[tuple[str, str], ClipSet]:
    """``{(split, format): ClipSet}`` of a DatasetDict; every clip checked by
    :func:`posrft.data.actions.load_action_clips` (joint count, finite frames)."""
    out: dict[tuple[str, str], ClipSet] = {}
    for split in ds:
        for fmt in sorted(set(ds[split]["format"])):
            try:
                clips, labels = actions.load_action_clips(ds[split], fmt)
            except ValueError as err:
                raise ValueError(f"split {split!r}, format {fmt!r}: {err}") from None
            out[(split, fmt)] = ClipSet(clips, labels, fmt)
    return out


def load_action_data(dataset_path: str, *, formats: Sequence[str], class_split: str,
                     clips_per_class: int, num_frames: int, seed: int, val_fraction: float = 0.1,
                     test_fraction: float = 0.2) -> ActionData:
    """Load ``dataset_path`` (a saved action DatasetDict) or, if empty, build one in memory
    with ``clips_per_class`` subjects per class in ``formats`` (split by subject with
    ``val_fraction`` / ``test_fraction``)."""
    seen, unseen = action_classes.zero_shot_split(class_split)
    if dataset_path:
        if not Path(dataset_path).is_dir():
            raise FileNotFoundError(f"dataset_path {dataset_path!r} does not exist (write it with "
                                    "posrft.data.actions.save_action_dataset)")
        ds = actions.load_action_dataset(dataset_path)
    else:
        ds = actions.build_action_dataset(clips_per_class, formats=tuple(formats),
                                          num_frames=num_frames, seed=seed,
                                          val_fraction=val_fraction, test_fraction=test_fraction)
    try:
        sets = clip_sets(ds)
    except ValueError as err:
        raise ValueError(f"{dataset_path or 'generated action data'}: {err}") from None
    return ActionData(sets, list(seen), list(unseen), class_descriptions())
