"""``python -m posrft.skeleton --config recipes/skeleton/STAGE.yaml [--field value ...]``.

What ``posrft train`` launches (through ``accelerate launch``) for recipes with
``trainer: skeleton``; parsed TrlParser-style (:mod:`posrft.train.recipe`): YAML values become
defaults, command-line flags override them, unknown keys are an error. Runs under
:func:`posrft.train.guard.run_rank` (orphan watchdog, one-line errors).
"""

from __future__ import annotations

import sys
from typing import Sequence

from posrft.skeleton.config import SkeletonConfig
from posrft.train.recipe import parse_recipe


def parse(argv: Sequence[str]) -> SkeletonConfig:
    return parse_recipe(SkeletonConfig, argv)


def train(cfg: SkeletonConfig) -> None:
    from posrft.skeleton.train import run_skeleton

    run_skeleton(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    from posrft.train.guard import run_entry_point

    return run_entry_point("posrft.skeleton", parse, train, argv)


if __name__ == "__main__":
    sys.exit(main())
