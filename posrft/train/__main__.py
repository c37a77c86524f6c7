"""``python -m posrft.train --config RECIPE.yaml [--field value ...]`` (what accelerate launches).

The recipe's ``trainer`` key (``sft`` or ``hygrpo``; or ``--trainer`` on the command line)
picks the config class; the rest is parsed TrlParser-style: YAML values become defaults,
command-line flags override them, and unknown keys are an error.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

import yaml
from trl import TrlParser

from posrft.train.config import HyGRPOConfig, SFTConfig

CONFIGS = {"sft": SFTConfig, "hygrpo": HyGRPOConfig}


def trainer_kind(argv: Sequence[str]) -> str:
    argv = list(argv)
    kind = None
    if "--trainer" in argv:
        kind = argv[argv.index("--trainer") + 1]
    elif "--config" in argv:
        with open(argv[argv.index("--config") + 1]) as f:
            recipe = yaml.safe_load(f)
        if not isinstance(recipe, dict):
            raise ValueError(f"recipe {argv[argv.index('--config') + 1]} must be a YAML mapping")
        kind = recipe.get("trainer")
    if kind not in CONFIGS:
        raise ValueError(f"trainer must be one of {sorted(CONFIGS)} (recipe key 'trainer'), got {kind!r}")
    return kind


def parse(argv: Sequence[str]) -> SFTConfig | HyGRPOConfig:
    kind = trainer_kind(argv)
    (cfg,) = TrlParser([CONFIGS[kind]]).parse_args_and_config(list(argv))
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = parse(sys.argv[1:] if argv is None else argv)
    if isinstance(cfg, SFTConfig):
        from posrft.train.sft import run_sft

        run_sft(cfg)
    else:
        from posrft.train.hygrpo import run_hygrpo

        run_hygrpo(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
