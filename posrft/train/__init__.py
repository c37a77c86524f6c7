"""Learners (floor 6): SFT warm-up and HyGRPO under accelerate + DeepSpeed.

Launch: ``accelerate launch --config_file recipes/accelerate/zero2.yaml -m posrft.train
--config RECIPE.yaml [--field value ...]`` or ``posrft train RECIPE.yaml``.
"""

from posrft.train.config import HyGRPOConfig, SFTConfig

__all__ = ["HyGRPOConfig", "SFTConfig"]
