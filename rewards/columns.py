"""Batch plumbing shared by the built-in pose rewards: columns in, one stacked tensor out.

Rewards receive per-completion lists (``poses=[tensor | None, ...]``, ``gt_joints=[...]``).
Everything here turns such a list into one ``(N, ...)`` tensor with as little per-sample Python
as possible (the joint reward must keep up with FK at ~10⁶ poses/s):

* a column that is already one stacked tensor / array is used as is (indexed);
* values shared by the ``G`` completions of one prompt are usually the *same object* repeated
  (see :func:`rewards.api.reward_columns`), so each distinct object is converted once;
* tensors are stacked with ``torch.stack``, anything else goes through one ``np.asarray``.

Every failure names the reward, the column and the first offending sample index.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


class RewardInputError(ValueError):
    """A reward got inputs it cannot use (missing column, wrong shape, no poses)."""


def require_column(reward: str, columns: Mapping[str, Any], name: str) -> Sequence[Any]:
    """``columns[name]``, or a :class:`RewardInputError` listing the columns present."""
    values = columns.get(name)
    if values is None:
        present = ", ".join(sorted(columns)) or "none"
        raise RewardInputError(
            f"reward {reward!r} needs the dataset column {name!r}, which this batch does not "
            f"have (columns present: {present}); set the reward's column kwarg if it is named "
            "differently"
        )
    return values


def _shape_error(
    reward: str, name: str, i: int, got: Any, shape: tuple[int, ...]
) -> RewardInputError:
    return RewardInputError(
        f"reward {reward!r}: column {name!r}, sample {i}: expected shape {shape} "
        f"(or {math.prod(shape)} values flat), got {got}"
    )


def _value_shape(v: Any) -> Any:
    if isinstance(v, (Tensor, np.ndarray)):
        return tuple(v.shape)
    try:
        return np.asarray(v, dtype=np.float64).shape
    except (TypeError, ValueError):
        return type(v).__name__


def stack_column(
    reward: str,
    name: str,
    values: Any,
    rows: Sequence[int],
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    allow_nonfinite: bool = False,
) -> Tensor:
    """Rows ``rows`` of column ``values`` as one ``(len(rows), *shape)`` tensor.

    Each value must have ``shape`` or be flat with ``prod(shape)`` entries. Unless
    ``allow_nonfinite``, NaN / Inf values raise naming the sample.
    """
    n_rows = len(rows)
    if isinstance(values, (Tensor, np.ndarray)):
        t = torch.as_tensor(values)[torch.as_tensor(list(rows), dtype=torch.long)]
        if tuple(t.shape[1:]) not in (shape, (math.prod(shape),)):
            raise _shape_error(reward, name, rows[0] if rows else 0, tuple(t.shape[1:]), shape)
        out = t.to(dtype).reshape(n_rows, *shape)
    else:
        # Convert each distinct object once (a prompt's G completions share their row's value).
        slot: dict[int, int] = {}
        uniq: list[Any] = []
        uniq_row: list[int] = []
        index = []
        for i in rows:
            v = values[i]
            k = slot.get(id(v))
            if k is None:
                k = slot[id(v)] = len(uniq)
                uniq.append(v)
                uniq_row.append(i)
            index.append(k)
        base = _stack_unique(reward, name, uniq, uniq_row, shape, dtype)
        if len(uniq) == n_rows:  # every row its own object, in order
            out = base
        else:
            out = base.index_select(0, torch.from_numpy(np.asarray(index, dtype=np.int64)))
    if not allow_nonfinite:
        bad = first_nonfinite(out)
        if bad is not None:
            raise RewardInputError(
                f"reward {reward!r}: column {name!r}, sample {rows[bad]} has NaN or Inf"
            )
    return out


def first_nonfinite(x: Tensor) -> int | None:
    """Index along dim 0 of the first slice of ``x`` holding NaN / Inf, else ``None``.

    A sum is NaN / Inf whenever an element is (one cheap reduction; ``isfinite`` over every
    element costs ~1 ms per 4k poses); only then is each slice checked (a huge but finite sum
    that overflowed finds none)."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return None
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def _stack_unique(
    reward: str,
    name: str,
    uniq: list[Any],
    rows: list[int],
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> Tensor:
    n, flat = len(uniq), math.prod(shape)
    if n == 0:
        return torch.zeros(0, *shape, dtype=dtype)
    try:
        if all(isinstance(v, Tensor) for v in uniq):
            arr = torch.stack(uniq).to(dtype)
        else:
            np_dtype = np.float64 if dtype == torch.float64 else np.float32
            arr = torch.from_numpy(np.asarray(uniq, dtype=np_dtype)).to(dtype)
    except (RuntimeError, ValueError, TypeError):
        arr = None  # ragged or non-numeric: find the culprit below
    if arr is None or tuple(arr.shape[1:]) not in (shape, (flat,)):
        for v, i in zip(uniq, rows):
            s = _value_shape(v)
            if s not in (shape, (flat,)):
                raise _shape_error(reward, name, i, s, shape)
        # every value is fine, some flat and some not: flatten each
        flat_values = [torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(flat) for v in uniq]
        arr = torch.stack(flat_values).to(dtype)
    return arr.reshape(n, *shape)


def valid_rows(reward: str, values: Sequence[Any] | None, n: int, name: str) -> list[int]:
    """Indices of samples whose ``values[i]`` is not ``None`` (rows the reward applies to)."""
    if values is None:
        return list(range(n))
    if len(values) != n:
        raise RewardInputError(
            f"reward {reward!r}: column {name!r} has {len(values)} values for {n} completions"
        )
    if isinstance(values, (Tensor, np.ndarray)):  # one stacked array: no None rows
        return list(range(n))
    return [i for i, v in enumerate(values) if v is not None]


def stack_poses(
    reward: str, poses: Sequence[Tensor | None] | None, n: int
) -> tuple[list[int], Tensor]:
    """``(rows, P)``: the indices of the completions that have a pose and those poses stacked
    ``(V, D)`` float32, ``D = J*6`` (6D per joint, global orientation first)."""
    if poses is None:
        raise RewardInputError(
            f"reward {reward!r} scores poses but got poses=None; it needs a policy with a pose "
            "head (and target 'pose' or 'both')"
        )
    if len(poses) != n:
        raise RewardInputError(f"reward {reward!r}: {len(poses)} poses for {n} completions")
    rows = [i for i, p in enumerate(poses) if p is not None]
    if not rows:
        return rows, torch.zeros(0, 0)
    try:
        stacked = torch.stack([poses[i] for i in rows]).detach().float()
    except (RuntimeError, TypeError):
        stacked = None
    if stacked is None or stacked.ndim != 2 or not _pose_dim_ok(stacked.shape[-1]):
        first = poses[rows[0]]
        for i in rows:
            p = poses[i]
            ok = isinstance(p, Tensor) and p.ndim == 1 and _pose_dim_ok(p.shape[0])
            if not ok or p.shape != first.shape:
                got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise RewardInputError(
                    f"reward {reward!r}: pose of sample {i} has shape {got}; expected (J*6,) "
                    "6D rotations (J <= 24 SMPL joints, e.g. (132,)), the same for every sample"
                )
        raise RewardInputError(f"reward {reward!r}: poses could not be stacked into one tensor")
    bad = first_nonfinite(stacked)
    if bad is not None:
        raise RewardInputError(f"reward {reward!r}: pose of sample {rows[bad]} has NaN or Inf")
    return rows, stacked


def _pose_dim_ok(d: int) -> bool:
    return d % 6 == 0 and 6 <= d <= 24 * 6


def scatter(n: int, rows: Sequence[int], values: Tensor) -> list[float | None]:
    """One reward per completion: ``values[k]`` at ``rows[k]``, ``None`` elsewhere."""
    out: list[float | None] = [None] * n
    for i, v in zip(rows, values.tolist()):
        out[i] = v
    return out


def select_rows(
    stacked: Tensor, rows: Sequence[int], keep: Sequence[int]
) -> tuple[Tensor, list[int]]:
    """Restrict ``stacked`` (one row per entry of ``rows``) to the rows also in ``keep``."""
    keep_set = set(keep)
    pos = [k for k, i in enumerate(rows) if i in keep_set]
    return stacked[pos], [rows[k] for k in pos]


def gather_pose_inputs(
    reward: str,
    poses: Sequence[Tensor | None] | None,
    completions: Sequence[Any] | None,
    columns: Mapping[str, Any],
    needed: Sequence[str] = (),
) -> tuple[int, list[int], Tensor, dict[str, Sequence[Any]]]:
    """The common prologue of a pose reward: ``(n, rows, P, cols)``.

    ``cols`` holds the ``needed`` columns (an error names a missing one); ``rows`` are the
    completions that have a pose *and* a non-``None`` value in every needed column, and ``P``
    their stacked poses ``(V, D)``.
    """
    n = len(poses) if poses is not None else len(completions or [])
    cols = {c: require_column(reward, columns, c) for c in needed}
    rows, pose6d = stack_poses(reward, poses, n)
    for c, values in cols.items():
        keep = valid_rows(reward, values, n, c)
        if len(keep) != n:  # some samples have no ground truth: score the rest
            pose6d, rows = select_rows(pose6d, rows, keep)
    return n, rows, pose6d, cols
