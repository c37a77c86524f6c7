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


# ------------------------------------------------------------------------------ standardisation
def test_fold_standardization_matches_the_affine_map():
    from posrft.policy.image_tokens import fold_standardization

    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    x = torch.randn(7, 5)
    mean, std = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 2.0, 0.1])
    with torch.no_grad():
        expected = 0.7 * (layer(x) - mean) / std
        fold_standardization(layer, mean, std, 0.7)
        torch.testing.assert_close(layer(x), expected)
    with pytest.raises(ValueError, match="zero spread"):
        fold_standardization(layer, mean, torch.tensor([1.0, 0.0, 1.0]), 1.0)


def _pictures(n, seed=0):
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 255, (60, 60, 3), dtype=np.uint8)) for _ in range(n)]


def _tokens(policy, pictures):
    """The projector's tokens (N·T, H) for one-picture prompts, recomputed with a plain forward."""
    seen = []
    name = projector_module_names(policy.model, policy.family)[0]
    hook = policy.model.get_submodule(name).register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            for pic in pictures:
                enc = encode_prompts(policy.processing, ["pose?"], [pic], True)
                policy.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                             **policy.model_inputs(enc.mm_inputs, None))  # fmt: skip
    finally:
        hook.remove()
    return torch.cat([t.reshape(-1, t.shape[-1]) for t in seen]).double()


def test_standardized_tokens_have_zero_mean_and_the_text_embedding_spread(tiny_model_dir):
    from posrft.policy.image_tokens import standardize_image_tokens, text_embedding_norm

    policy = PosePolicy.from_pretrained(tiny_model_dir).eval()
    pictures = _pictures(6)
    before = _tokens(policy, pictures)

    def runs():
        for k in range(0, 6, 3):  # two batches of three one-picture prompts
            enc = encode_prompts(policy.processing, ["pose?"] * 3, pictures[k:k + 3], True)
            yield lambda enc=enc: policy.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                                               **policy.model_inputs(enc.mm_inputs, None))  # fmt: skip

    report = standardize_image_tokens(policy.model, policy.family, runs())
    after = _tokens(policy, pictures)
    hidden = policy.model.get_input_embeddings().weight.shape[1]
    scale = text_embedding_norm(policy.model) / hidden ** 0.5
    torch.testing.assert_close(after.mean(0), torch.zeros(hidden, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(after.std(0), torch.full((hidden,), scale, dtype=torch.float64), atol=1e-4, rtol=1e-3)
    # an affine map of each channel: the tokens before, standardised in float64, are the tokens after
    torch.testing.assert_close(after, scale * (before - before.mean(0)) / before.std(0), atol=1e-4, rtol=1e-3)
    (entry,) = report.values()
    assert entry["tokens"] == len(before) and entry["scale"] == pytest.approx(scale)


def test_standardize_needs_a_last_linear_with_a_bias(tiny_model_dir):
    from posrft.policy.image_tokens import standardize_image_tokens

    policy = PosePolicy.from_pretrained(tiny_model_dir)
    name = projector_module_names(policy.model, policy.family)[0]
    last = [m for m in policy.model.get_submodule(name).modules() if isinstance(m, torch.nn.Linear)][-1]
    last.bias = None
    with pytest.raises(ValueError, match=f"last linear layer of {name} has no bias"):
        standardize_image_tokens(policy.model, policy.family, [])


def test_sft_standardizes_once_and_records_it(tmp_path, tiny_model_dir, tiny_text_model_dir, text2pose_dir):
    """standardize_image_tokens in SFT: the exported projector emits standardised tokens over
    the first training pictures (before any step; lr ~0), the config records it, and a second
    stage on other pictures does not refit. A text-only set-up is an error naming the field."""
    from datasets import load_from_disk

    from posrft.data.synth import build_image2pose
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    data = tmp_path / "i2p"
    build_image2pose(24, 2, 2, seed=0, out_dir=data, image_size=48)
    pictures = list(load_from_disk(str(data))["train"]["images"])
    pictures = [p[0] if isinstance(p, list) else p for p in pictures]
    kw = dict(dataset_path=str(data), max_steps=1, per_device_train_batch_size=4, report_to=["none"],
              learning_rate=1e-12, standardize_image_tokens=True)  # fmt: skip
    out = run_sft(SFTConfig(model_name_or_path=str(tiny_model_dir), output_dir=str(tmp_path / "a"), **kw))
    policy = PosePolicy.from_pretrained(out).eval()
    assert policy.config.image_tokens_standardized
    tokens = _tokens(policy, pictures)
    assert tokens.mean(0).abs().max() < 1e-3
    other = tmp_path / "i2p_other"  # other pictures: a refit would move the tokens
    build_image2pose(24, 2, 2, seed=1, out_dir=other, image_size=48)
    again = run_sft(SFTConfig(model_name_or_path=str(out), output_dir=str(tmp_path / "b"),
                              **{**kw, "dataset_path": str(other)}))  # fmt: skip
    torch.testing.assert_close(_tokens(PosePolicy.from_pretrained(again), pictures), tokens, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="standardize_image_tokens needs pictures"):
        run_sft(SFTConfig(model_name_or_path=str(tiny_text_model_dir), output_dir=str(tmp_path / "c"),
                          **{**kw, "dataset_path": str(text2pose_dir)}))  # fmt: skip
