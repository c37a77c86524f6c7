"""The reward-function contract (TRL's ``GRPOTrainer`` convention plus ``poses``).

A reward is any callable, sync or ``async def``::

    f(prompts, completions, completion_ids=None, poses=None, **columns) -> list[float | None]

* ``prompts`` / ``completions``: strings, or message lists for conversational data, exactly as
  TRL passes them (a completion is then ``[{"role": "assistant", "content": ...}]``).
* ``completion_ids``: the generated token ids per completion (lists of ints).
* ``poses``: the sampled pose per completion as a ``(D,)`` float tensor (6D rotation per joint,
  global orientation first), ``None`` where the completion has no valid ``<POSE>``.
* ``**columns``: the dataset's other columns, one value per completion (ground-truth pose and
  joints, caption, camera, ...), plus ``reference_completion`` (the ground-truth response text)
  when the dataset has a ``completion`` column. Functions must accept ``**kwargs``.
* Return one value per completion; ``None`` means "does not apply to this sample": it is masked
  (excluded from the advantage baseline) and counted in the logs.
* A pose reward that is a sum over body joints, ``R_i = Σ_j r_ij``, may instead return a
  :class:`PerJointRewards`: the learner can then credit each joint's rotation with the rewards of
  the joints it moves (``per_joint_credit``). Its totals are what the logs and a scalar use see.

TRL's own reward functions (``trl.rewards``) satisfy this contract unchanged.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


class RewardFunctionError(ValueError):
    """A reward function broke the contract; the message names the function and the sample."""


@dataclass
class PerJointRewards:
    """A reward that decomposes over body joints: sample ``i`` scores ``Σ_j values[i, j]``.

    ``values``: ``(N, J)`` float array, J the body's joints in SMPL order (24); a row of NaN
    means "does not apply" (a ``None`` reward). The joint ``j`` term must depend only on joint
    ``j``'s position, so that a rotation's noise can be credited with the terms of the joints it
    moves without bias.
    """

    values: np.ndarray

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2:
            raise RewardFunctionError(f"PerJointRewards.values must be (N, J), got shape {self.values.shape}")
        partial = np.isnan(self.values).any(1) & ~np.isnan(self.values).all(1)
        inf = np.isinf(self.values).any(1)
        if partial.any() or inf.any():
            i = int(np.flatnonzero(partial | inf)[0])
            raise RewardFunctionError(f"PerJointRewards row {i} has some but not all joints NaN, or an Inf")

    def __len__(self) -> int:
        return self.values.shape[0]

    def totals(self) -> list[float | None]:
        """One reward per sample (``None`` for not-applicable rows)."""
        return [None if np.isnan(row[0]) else float(row.sum()) for row in self.values]


def completion_text(completion: Any) -> str:
    """The text of one completion, whether a string or a TRL message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return message_text(completion[-1])
    if isinstance(completion, dict):
        return message_text(completion)
    raise TypeError(
        f"a completion must be a string or a list of chat messages, got {type(completion).__name__}"
    )


def message_text(message: dict) -> str:
    """Text of a chat message whose ``content`` is a string or a list of typed parts."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type", "text") == "text")


def reward_columns(rows: Sequence[dict[str, Any]], repeat: int) -> dict[str, list[Any]]:
    """The ``**columns`` rewards receive for a batch of dataset ``rows`` with ``repeat``
    completions each: every column but ``prompt`` and ``images``, each value repeated for the
    ``repeat`` completions of its row (the same object, so per-prompt conversions can be shared),
    and ``completion`` renamed ``reference_completion`` and reduced to its text."""
    cols: dict[str, list[Any]] = {}
    for key in rows[0]:
        if key in ("prompt", "images"):
            continue
        values = [r[key] for r in rows]
        if key == "completion":
            key, values = "reference_completion", [completion_text(v) for v in values]
        cols[key] = [v for v in values for _ in range(repeat)]
    return cols


def validate_rewards(name: str, values: Any, n: int) -> np.ndarray:
    """Check one reward function's output and return it as ``(n,)`` float64, NaN for ``None``.

    Raises :class:`RewardFunctionError` naming ``name`` and the first offending sample index for
    a wrong length, a non-number or a NaN/inf value.
    """
    if isinstance(values, PerJointRewards):
        values = values.totals()
    if not isinstance(values, Sequence) and not isinstance(values, np.ndarray):
        raise RewardFunctionError(
            f"reward function {name!r} returned {type(values).__name__}; expected a list of "
            f"{n} floats (or None)"
        )
    if len(values) != n:
        raise RewardFunctionError(
            f"reward function {name!r} returned {len(values)} rewards for {n} completions "
            "(expected one per completion)"
        )
    out = np.empty(n, dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = math.nan
            continue
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
            if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
                v = v.item()  # a 0-d tensor/array is a number
            else:
                raise RewardFunctionError(
                    f"reward function {name!r} returned {v!r} ({type(v).__name__}) for sample "
                    f"{i}; expected a float or None"
                )
        if not math.isfinite(float(v)):
            raise RewardFunctionError(
                f"reward function {name!r} returned {v} for sample {i}; rewards must be finite "
                "(return None to mark a sample the reward does not apply to)"
            )
        out[i] = float(v)
    return out
