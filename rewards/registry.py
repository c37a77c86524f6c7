"""Find reward functions by registry name, ``module:function`` or ``path/to/file.py:function``.

Built-ins register themselves with :func:`register_reward`. An entry is either a reward function
or a factory called once with the recipe's ``kwargs`` to build the reward (e.g. to load a
sentence encoder once, not per batch). A factory is a class, a function registered with
``factory=True``, or a *builder*: a function none of whose parameters is a reward argument
(``prompts``, ``completions``, ``completion_ids``, ``poses``, ``**kwargs``), like TRL's
``get_soft_overlong_punishment(max_completion_len, soft_punish_cache)``. A plain reward
function gets the ``kwargs`` bound (``functools.partial``).

Referencing ``module:function`` or ``file.py:function`` imports and runs that code: a recipe
that names one is code, to be trusted like any script.

:func:`check_reward_kwargs` and :func:`required_columns` let a caller check a recipe entry
before anything is built (``posrft train``'s pre-flight): unknown or missing ``kwargs`` of a
factory and dataset columns a reward function requires are named with what was expected.
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


#: Parameters through which the runner passes a batch to a reward function.
REWARD_ARGS = ("prompts", "completions", "completion_ids", "poses")


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def is_builder(fn: Any) -> bool:
    """True for a plain function that builds a reward rather than being one: none of its
    parameters is a reward argument (:data:`REWARD_ARGS`) and it takes no ``**kwargs``."""
    if inspect.isclass(fn) or not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        return False
    sig = _signature(fn)
    if sig is None:
        return False
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return False
    return not any(p.name in REWARD_ARGS for p in params)


def _is_factory(obj: Any, registered: bool | None = None) -> bool:
    if registered is not None and registered:
        return True
    return inspect.isclass(obj) or is_builder(obj)


def _close(word: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_reward_kwargs(obj: Any, is_factory: bool, kwargs: dict[str, Any], ref: str) -> None:
    """Raise ``TypeError`` naming the reward when ``kwargs`` cannot be given to ``obj``: a
    factory's unknown or missing arguments, or a plain function's unknown ones (a misspelt
    parameter name is caught even when it takes ``**kwargs``)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = _signature(target)
    if sig is None:
        return
    params = [p for p in sig.parameters.values() if p.name != "self"]
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params)
    for key in kwargs:
        if key in named:
            continue
        hint = _close(key, named)
        if not open_ended or hint:
            raise TypeError(f"reward {ref!r}: unexpected kwarg {key!r}{hint}; it takes "
                            f"{', '.join(named) or 'no kwargs'}")  # fmt: skip
    if is_factory:
        missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
        if missing:
            raise TypeError(f"reward {ref!r}: kwargs needs {', '.join(repr(m) for m in missing)} "
                            f"(the builder's required arguments)")  # fmt: skip


def required_columns(fn: Any) -> list[str]:
    """Dataset columns a built reward requires: its parameters without a default other than the
    reward arguments (e.g. TRL's ``accuracy_reward`` needs ``solution``)."""
    target = fn
    if isinstance(fn, functools.partial):
        bound = set(fn.keywords)
        return [c for c in required_columns(fn.func) if c not in bound]
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)) and callable(fn):
        target = type(fn).__call__ if not inspect.isclass(fn) else fn.__call__
    sig = _signature(target)
    if sig is None:
        return []
    return [p.name for p in sig.parameters.values()
            if p.name not in (*REWARD_ARGS, "self") and p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip


def _instantiate(obj: Any, is_factory: bool, kwargs: dict[str, Any], ref: str) -> Callable:
    if not callable(obj):
        raise TypeError(f"reward {ref!r} resolves to {type(obj).__name__}, which is not callable")
    check_reward_kwargs(obj, is_factory, kwargs, ref)
    if is_factory:
        built = obj(**kwargs)
        if not callable(built):
            raise TypeError(f"reward {ref!r}: its builder returned {type(built).__name__}, not a "
                            "reward function")  # fmt: skip
        return built
    return functools.partial(obj, **kwargs) if kwargs else obj


def lookup_reward(ref: str | Callable) -> tuple[Any, bool]:
    """``(object, is_factory)`` for ``ref`` without building it (imports the module or file)."""
    if callable(ref):
        return ref, _is_factory(ref)
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
        return obj, _is_factory(obj)
    _load_builtins()
    if ref not in _REGISTRY:
        raise KeyError(
            f"unknown reward {ref!r}{_close(ref, sorted(_REGISTRY))}; available: "
            f"{', '.join(sorted(_REGISTRY))} (or give 'module:function' or 'path/to/file.py:function')"
        )
    obj, is_factory = _REGISTRY[ref]
    return obj, _is_factory(obj, is_factory)


def resolve_reward(ref: str | Callable, kwargs: dict[str, Any] | None = None) -> Callable:
    """Return a ready-to-call reward for ``ref``.

    ``ref`` is a callable, a registry name, ``package.module:function`` or
    ``path/to/file.py:function``. ``kwargs`` go to a factory (see the module doc), or are bound
    to a plain function.
    """
    obj, is_factory = lookup_reward(ref)
    name = ref if isinstance(ref, str) else getattr(ref, "__name__", "reward")
    return _instantiate(obj, is_factory, dict(kwargs or {}), name)
