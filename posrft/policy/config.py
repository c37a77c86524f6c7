"""``PosePolicyConfig``: the policy's own settings, stored next to the HF files as
``posrft_config.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from posrft.policy.pose_head import SigmaSettings

CONFIG_NAME = "posrft_config.json"
POSE_HEAD_NAME = "pose_head.safetensors"
REF_POSE_HEAD_NAME = "ref_pose_head.safetensors"
ADAPTER_DIR = "adapter"


@dataclass
class PosePolicyConfig:
    """Settings of the pose head and of how the policy finds it in the text.

    pose_token: the special token whose last hidden state feeds the head.
    num_joints: rotations predicted (global orientation + 21 SMPL body joints = 22); D = 6·J.
    head_hidden_size: MLP width; ``None`` means the language model's hidden size.
    log_std_min / log_std_max / init_log_std: see :class:`GaussianPoseHead`.
    head_seed: seed for a freshly initialised head (checkpoint without ``pose_head.safetensors``).
    base_model_path: set only for LoRA checkpoints: the folder holding the frozen base model.
    lora: the LoRA settings of a LoRA checkpoint (r, alpha, dropout, target module names...).
    sigma: how the head's σ is produced when not the learned default (``SigmaSettings`` fields:
        mode, value, min, max), e.g. set for RL.
    image_token_norm: pin the L2 norm of every image token the projector emits to this value
        (:mod:`posrft.policy.image_tokens`); ``None`` leaves the projector's output as it is.
    image_tokens_standardized: the projector's output layer has been refitted so that each
        channel of its tokens has zero mean and the text embeddings' spread over training
        pictures (:func:`posrft.policy.image_tokens.standardize_image_tokens`); a later SFT
        stage does not refit it.
    head_reads_image: the pose head also attends to the prompt's image tokens, queried by the
        ``<POSE>`` state (:mod:`posrft.policy.image_reader`), instead of relying on the language
        model alone to carry the picture to ``<POSE>``.
    """

    pose_token: str = "<POSE>"
    num_joints: int = 22
    head_hidden_size: int | None = None
    log_std_min: float = -5.0
    log_std_max: float = 0.0
    init_log_std: float = -2.0
    head_seed: int = 0
    base_model_path: str | None = None
    lora: dict | None = None
    sigma: dict | None = None
    image_token_norm: float | None = None
    image_tokens_standardized: bool = False
    head_reads_image: bool = False

    @property
    def sigma_settings(self) -> "SigmaSettings":
        from posrft.policy.pose_head import SigmaSettings

        return SigmaSettings(**(self.sigma or {}))

    @property
    def pose_dim(self) -> int:
        return 6 * self.num_joints

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> "PosePolicyConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)
