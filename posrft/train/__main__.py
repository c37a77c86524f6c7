"""``python -m posrft.train --config RECIPE.yaml [--field value ...]`` (what accelerate launches).

The recipe's ``trainer`` key (``sft`` or ``hygrpo``; or ``--trainer`` on the command line)
picks the config class; the rest is parsed TrlParser-style (:mod:`posrft.train.recipe`): YAML
values become defaults, command-line flags override them, unknown keys are an error with the
closest field names. ``posrft train`` checks all of this once before launching
(:mod:`posrft.preflight`); here every rank parses again and runs under
:func:`posrft.train.guard.run_rank` (orphan watchdog, one-line errors).
"""

from __future__ import annotations

import sys
from typing import Sequence

from posrft.train.config import HyGRPOConfig, SFTConfig
from posrft.train.recipe import parse_recipe, pick_config

CONFIGS = {"sft": SFTConfig, "hygrpo": HyGRPOConfig}
#: trainers another entry point runs (floor 7 cannot be imported from here)
ELSEWHERE = {"skeleton": "python -m posrft.skeleton"}


def trainer_kind(argv: Sequence[str]) -> str:
    cls = pick_config(CONFIGS, argv, ELSEWHERE)
    return next(k for k, c in CONFIGS.items() if c is cls)


def parse(argv: Sequence[str]) -> SFTConfig | HyGRPOConfig:
    return parse_recipe(pick_config(CONFIGS, argv, ELSEWHERE), argv)


def train(cfg: SFTConfig | HyGRPOConfig) -> None:
    if isinstance(cfg, SFTConfig):
        from posrft.train.sft import run_sft

        run_sft(cfg)
    else:
        from posrft.train.hygrpo import run_hygrpo

        run_hygrpo(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    from posrft.train.guard import run_entry_point

    return run_entry_point("posrft.train", parse, train, argv)


if __name__ == "__main__":
    sys.exit(main())
