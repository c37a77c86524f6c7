"""Load one split of a saved dataset, checked: the one loader learners and evaluation share."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datasets import Dataset, DatasetDict, load_from_disk


def load_split(path: str | Path, split: str, required: Sequence[str]) -> Dataset:
    """``load_from_disk(path)[split]`` (a plain ``Dataset`` folder is taken as is), with a clear
    error when the folder, the split or a ``required`` column is missing, or the split is empty."""
    path = str(path)
    if not path:
        raise ValueError("dataset path is empty: give the folder written by `posrft data synth`")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"dataset folder {path!r} does not exist")
    data = load_from_disk(path)
    if isinstance(data, DatasetDict):
        if split not in data:
            raise KeyError(f"dataset {path!r} has no split {split!r}; splits: {sorted(data)}")
        data = data[split]
    missing = [c for c in required if c not in data.column_names]
    if len(missing) == 1:
        raise ValueError(f"dataset {path!r} split {split!r} lacks column {missing[0]!r}; it has "
                         f"{data.column_names}")  # fmt: skip
    if missing:
        raise ValueError(f"dataset {path!r} split {split!r} lacks required column(s) {missing}; it "
                         f"has {data.column_names}")  # fmt: skip
    if len(data) == 0:
        raise ValueError(f"dataset {path!r} split {split!r} is empty")
    return data
