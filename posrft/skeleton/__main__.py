"""``python -m posrft.skeleton --config recipes/skeleton/STAGE.yaml [--field value ...]``.

What ``posrft train`` launches (through ``accelerate launch``) for recipes with
``trainer: skeleton``; parsed TrlParser-style: YAML values become defaults, command-line flags
override them, unknown keys are an error.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from trl import TrlParser

from posrft.skeleton.config import SkeletonConfig


def parse(argv: Sequence[str]) -> SkeletonConfig:
    (cfg,) = TrlParser([SkeletonConfig]).parse_args_and_config(list(argv))
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = parse(sys.argv[1:] if argv is None else argv)
    from posrft.skeleton.train import run_skeleton

    run_skeleton(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
