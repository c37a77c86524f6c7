"""Parse a recipe (``--config R.yaml``) plus ``--field value`` overrides into one config dataclass.

TRL's ``TrlParser`` does the merging (YAML values become argparse defaults, flags override them),
with four differences that keep a recipe data and every mistake a one-line error:

* an unknown key (in the YAML or as a flag) is a :class:`RecipeError` that lists every unknown
  key and the closest field names ("did you mean ``max_steps``?");
* TRL's ``env:`` key, which would set environment variables from the recipe, is refused;
* argparse's complaints (``invalid float value``) become a :class:`RecipeError` instead of a
  usage dump and ``SystemExit``;
* a YAML syntax error names the file, the line and the column.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import yaml
from trl import TrlParser

T = TypeVar("T")


class RecipeError(ValueError):
    """A recipe or an override is wrong; the message names the file or the key."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe's YAML mapping. ``env:`` is refused: a recipe sets trainer fields only."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"recipe {str(path)!r} is not a text file ({err.reason})") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise RecipeError(f"recipe {str(path)!r} must be a YAML mapping of trainer fields, "
                          f"got a {type(spec).__name__}")  # fmt: skip
    if "env" in spec:
        raise RecipeError(
            f"recipe {str(path)!r}: the 'env' key is not supported (a recipe sets trainer fields, "
            "not environment variables); export the variables in the shell that runs posrft"
        )
    bad = [k for k in spec if not isinstance(k, str)]
    if bad:
        raise RecipeError(f"recipe {str(path)!r}: keys must be strings, got {bad!r}")
    return spec


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_keys(cls: type, keys: Iterable[str], source: str) -> None:
    """Raise one :class:`RecipeError` naming every key of ``keys`` that ``cls`` lacks."""
    names = field_names(cls)
    unknown = [k for k in keys if k not in names]
    if not unknown:
        return
    parts = [f"{k!r}{did_you_mean(k, names)}" for k in unknown]
    noun = "key" if len(unknown) == 1 else "keys"
    raise RecipeError(f"{source}: unknown {noun} {', '.join(parts)} for trainer "
                      f"{getattr(cls, 'KIND', '') or cls.__name__!r}")  # fmt: skip


def override_keys(argv: Sequence[str]) -> list[str]:
    """Field names set by ``--field value`` / ``--field=value`` flags (``--config`` excluded)."""
    keys = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--config":
            skip = True
            continue
        if arg.startswith("--") and len(arg) > 2:
            keys.append(arg[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def config_path(argv: Sequence[str]) -> str | None:
    argv = list(argv)
    if "--config" not in argv:
        return None
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise RecipeError("--config needs a recipe file")
    return argv[i + 1]


class _Parser(TrlParser):
    """TrlParser whose errors raise :class:`RecipeError` instead of printing usage and exiting,
    naming the field and where its value came from."""

    recipe: str | None = None
    recipe_keys: frozenset[str] = frozenset()
    overridden: frozenset[str] = frozenset()

    def error(self, message: str):  # argparse API
        m = re.match(r"argument --([\w-]+)(?:/--[\w-]+)*: (.*)", message, re.S)
        if not m:
            raise RecipeError(f"command line: {message}")
        name = m.group(1).replace("-", "_")
        source = "command line"
        if name in self.recipe_keys and name not in self.overridden:
            source = f"recipe {self.recipe!r}"
        raise RecipeError(f"{source}: {name}: {m.group(2)}")


def parse_recipe(cls: type[T], argv: Sequence[str]) -> T:
    """``cls`` from ``--config R.yaml`` and ``--field value`` overrides (see the module doc)."""
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        _Parser([cls]).print_help()
        raise SystemExit(0)
    path = config_path(argv)
    if path is not None:
        spec = read_recipe(path)
        check_keys(cls, spec, f"recipe {path!r}")
    check_keys(cls, override_keys(argv), "command line")
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1 and not _is_number(arg):
            raise RecipeError(f"command line: unexpected argument {arg!r} (fields are set with --field value)")
    parser = _Parser([cls])
    if path is not None:
        parser.recipe, parser.recipe_keys = path, frozenset(spec)
    parser.overridden = frozenset(override_keys(argv))
    (cfg,) = parser.parse_args_and_config(argv)
    return cfg


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def pick_config(kinds: dict[str, type], argv: Sequence[str], elsewhere: dict[str, str] | None = None) -> type:
    """The config class of the recipe's ``trainer`` (``--trainer`` on the command line wins).

    ``elsewhere`` maps trainer names that another entry point runs to that entry point, so that
    the error for them says where to go instead of listing them as unknown.
    """
    argv = list(argv)
    elsewhere = elsewhere or {}
    kind: Any = None
    if "--trainer" in argv:
        i = argv.index("--trainer")
        kind = argv[i + 1] if i + 1 < len(argv) else None
    else:
        path = config_path(argv)
        if path is not None:
            kind = read_recipe(path).get("trainer")
    if kind in kinds:
        return kinds[kind]
    if kind in elsewhere:
        raise RecipeError(f"trainer {kind!r} recipes run with {elsewhere[kind]} (posrft train picks it)")
    known = sorted([*kinds, *elsewhere])
    hint = did_you_mean(str(kind), known) if isinstance(kind, str) else ""
    raise RecipeError(f"trainer must be one of {known} (recipe key 'trainer'), got {kind!r}{hint}")


__all__ = ["RecipeError", "check_keys", "did_you_mean", "field_names", "parse_recipe",
           "pick_config", "read_recipe"]  # fmt: skip
