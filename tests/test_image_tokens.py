"""``image_token_norm``: the projector's tokens get a fixed L2 norm, through LoRA and reloads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.policy.image_tokens import projector_module_names, set_image_token_norm
from posrft.policy.lora import apply_lora
from posrft.policy.model import PosePolicy
from posrft.policy.prompts import encode_prompts


def _pinned_dir(src, tmp_path, norm):
    dst = tmp_path / "pinned"
    shutil.copytree(src, dst)
    cfg_file = dst / "posrft_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg_file.write_text(json.dumps({**cfg, "image_token_norm": norm}))
    return dst


def _projector_outputs(policy):
    """Run one image prompt and return what the projector handed to the language model."""
    seen = []
    name = projector_module_names(policy.model, policy.family)[0]
    # the outermost projector module: under LoRA, PEFT's wrapper, which returns the active copy's output
    hook = policy.model.get_submodule(name).register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (60, 60, 3), dtype=np.uint8))
    enc = encode_prompts(policy.processing, ["with an image"], [image], True)
    completion = torch.tensor([[31, policy.pose_token_id, 33]])
    try:
        with torch.no_grad():
            out = policy(enc.input_ids, enc.attention_mask, completion, torch.ones_like(completion),
                         mm_inputs=enc.mm_inputs)  # fmt: skip
    finally:
        hook.remove()
    return seen[-1], out.token_logps


def test_tokens_are_the_unpinned_tokens_rescaled_to_the_norm(tiny_model_dir, tmp_path):
    free, free_logps = _projector_outputs(PosePolicy.from_pretrained(tiny_model_dir))
    pinned, pinned_logps = _projector_outputs(PosePolicy.from_pretrained(_pinned_dir(tiny_model_dir, tmp_path, 1.5)))
    torch.testing.assert_close(pinned, 1.5 * free / free.norm(dim=-1, keepdim=True))
    assert not torch.allclose(pinned_logps, free_logps)  # the language model reads the pinned tokens


def test_pin_keeps_through_lora_disable_adapter_and_reload(tiny_model_dir, tmp_path):
    policy = PosePolicy.from_pretrained(_pinned_dir(tiny_model_dir, tmp_path, 2.0))
    apply_lora(policy, r=4, alpha=8)
    with torch.no_grad():  # move the trainable projector copy (and LoRA) away from the original
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    tokens, logps = _projector_outputs(policy)
    torch.testing.assert_close(tokens.norm(dim=-1), torch.full(tokens.shape[:-1], 2.0))
    with policy.disable_adapter():
        ref_tokens, _ = _projector_outputs(policy)
    torch.testing.assert_close(ref_tokens.norm(dim=-1), torch.full(ref_tokens.shape[:-1], 2.0))
    assert not torch.allclose(tokens, ref_tokens)
    loaded = PosePolicy.from_pretrained(policy.save_pretrained(tmp_path / "lora"))
    assert loaded.config.image_token_norm == 2.0
    tokens2, logps2 = _projector_outputs(loaded)
    torch.testing.assert_close(tokens2, tokens, atol=0, rtol=0)
    torch.testing.assert_close(logps2, logps, atol=0, rtol=0)


def test_gradient_of_the_pin_matches_finite_differences():
    proj = torch.nn.Linear(5, 4).double()

    class Family:  # the registry's contract: is_projector(name) and projector_modules
        projector_modules = ("proj",)

        @staticmethod
        def is_projector(name):
            return name == "proj"

    model = torch.nn.Module()
    model.proj = proj
    set_image_token_norm(model, Family, 3.0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model.proj(t), (x,))
    torch.testing.assert_close(model.proj(x).norm(dim=-1), torch.full((2, 3), 3.0, dtype=torch.float64))


def test_errors_name_the_setting(tiny_text_model_dir, tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="image_token_norm=1.0 but the model .* is text-only"):
        PosePolicy.from_pretrained(_pinned_dir(tiny_text_model_dir, tmp_path, 1.0))
    with pytest.raises(ValueError, match="image_token_norm must be > 0"):
        set_image_token_norm(tiny_policy.model, tiny_policy.family, 0.0)
