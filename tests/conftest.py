"""Shared pytest fixtures. Everything runs offline: no model hub access from any test."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub, which reads these once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder with the tiny random LLaVA model + processor (seed 0), built once per session.

    Treat it as read-only: copy it (``shutil.copytree``) before writing into it.
    """
    from posrft.policy.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llava", seed=0)


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory):
    """Folder with the tiny random text-only Qwen2 causal LM (same tokenizer, seed 0)."""
    from posrft.policy.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("tiny_text") / "qwen2", seed=0)


@pytest.fixture
def tiny_policy(tiny_model_dir):
    """A fresh ``PosePolicy`` on the tiny LLaVA model (pose head from seed 0), per test."""
    from posrft.policy.model import PosePolicy

    return PosePolicy.from_pretrained(tiny_model_dir)


@pytest.fixture
def nudge_logits():
    """``nudge(policy, {token: bias})`` gives the policy's LM head a bias so the random model
    emits e.g. ``<POSE>``/EOS often. Only for in-memory tests: the bias is not a checkpoint key."""
    import torch

    def nudge(policy, biases: dict[str, float]) -> None:
        head = policy.hf_model.get_output_embeddings()
        # a LoRA head with trainable <POSE> rows is PEFT's wrapper around the Linear
        layer = getattr(head, "token_adapter", None)
        linear = head if layer is None else layer.base_layer
        bias = torch.zeros(linear.out_features)
        for token, value in biases.items():
            bias[policy.tokenizer.convert_tokens_to_ids(token)] = value
        linear.bias = torch.nn.Parameter(bias, requires_grad=False)
        if layer is not None:  # PEFT computes x Wᵀ itself (no bias) unless disabled or merged
            layer.register_forward_hook(
                lambda m, _args, out: out if m.disable_adapters or m.merged or not m.active_adapters
                else out + m.base_layer.bias.to(out.dtype))

    return nudge


@pytest.fixture(scope="session")
def text2pose_dir(tmp_path_factory):
    """A small synthetic text->pose DatasetDict on disk (48/8/8 rows, seed 0)."""
    from posrft.data.synth import build_text2pose

    out = tmp_path_factory.mktemp("data") / "text2pose"
    build_text2pose(48, 8, 8, seed=0, out_dir=out)
    return out


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory, tiny_model_dir, text2pose_dir):
    """The tiny model after a short SFT, so it emits <POSE> often enough for RL signal."""
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    return run_sft(SFTConfig(model_name_or_path=str(tiny_model_dir), dataset_path=str(text2pose_dir),
                             output_dir=str(out), max_steps=10, learning_rate=3e-3,
                             report_to=["none"]))  # fmt: skip
