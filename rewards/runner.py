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

``timeout`` (seconds, default :data:`DEFAULT_TIMEOUT_S`; ``None`` waits forever) bounds each
call. An ``async def`` reward is cancelled when it runs over; a plain function runs on a helper
thread, which Python cannot stop: the batch goes on without it and the thread finishes (or not)
in the background. Either way the overrun is an error handled by ``on_error`` (raised, or the
batch's scores masked and counted under ``rewards/<name>/timeouts``).

A reward that requires a dataset column (a parameter without a default, e.g. TRL's
``accuracy_reward(completions, solution, **kwargs)``) is refused with the column's name when the
batch lacks it, instead of failing inside the function.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from rewards.api import PerJointRewards, RewardFunctionError, validate_rewards
from rewards.registry import default_target, required_columns, resolve_reward

Target = Literal["text", "pose", "both"]
#: Seconds a reward may take for one batch unless its entry says otherwise.
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class RewardSpec:
    """One entry of a recipe's ``rewards:`` list."""

    func: str | Callable
    weight: float = 1.0
    target: Target | None = None
    name: str | None = None
    on_error: Literal["raise", "mask"] = "raise"
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.target is None:
            self.target = default_target(self.func)
        if self.target not in ("text", "pose", "both"):
            raise ValueError(
                f"reward {self.label!r}: target must be 'text', 'pose' or 'both', got {self.target!r}"
            )
        if self.on_error not in ("raise", "mask"):
            raise ValueError(f"reward {self.label!r}: on_error must be 'raise' or 'mask', got {self.on_error!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not np.isfinite(self.weight):
            raise ValueError(f"reward {self.label!r}: weight must be a finite number, got {self.weight!r}")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
                                         or not self.timeout > 0 or not np.isfinite(self.timeout)):  # fmt: skip
            raise ValueError(f"reward {self.label!r}: timeout must be a number of seconds > 0 or null, "
                             f"got {self.timeout!r}")  # fmt: skip
        if not isinstance(self.kwargs, dict):
            raise ValueError(f"reward {self.label!r}: kwargs must be a mapping, got {self.kwargs!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"reward entry: name must be a string, got {self.name!r}")

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
            allowed = ["func", "weight", "target", "name", "on_error", "kwargs", "timeout"]
            unknown = [k for k in entry if k not in allowed]
            if unknown:
                import difflib

                hints = [f"{k!r}" + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(
                    str(k), allowed, n=1, cutoff=0.6)) else "") for k in unknown]  # fmt: skip
                raise ValueError(
                    f"reward entry {entry!r}: unknown key(s) {', '.join(hints)}; allowed: "
                    f"{', '.join(allowed)}"
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


class RewardTimeoutError(RewardFunctionError, TimeoutError):
    """A reward did not return within its ``timeout``."""


def _timeout_error(spec: "RewardSpec") -> RewardTimeoutError:
    return RewardTimeoutError(
        f"reward function {spec.label!r} did not return within {spec.timeout:g} s (its 'timeout'); "
        "raise the timeout in its reward entry, or set on_error: mask to score the batch without it"
    )


def _call_with_timeout(fn: Callable, kwargs: dict[str, Any], timeout: float | None) -> Any:
    """``fn(**kwargs)``, or ``TimeoutError`` after ``timeout`` seconds (the helper thread is a
    daemon left to finish in the background; torch's grad mode is carried over)."""
    if timeout is None:
        return fn(**kwargs)
    box: list[Any] = []
    grad = torch.is_grad_enabled()

    def target() -> None:
        try:
            with torch.set_grad_enabled(grad):
                box.append((True, fn(**kwargs)))
        except BaseException as err:  # noqa: BLE001 - handed back to the caller
            box.append((False, err))

    thread = threading.Thread(target=target, name=f"reward-{getattr(fn, '__name__', 'fn')}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise TimeoutError
    ok, value = box[0]
    if ok:
        return value
    raise value


def _run_coroutines(coros: list, timeouts: list[float | None] | None = None) -> list:
    timeouts = timeouts or [None] * len(coros)

    async def gather():
        return await asyncio.gather(*(c if t is None else asyncio.wait_for(c, t)
                                      for c, t in zip(coros, timeouts)), return_exceptions=True)  # fmt: skip

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
        self.needs = [required_columns(f) for f in self.funcs]

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
        sub.needs = [self.needs[k] for k in keep]
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
        for spec, needs in zip(self.specs, self.needs):
            missing = [c for c in needs if c not in kwargs]
            if missing:
                have = sorted(k for k in kwargs if k not in ("prompts", "completions", "completion_ids", "poses"))
                raise RewardFunctionError(
                    f"reward function {spec.label!r} needs the dataset column(s) "
                    f"{', '.join(repr(c) for c in missing)}, which the data lacks (columns it has: "
                    f"{', '.join(have) or 'none'})"
                )
        outputs: list[Any] = [None] * len(self.funcs)
        timed_out = [False] * len(self.funcs)
        pending = []
        for k, (spec, fn) in enumerate(zip(self.specs, self.funcs)):
            if _is_async(fn):
                pending.append(k)
                continue
            try:
                outputs[k] = _call_with_timeout(fn, kwargs, spec.timeout)
            except TimeoutError:
                outputs[k], timed_out[k] = _timeout_error(spec), True
            except Exception as err:  # noqa: BLE001 - reported per function below
                outputs[k] = err
        if pending:
            results = _run_coroutines([self.funcs[k](**kwargs) for k in pending],
                                      [self.specs[k].timeout for k in pending])  # fmt: skip
            for k, res in zip(pending, results):
                if isinstance(res, (TimeoutError, asyncio.TimeoutError)):
                    res, timed_out[k] = _timeout_error(self.specs[k]), True
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
                    if isinstance(out, RewardTimeoutError):
                        raise out
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
            metrics[f"rewards/{spec.label}/timeouts"] = float(timed_out[k])

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


def _is_async(fn: Any) -> bool:
    inner = fn.func if isinstance(fn, functools.partial) else fn
    return inspect.iscoroutinefunction(inner) or inspect.iscoroutinefunction(getattr(inner, "__call__", None))


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
