"""Curves from a run's ``metrics.jsonl`` (written by :class:`posrft.train.logging.TrainLogger`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from posrft.files import atomic_save_figure


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n}: not JSON ({err})") from None
    return rows


def plot_curves(metrics_path: str | os.PathLike, keys: Sequence[str], out: str | os.PathLike,
                title: str = "") -> Path:  # fmt: skip
    """One panel per key (value vs step; keys missing from the log are skipped); PNG written
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    present = [k for k in keys if any(k in r for r in rows)]
    if not present:
        raise ValueError(f"none of {list(keys)} is in {metrics_path}")
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 2.6), squeeze=False)
    for ax, key in zip(axes[0], present):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return atomic_save_figure(out, fig, dpi=110)
    finally:
        plt.close(fig)
