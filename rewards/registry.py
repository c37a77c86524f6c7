"""Find reward functions by registry name, ``module:function`` or ``path/to/file.py:function``.

Built-ins register themselves with :func:`register_reward`. An entry is either a reward function
or a factory (a class, or a function marked ``factory=True``) called once with the recipe's
``kwargs`` to build the reward (e.g. to load a sentence encoder once, not per batch).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

_REGISTRY: dict[str, tuple[Callable, bool]] = {}
_TARGETS: dict[str, str] = {}


def register_reward(
    name: str, *, target: str = "text", factory: bool | None = None
) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` under ``name`` with its default ``target`` (classes are factories)."""

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered")
        _REGISTRY[name] = (fn, inspect.isclass(fn) if factory is None else factory)
        _TARGETS[name] = target
        return fn

    return wrap


def default_target(ref: str | Callable) -> str:
    """The advantage a reward feeds when the recipe does not say: the built-in's default
    (format, text similarity -> text; joint, semantic, reprojection, plausibility -> pose), and
    ``"text"`` for anything else, which is what a TRL reward function affects in TRL."""
    if isinstance(ref, str) and ":" not in ref:
        _load_builtins()
        return _TARGETS.get(ref, "text")
    return "text"


def available_rewards() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    importlib.import_module("rewards.builtins")


def _load_from_file(path: str, attr: str) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"reward file {str(file)!r} does not exist")
    mod_name = f"posrft_user_reward_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, attr):
        raise AttributeError(f"reward file {str(file)!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _instantiate(obj: Any, is_factory: bool, kwargs: dict[str, Any], ref: str) -> Callable:
    if is_factory:
        return obj(**kwargs)
    if not callable(obj):
        raise TypeError(f"reward {ref!r} resolves to {type(obj).__name__}, which is not callable")
    return functools.partial(obj, **kwargs) if kwargs else obj


def resolve_reward(ref: str | Callable, kwargs: dict[str, Any] | None = None) -> Callable:
    """Return a ready-to-call reward for ``ref``.

    ``ref`` is a callable, a registry name, ``package.module:function`` or
    ``path/to/file.py:function``. ``kwargs`` go to a factory, or are bound to a plain function.
    """
    kwargs = dict(kwargs or {})
    if callable(ref):
        return _instantiate(ref, inspect.isclass(ref), kwargs, getattr(ref, "__name__", "reward"))
    if not isinstance(ref, str) or not ref:
        raise TypeError(f"a reward reference must be a non-empty string or a callable, got {ref!r}")
    if ":" in ref:
        target, attr = ref.rsplit(":", 1)
        if target.endswith(".py") or "/" in target:
            obj = _load_from_file(target, attr)
        else:
            try:
                obj = getattr(importlib.import_module(target), attr)
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(f"reward {ref!r}: cannot import module {target!r} ({err})") from err
            except AttributeError:
                raise AttributeError(f"reward {ref!r}: module {target!r} has no attribute {attr!r}") from None
        return _instantiate(obj, inspect.isclass(obj), kwargs, ref)
    _load_builtins()
    if ref not in _REGISTRY:
        raise KeyError(
            f"unknown reward {ref!r}; available: {', '.join(sorted(_REGISTRY))} "
            "(or give 'module:function' or 'path/to/file.py:function')"
        )
    obj, is_factory = _REGISTRY[ref]
    return _instantiate(obj, is_factory, kwargs, ref)
