"""PosePolicy save/load: exact round trip, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from posrft.policy.config import CONFIG_NAME, POSE_HEAD_NAME, PosePolicyConfig
from posrft.policy.model import PosePolicy
from posrft.policy.prompts import encode_prompts


def _outputs(policy: PosePolicy):
    enc = encode_prompts(policy.processing, ["check", "another check"], None, policy.multimodal)
    completion = torch.tensor([[21, policy.pose_token_id, 22], [policy.pose_token_id, 23, 24]])
    with torch.no_grad():
        return policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion,
                                       torch.ones_like(completion), torch.zeros(2, 132))


def _assert_same_params(a: PosePolicy, b: PosePolicy) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_is_exact(tiny_policy, tmp_path):
    with torch.no_grad():  # make the head differ from a fresh seed-0 head
        tiny_policy.pose_head.mean_out.bias.add_(0.25)
    path = tiny_policy.save_pretrained(tmp_path / "ckpt")
    assert (path / POSE_HEAD_NAME).is_file() and (path / CONFIG_NAME).is_file()
    assert json.loads((path / CONFIG_NAME).read_text())["pose_token"] == "<POSE>"
    loaded = PosePolicy.from_pretrained(path)
    _assert_same_params(tiny_policy, loaded)
    a, b = _outputs(tiny_policy), _outputs(loaded)
    assert torch.equal(a.token_logps, b.token_logps) and torch.equal(a.pose_logp, b.pose_logp)
    assert torch.equal(a.pose_dist.mean, b.pose_dist.mean)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folders left behind


def test_missing_head_file_gives_seeded_fresh_head(tiny_model_dir):
    a = PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(head_seed=3))
    b = PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(head_seed=3))
    c = PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(head_seed=4))
    wa, wb, wc = (p.pose_head.trunk[0].weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_num_joints_configurable_and_checked_on_load(tiny_model_dir, tmp_path):
    policy = PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(num_joints=24))
    assert policy.pose_head.pose_dim == 144
    path = policy.save_pretrained(tmp_path / "j24")
    assert PosePolicy.from_pretrained(path).config.num_joints == 24
    cfg = json.loads((path / CONFIG_NAME).read_text())
    cfg["num_joints"] = 22
    (path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pose_head.safetensors.*shape"):
        PosePolicy.from_pretrained(path)


def test_overwrite_replaces_and_failed_save_keeps_old_checkpoint(tiny_policy, tmp_path, monkeypatch):
    path = tiny_policy.save_pretrained(tmp_path / "ckpt")
    before = (path / POSE_HEAD_NAME).read_bytes()
    with torch.no_grad():
        tiny_policy.pose_head.mean_out.bias.add_(1.0)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tiny_policy.processing, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        tiny_policy.save_pretrained(path)
    assert (path / POSE_HEAD_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    monkeypatch.undo()
    tiny_policy.save_pretrained(path)
    assert (path / POSE_HEAD_NAME).read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_tokenizer_without_pose_token_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match=rf"tokenizer from {tiny_model_dir}.* no '<JOINTS>' token"):
        PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(pose_token="<JOINTS>"))


def test_bad_folders_and_configs(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PosePolicy.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PosePolicy.from_pretrained(tmp_path / "empty")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pose_token": "<POSE>", "num_joint": 22}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_joint'\]"):
        PosePolicyConfig.from_json_file(bad)


def test_cli_backends_init_tiny_and_sample(tmp_path):
    import numpy as np
    from PIL import Image

    from posrft.policy.sample import init_tiny, sample

    summary = init_tiny(tmp_path / "tiny", seed=0)
    assert summary["model_parameters"] < 20_000_000 and summary["vocab_size"] > 2000
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(image)
    records = sample(summary["path"], ["Describe the pose.", "Again."], [str(image)],
                     num_generations=2, max_new_tokens=4, seed=0)
    assert len(records) == 4 and [r["prompt_index"] for r in records] == [0, 0, 1, 1]
    for r in records:
        assert isinstance(r["text"], str) and np.isfinite(r["text_logp"])
        assert (r["pose"] is None) == (not r["pose_valid"])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        sample(summary["path"], ["x"], [str(tmp_path / "missing.png")])
