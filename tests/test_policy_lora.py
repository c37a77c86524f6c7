"""PEFT LoRA on the policy: what trains, what stays frozen, reference policy, merge, save/load."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from posrft.policy.config import ADAPTER_DIR
from posrft.policy.lora import apply_lora, merge_lora, trainable_parameter_names
from posrft.policy.model import PosePolicy
from posrft.policy.prompts import encode_prompts

LM_LINEAR = r"language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
EXPECTED_TRAINABLE = re.compile(
    rf"^(model\.base_model\.model\.model\.{LM_LINEAR}\.lora_[AB]\.default\.weight"
    r"|model\.base_model\.model\.model\.multi_modal_projector\.modules_to_save\.default"
    r"\.linear_[12]\.(weight|bias)"
    r"|model\.base_model\.model\.(model\.language_model\.embed_tokens|lm_head)"
    r"\.token_adapter\.trainable_tokens_delta\.default"
    r"|pose_head\..*)$")


def _batch(policy: PosePolicy):
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (60, 60, 3), dtype=np.uint8))
    enc = encode_prompts(policy.processing, ["with an image", "text only"], [image, None], True)
    pose_id = policy.pose_token_id
    completion = torch.tensor([[31, 32, pose_id, 33], [pose_id, 34, 35, 36]])
    return enc, completion, torch.ones_like(completion), torch.full((2, 132), 0.1)


def _run(policy: PosePolicy):
    enc, completion, mask, poses = _batch(policy)
    return policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion, mask, poses,
                                   pixel_values=enc.pixel_values)


def _train_step(policy: PosePolicy, lr: float = 1e-2) -> None:
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    out = _run(policy)
    loss = -(out.token_logps.sum() + out.pose_logp.sum())
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_trainable_set_is_lora_projector_and_head(tiny_policy):
    apply_lora(tiny_policy, r=4, alpha=8)
    names = trainable_parameter_names(tiny_policy)
    unexpected = [n for n in names if not EXPECTED_TRAINABLE.match(n)]
    assert not unexpected, unexpected
    lora = [n for n in names if "lora_" in n]
    assert len(lora) == 4 * 7 * 2  # 4 layers × 7 linears × (A, B)
    assert sum("multi_modal_projector" in n for n in names) == 4
    assert sum("trainable_tokens_delta" in n for n in names) == 2  # <POSE>: embedding, untied head
    assert tiny_policy.config.lora["trainable_tokens"] == [tiny_policy.pose_token_id]
    assert sum(n.startswith("pose_head.") for n in names) == len(list(tiny_policy.pose_head.parameters()))
    assert not any("vision_tower" in n and "lora" in n for n, _ in tiny_policy.named_parameters())


def test_one_step_changes_only_trainable_params(tiny_policy):
    apply_lora(tiny_policy, r=4, alpha=8)
    before = {n: p.detach().clone() for n, p in tiny_policy.named_parameters()}
    _train_step(tiny_policy)
    changed = {n for n, p in tiny_policy.named_parameters() if not torch.equal(p, before[n])}
    trainable = set(trainable_parameter_names(tiny_policy))
    assert changed <= trainable
    # every group really trains: LoRA B (zero-initialised), projector copy, pose head
    assert any("lora_B" in n for n in changed)
    assert any("multi_modal_projector.modules_to_save" in n for n in changed)
    assert any(n.startswith("pose_head.") for n in changed)


def test_projector_learning_rate_moves_the_projector_that_much(tiny_policy):
    """Adam's first step moves a parameter with a nonzero gradient by its group's lr (up to ε):
    the projector by projector_learning_rate, the LoRA B matrices by learning_rate."""
    from posrft.train.common import policy_param_groups
    from posrft.train.config import SFTConfig

    apply_lora(tiny_policy, r=4, alpha=8)
    cfg = SFTConfig(model_name_or_path="m", dataset_path="d", use_peft=True, learning_rate=1e-2,
                    projector_learning_rate=1e-4)
    groups = policy_param_groups(cfg, tiny_policy)
    assert [g["lr"] for g in groups] == [1e-2, 1e-4]
    names = {id(p): n for n, p in tiny_policy.named_parameters()}
    assert {names[id(p)] for p in groups[1]["params"]} == {
        n for n in trainable_parameter_names(tiny_policy) if "multi_modal_projector" in n}
    before = {n: p.detach().clone() for n, p in tiny_policy.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam(groups)
    out = _run(tiny_policy)
    (-(out.token_logps.sum() + out.pose_logp.sum())).backward()
    opt.step()
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in tiny_policy.named_parameters()
            if p.requires_grad}
    proj = [v for n, v in step.items() if "multi_modal_projector" in n]
    lora_b = [v for n, v in step.items() if "lora_B" in n]
    assert max(proj) == pytest.approx(1e-4, rel=1e-2)
    assert max(lora_b) == pytest.approx(1e-2, rel=1e-2)


def test_projector_learning_rate_on_a_text_only_model_is_an_error(tiny_text_model_dir):
    from posrft.train.common import policy_param_groups
    from posrft.train.config import SFTConfig

    policy = PosePolicy.from_pretrained(tiny_text_model_dir)
    cfg = SFTConfig(model_name_or_path="m", dataset_path="d", projector_learning_rate=1e-4)
    with pytest.raises(ValueError, match="projector_learning_rate is set but the model is text-only"):
        policy_param_groups(cfg, policy)


@pytest.mark.parametrize("fields, match", [
    (dict(projector_learning_rate=0.0), "projector_learning_rate must be > 0"),
    (dict(projector_learning_rate=1e-4, train_projector=False), "train_projector is false"),
])
def test_projector_learning_rate_checks_name_the_field(fields, match):
    from posrft.train.config import SFTConfig

    with pytest.raises(ValueError, match=match):
        SFTConfig(model_name_or_path="m", dataset_path="d", **fields)


def test_disable_adapter_gives_the_pre_lora_reference(tiny_policy, tiny_model_dir):
    reference = _run(PosePolicy.from_pretrained(tiny_model_dir))
    apply_lora(tiny_policy, r=4, alpha=8)
    for _ in range(2):
        _train_step(tiny_policy)
    trained = _run(tiny_policy)
    assert (trained.token_logps - reference.token_logps).abs().max() > 1e-3
    with torch.no_grad(), tiny_policy.disable_adapter():
        ref_now = _run(tiny_policy)
    torch.testing.assert_close(ref_now.token_logps, reference.token_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_now.pose_logp, reference.pose_logp, atol=1e-5, rtol=0)
    kl = trained.pose_dist.kl(ref_now.pose_dist)  # what HyGRPO's pose KL uses
    assert (kl > 0).all()
    again = _run(tiny_policy)  # adapter and trained head are back after the block
    torch.testing.assert_close(again.token_logps, trained.token_logps)


def test_merge_matches_unmerged_and_saves_plain_hf(tiny_policy, tmp_path):
    apply_lora(tiny_policy, r=4, alpha=8)
    _train_step(tiny_policy)
    with torch.no_grad():
        unmerged = _run(tiny_policy)
    merge_lora(tiny_policy)
    assert not tiny_policy.is_lora
    with torch.no_grad():
        merged = _run(tiny_policy)
    torch.testing.assert_close(merged.token_logps, unmerged.token_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged.pose_dist.mean, unmerged.pose_dist.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged.pose_dist.log_std, unmerged.pose_dist.log_std, atol=1e-5, rtol=0)
    # log-densities summed over 132 dims are O(300): compare relatively
    torch.testing.assert_close(merged.pose_logp, unmerged.pose_logp, atol=0, rtol=1e-6)
    path = tiny_policy.save_pretrained(tmp_path / "merged")
    assert not (path / ADAPTER_DIR).exists()
    hf = AutoModelForImageTextToText.from_pretrained(path)
    assert not any("lora" in n or "modules_to_save" in n for n in hf.state_dict())
    with torch.no_grad():
        reloaded = _run(PosePolicy.from_pretrained(path))
    torch.testing.assert_close(reloaded.token_logps, merged.token_logps, atol=1e-6, rtol=0)


def test_lora_checkpoint_round_trip(tiny_model_dir, tmp_path):
    policy = PosePolicy.from_pretrained(tiny_model_dir)
    apply_lora(policy, r=4, alpha=8)
    _train_step(policy)
    path = policy.save_pretrained(tmp_path / "lora")
    assert (path / ADAPTER_DIR / "adapter_config.json").is_file()
    loaded = PosePolicy.from_pretrained(path)
    assert loaded.is_lora
    assert set(trainable_parameter_names(loaded)) == set(trainable_parameter_names(policy))
    sa, sb = policy.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        a, b = _run(policy), _run(loaded)
        torch.testing.assert_close(a.token_logps, b.token_logps, atol=0, rtol=0)
        with policy.disable_adapter(), loaded.disable_adapter():
            torch.testing.assert_close(_run(policy).pose_logp, _run(loaded).pose_logp, atol=0, rtol=0)


def test_lora_errors(tiny_policy):
    with pytest.raises(RuntimeError, match="needs a LoRA policy"):
        with tiny_policy.disable_adapter():
            pass
    with pytest.raises(ValueError, match="no LoRA adapter"):
        merge_lora(tiny_policy)
    with pytest.raises(ValueError, match="no linear layers named"):
        apply_lora(tiny_policy, target_modules=["fc1"])  # a CLIP-only layer name
    apply_lora(tiny_policy, r=2, target_modules=["q_proj", "v_proj"])
    assert all(re.search(r"\.(q|v)_proj\.lora_", n) for n in trainable_parameter_names(tiny_policy)
               if "lora_" in n)
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        apply_lora(tiny_policy)


def test_text_only_lora_and_missing_base(tiny_text_model_dir, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_text_model_dir, base)
    policy = apply_lora(PosePolicy.from_pretrained(base), r=2)
    names = trainable_parameter_names(policy)
    assert all("lora_" in n or n.startswith("pose_head.") or "trainable_tokens_delta" in n
               for n in names)
    assert sum("lora_" in n for n in names) == 4 * 7 * 2
    assert sum("trainable_tokens_delta" in n for n in names) == 2
    path = policy.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(base)
    with pytest.raises(FileNotFoundError, match="base_model_path="):
        PosePolicy.from_pretrained(path)
