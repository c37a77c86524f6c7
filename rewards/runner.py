"""Run a configured list of rewards over a whole rollout batch and split them by target.

Each :class:`RewardSpec` names a reward (see :mod:`rewards.registry`), its ``weight`` and the
advantage it feeds (``target``: ``"text"``, ``"pose"`` or ``"both"``). For sample ``i``:

    R_text,i = Σ_{k: target_k ∈ {text, both}} w_k r_k,i        (NaN terms skipped)
    R_pose,i = Σ_{k: target_k ∈ {pose, both}} w_k r_k,i

and a total is NaN only when every one of its terms is NaN (TRL's rule), so that the advantage
estimator masks that sample instead of treating "no reward" as zero.

``on_error="mask"`` turns a reward that raises or breaks the contract into NaN for the samples
concerned (all of them when it raised) and counts them under ``rewards/<name>/errors``; the
default ``"raise"`` re-raises with the function's name and the sample index.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from rewards.api import PerJointRewards, RewardFunctionError, validate_rewards
from rewards.registry import default_target, resolve_reward

Target = Literal["text", "pose", "both"]


@dataclass
class RewardSpec:
    """One entry of a recipe's ``rewards:`` list."""

    func: str | Callable
    weight: float = 1.0
    target: Target | None = None
    name: str | None = None
    on_error: Literal["raise", "mask"] = "raise"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target is None:
            self.target = default_target(self.func)
        if self.target not in ("text", "pose", "both"):
            raise ValueError(
                f"reward {self.label!r}: target must be 'text', 'pose' or 'both', got {self.target!r}"
            )
        if self.on_error not in ("raise", "mask"):
            raise ValueError(f"reward {self.label!r}: on_error must be 'raise' or 'mask', got {self.on_error!r}")
        if not isinstance(self.weight, (int, float)) or not np.isfinite(self.weight):
            raise ValueError(f"reward {self.label!r}: weight must be a finite number, got {self.weight!r}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if callable(self.func):
            return getattr(self.func, "__name__", type(self.func).__name__)
        return str(self.func).rsplit(":", 1)[-1]

    @classmethod
    def from_config(cls, entry: "RewardSpec | dict | str | Callable") -> "RewardSpec":
        if isinstance(entry, RewardSpec):
            return entry
        if isinstance(entry, (str,)) or callable(entry):
            return cls(func=entry)
        if isinstance(entry, dict):
            unknown = set(entry) - {"func", "weight", "target", "name", "on_error", "kwargs"}
            if unknown:
                raise ValueError(
                    f"reward entry {entry!r}: unknown keys {sorted(unknown)}; allowed: func, "
                    "weight, target, name, on_error, kwargs"
                )
            if "func" not in entry:
                raise ValueError(f"reward entry {entry!r} needs a 'func'")
            return cls(**entry)
        raise TypeError(f"a reward entry must be a dict, a string or a callable, got {entry!r}")


@dataclass
class RewardBatch:
    """Rewards of one rollout batch of ``N`` samples and ``K`` reward functions.

    ``per_joint`` maps the name of each reward that returned :class:`~rewards.api.PerJointRewards`
    to its ``(N, J)`` terms (NaN rows masked); their totals are its ``per_func`` column.
    """

    names: list[str]
    per_func: torch.Tensor  # (N, K) float32, NaN = masked
    text: torch.Tensor  # (N,) weighted sum over text-targeted rewards, NaN = no reward applies
    pose: torch.Tensor  # (N,) weighted sum over pose-targeted rewards
    metrics: dict[str, float]
    per_joint: dict[str, torch.Tensor] = field(default_factory=dict)
    specs: list["RewardSpec"] = field(default_factory=list)  # weight and target of each column


def _run_coroutines(coros: list) -> list:
    async def gather():
        return await asyncio.gather(*coros, return_exceptions=True)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(gather())
    # Already inside an event loop (e.g. an async Ray actor): run ours on a private thread.
    result: list = []
    thread = threading.Thread(target=lambda: result.extend(asyncio.run(gather())))
    thread.start()
    thread.join()
    return result


class RewardRunner:
    """Resolve reward specs once; score whole batches with :meth:`__call__`."""

    def __init__(self, specs: Sequence["RewardSpec | dict | str | Callable"]):
        if not specs:
            raise ValueError("at least one reward is needed")
        self.specs = [RewardSpec.from_config(s) for s in specs]
        labels = [s.label for s in self.specs]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise ValueError(f"reward names must be unique; repeated: {sorted(dupes)} (set 'name')")
        self.funcs = [resolve_reward(s.func, s.kwargs) for s in self.specs]

    @property
    def names(self) -> list[str]:
        return [s.label for s in self.specs]

    def subset(self, targets: Sequence[str]) -> "RewardRunner":
        """A runner over the rewards whose target is in ``targets`` (sharing the resolved
        functions, nothing is rebuilt)."""
        keep = [k for k, spec in enumerate(self.specs) if spec.target in targets]
        if not keep:
            raise ValueError(f"no reward targets any of {list(targets)}")
        sub = object.__new__(RewardRunner)
        sub.specs = [self.specs[k] for k in keep]
        sub.funcs = [self.funcs[k] for k in keep]
        return sub

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        poses: Sequence[torch.Tensor | None] | None = None,
        **columns: Sequence[Any],
    ) -> RewardBatch:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} completions")
        for key, values in columns.items():
            if len(values) != n:
                raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")
        kwargs = dict(prompts=list(prompts), completions=list(completions),
                      completion_ids=completion_ids, poses=poses, **columns)  # fmt: skip
        outputs: list[Any] = [None] * len(self.funcs)
        pending = []
        for k, fn in enumerate(self.funcs):
            if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
                pending.append(k)
                continue
            try:
                outputs[k] = fn(**kwargs)
            except Exception as err:  # noqa: BLE001 - reported per function below
                outputs[k] = err
        if pending:
            results = _run_coroutines([self.funcs[k](**kwargs) for k in pending])
            for k, res in zip(pending, results):
                outputs[k] = res

        per_func = np.full((n, len(self.funcs)), np.nan)
        per_joint: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        for k, (spec, out) in enumerate(zip(self.specs, outputs)):
            errors = 0
            if isinstance(out, PerJointRewards) and len(out) == n:
                per_joint[spec.label] = torch.from_numpy(out.values).float()
            if isinstance(out, BaseException):
                if spec.on_error == "raise":
                    raise RewardFunctionError(f"reward function {spec.label!r} raised: {out!r}") from out
                errors = n
            else:
                try:
                    per_func[:, k] = validate_rewards(spec.label, out, n)
                except RewardFunctionError:
                    if spec.on_error == "raise":
                        raise
                    per_func[:, k] = _salvage(out, n)
                    errors = int(np.isnan(per_func[:, k]).sum() - _count_none(out))
            col = per_func[:, k]
            present = ~np.isnan(col)
            metrics[f"rewards/{spec.label}/mean"] = float(col[present].mean()) if present.any() else float("nan")
            metrics[f"rewards/{spec.label}/std"] = float(col[present].std()) if present.sum() > 1 else 0.0
            metrics[f"rewards/{spec.label}/masked"] = float((~present).sum())
            metrics[f"rewards/{spec.label}/errors"] = float(errors)

        text = _weighted_total(per_func, self.specs, ("text", "both"))
        pose = _weighted_total(per_func, self.specs, ("pose", "both"))
        return RewardBatch(
            names=self.names,
            per_func=torch.from_numpy(per_func).float(),
            text=torch.from_numpy(text).float(),
            pose=torch.from_numpy(pose).float(),
            metrics=metrics,
            per_joint=per_joint,
            specs=list(self.specs),
        )


def _count_none(values: Any) -> int:
    try:
        return sum(v is None for v in values)
    except TypeError:
        return 0


def _salvage(values: Any, n: int) -> np.ndarray:
    """Keep the well-formed entries of a broken output (``on_error='mask'``), NaN the rest."""
    out = np.full(n, np.nan)
    try:
        if len(values) != n:
            return out
    except TypeError:
        return out
    for i, v in enumerate(values):
        try:
            out[i] = validate_rewards("salvage", [v], 1)[0]
        except RewardFunctionError:
            pass
    return out


def _weighted_total(per_func: np.ndarray, specs: list[RewardSpec], targets: tuple[str, ...]) -> np.ndarray:
    cols = [k for k, s in enumerate(specs) if s.target in targets]
    if not cols:
        return np.full(per_func.shape[0], np.nan)
    w = np.array([specs[k].weight for k in cols])
    sub = per_func[:, cols]
    total = np.nansum(sub * w, axis=1)
    total[np.isnan(sub).all(axis=1)] = np.nan
    return total
