"""``posrft train RECIPE.yaml``: launch the learner exactly as ``accelerate launch`` would.

    accelerate launch --config_file ACCEL.yaml -m posrft.train --config RECIPE.yaml [overrides]

The accelerate config is, in order: ``--accelerate-config``, the recipe's
``accelerate_config`` key, then ``recipes/accelerate/zero2.yaml`` when it exists (2 processes,
DeepSpeed ZeRO-2 — gloo on a CPU-only machine). The recipe is never evaluated, only parsed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import yaml

DEFAULT_ACCELERATE = Path("recipes/accelerate/zero2.yaml")


def launch_command(recipe: str | os.PathLike, overrides: Sequence[str] = (),
                   accelerate_config: str | None = None, num_processes: int | None = None) -> list[str]:  # fmt: skip
    recipe = Path(recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe {str(recipe)!r} does not exist")
    with open(recipe) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise ValueError(f"recipe {str(recipe)!r} must be a YAML mapping")
    accel = accelerate_config or spec.get("accelerate_config")
    if accel is None and DEFAULT_ACCELERATE.is_file():
        accel = str(DEFAULT_ACCELERATE)
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    if accel is not None:
        if not Path(accel).is_file():
            raise FileNotFoundError(f"accelerate config {accel!r} does not exist")
        cmd += ["--config_file", str(accel)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    return cmd + ["-m", learner_module(spec), "--config", str(recipe), *overrides]


#: Recipes whose ``trainer`` key names a SkeletonLLM stage run the skeleton learner (floor 7),
#: every other recipe runs ``posrft.train`` (floor 6); both parse the recipe TrlParser-style.
SKELETON_TRAINERS = ("skeleton",)


def learner_module(spec: dict) -> str:
    """The ``-m`` module accelerate launches for a parsed recipe."""
    return "posrft.skeleton" if spec.get("trainer") in SKELETON_TRAINERS else "posrft.train"


def launch(recipe: str | os.PathLike, overrides: Sequence[str] = (), accelerate_config: str | None = None,
           num_processes: int | None = None) -> int:  # fmt: skip
    """Run the learner; returns its exit code (non-zero when any rank failed)."""
    cmd = launch_command(recipe, overrides, accelerate_config, num_processes)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return subprocess.call(cmd, env=env)
