"""Learners on one process: config validation, SFT, HyGRPO (in-process sampling), exact resume."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from posrft.train.__main__ import parse
from posrft.train.config import HyGRPOConfig, SFTConfig


def _recipe(tmp_path, text):
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return str(p)


# --------------------------------------------------------------------------- configs
def test_yaml_recipe_with_overrides_and_trainer_dispatch(tmp_path):
    path = _recipe(tmp_path, "trainer: hygrpo\nnum_generations: 4\nper_device_train_batch_size: 8\n"
                             "rewards:\n  - {func: format, weight: 2.0}\n")  # fmt: skip
    cfg = parse(["--config", path, "--beta", "0.1"])
    assert isinstance(cfg, HyGRPOConfig) and cfg.beta == 0.1 and cfg.num_generations == 4
    assert cfg.rewards == [{"func": "format", "weight": 2.0}]


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("trainer: sft\nmax_stepz: 3\n", ValueError, r"unknown key 'max_stepz' \(did you mean 'max_steps'\?\)"),
        ("trainer: sft\nlearning_rate: [1, 2]\n", TypeError, r"learning_rate: expected float, got \[1, 2\]"),
        ("trainer: sft\nuse_peft: 3\n", TypeError, r"use_peft: expected bool, got 3"),
        ("trainer: hygrpo\nnum_generations: 3\nper_device_train_batch_size: 8\n", ValueError,
         r"multiple of num_generations \(3\)"),
        ("trainer: hygrpo\nnum_generations: 1\n", ValueError, r"num_generations must be >= 2"),
        ("trainer: hygrpo\npose_ratio: sum\n", TypeError, r"pose_ratio: expected one of 'per_dim', 'joint'"),
        ("trainer: hygrpo\npose_sigma_min: 0.2\npose_sigma_max: 0.1\n", ValueError, r"pose_sigma_min \(0.2\) must be <"),
        ("trainer: hygrpo\npose_sigma: fixed\npose_sigma_value: 0.0\n", ValueError, r"pose_sigma='fixed' needs pose_sigma_value > 0"),
        ("trainer: hygrpo\npose_advantage_group: siblings\nnum_pose_samples: 1\n", ValueError, r"needs num_pose_samples >= 2"),
        ("trainer: hygrpo\nper_joint_credit: true\npose_ratio: joint\n", ValueError, r"per_joint_credit needs pose_ratio"),
        ("trainer: hygrpo\npose_kl: l1\n", TypeError, r"pose_kl: expected one of 'gaussian', 'mean_l2'"),
        ("trainer: hygrpo\nrewards: []\n", ValueError, r"rewards must be a non-empty list"),
        ("trainer: sft\npose_joint_loss_weight: -1\n", ValueError, r"pose_joint_loss_weight must be >= 0, got -1"),
        ("trainer: ppo\n", ValueError, r"trainer must be one of \['hygrpo', 'sft', 'skeleton'\]"),
    ],
)  # fmt: skip
def test_bad_recipes_name_the_field(tmp_path, text, error, match):
    with pytest.raises(error, match=match):
        parse(["--config", _recipe(tmp_path, text)])


def test_unparsable_string_is_an_error_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match="recipe .*: learning_rate: invalid float value: 'fast'"):
        parse(["--config", _recipe(tmp_path, "trainer: sft\nlearning_rate: fast\n")])


def test_missing_dataset_column_is_reported_before_training(tmp_path, tiny_model_dir):
    from datasets import Dataset, DatasetDict

    from posrft.train.sft import run_sft

    DatasetDict(train=Dataset.from_dict({"prompt": ["hi"]})).save_to_disk(str(tmp_path / "d"))
    cfg = SFTConfig(model_name_or_path=str(tiny_model_dir), dataset_path=str(tmp_path / "d"),
                    output_dir=str(tmp_path / "out"), report_to=["none"])  # fmt: skip
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['completion', 'gt_pose_6d'\]"):
        run_sft(cfg)


# --------------------------------------------------------------------------- SFT
def test_sft_learns_the_response_and_pose(tmp_path, tiny_model_dir, text2pose_dir):
    from posrft.policy.model import PosePolicy
    from posrft.train.sft import run_sft

    cfg = SFTConfig(model_name_or_path=str(tiny_model_dir), dataset_path=str(text2pose_dir),
                    output_dir=str(tmp_path / "sft"), max_steps=12, learning_rate=3e-3,
                    per_device_train_batch_size=8, report_to=["none"])  # fmt: skip
    out = run_sft(cfg)
    log = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert log[-1]["loss/sft_text"] < 0.5 * log[0]["loss/sft_text"]
    assert log[-1]["loss/sft_pose"] < log[0]["loss/sft_pose"]
    policy = PosePolicy.from_pretrained(out)  # the export loads back
    assert policy.config.pose_dim == 132


def test_sft_joint_loss_is_logged_every_step(tmp_path, tiny_model_dir, text2pose_dir):
    from posrft.train.sft import run_sft

    cfg = SFTConfig(model_name_or_path=str(tiny_model_dir), dataset_path=str(text2pose_dir),
                    output_dir=str(tmp_path / "sft"), max_steps=3, pose_loss="l2", pose_joint_loss_weight=1.0,
                    per_device_train_batch_size=8, logging_steps=1, report_to=["none"])  # fmt: skip
    run_sft(cfg)
    log = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(0 < r["loss/sft_joints"] < 1.0 for r in log)  # metres
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["pose_joint_loss_weight"] == 1.0


# --------------------------------------------------------------------------- HyGRPO
def _grpo_cfg(tmp_path, model, data, name, **kw):
    base = dict(model_name_or_path=str(model), dataset_path=str(data), output_dir=str(tmp_path / name),
                max_steps=4, per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
                learning_rate=1e-3, report_to=["none"], num_rollout_workers=0, beta=0.04,
                rewards=[{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}])  # fmt: skip
    base.update(kw)
    return HyGRPOConfig(**base)


def test_hygrpo_runs_logs_and_exports(tmp_path, sft_model, text2pose_dir):
    from posrft.train.hygrpo import run_hygrpo

    out = run_hygrpo(_grpo_cfg(tmp_path, sft_model, text2pose_dir, "grpo", pose_grid_steps=2))
    log = [json.loads(line) for line in open(tmp_path / "grpo" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for key in ("reward/text", "rewards/format/mean", "rewards/joint/mean", "pose/valid_frac",
                "kl/text", "clip/text_high", "time/rollout", "time/update", "throughput/samples_per_s",
                "grad_norm", "lr", "staleness/mean", "staleness/max", "sync/bytes"):
        assert key in log[0], key
    assert log[0]["pose/valid_frac"] > 0
    assert all(r["staleness/max"] == 0 for r in log)  # max_staleness 0: strictly on-policy
    assert (tmp_path / "grpo" / "config.json").is_file()
    assert (tmp_path / "grpo" / "poses" / "step_000002.png").is_file()
    assert (tmp_path / "grpo" / "completions.jsonl").stat().st_size > 0
    before = load_file(str(sft_model / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, sft_model, text2pose_dir):
    from posrft.train.hygrpo import run_hygrpo

    full = run_hygrpo(_grpo_cfg(tmp_path, sft_model, text2pose_dir, "full", save_steps=2))
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = run_hygrpo(_grpo_cfg(tmp_path, sft_model, text2pose_dir, "resumed", save_steps=2,
                                   resume_from_checkpoint="latest"))  # fmt: skip
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = load_file(str(full / "pose_head.safetensors"))
    hb = load_file(str(resumed / "pose_head.safetensors"))
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    steps = [json.loads(line)["step"] for line in open(resumed_dir / "metrics.jsonl")]
    assert steps == [3, 4]


def test_hygrpo_with_lora_uses_the_disabled_adapter_as_reference(tmp_path, sft_model, text2pose_dir):
    from posrft.policy.model import PosePolicy
    from posrft.train.hygrpo import run_hygrpo

    out = run_hygrpo(_grpo_cfg(tmp_path, sft_model, text2pose_dir, "lora", max_steps=2, use_peft=True,
                               lora_r=4, merge_lora_on_export=True))  # fmt: skip
    log = [json.loads(line) for line in open(tmp_path / "lora" / "metrics.jsonl")]
    assert log[0]["kl/text"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    merged = PosePolicy.from_pretrained(out)
    assert not merged.is_lora


@pytest.mark.parametrize("discrete_only", [False, True])
def test_discrete_only_scores_the_head_mean(tiny_policy, nudge_logits, discrete_only):
    """Text-only GRPO treats the head as deterministic: its rewards see μ, HyGRPO's the samples."""
    from posrft.train.experience import build_experience
    from rewards import RewardRunner

    seen = []

    def record(prompts, completions, poses=None, **kw):
        seen.extend(poses)
        return [0.0 if p is None else float(p.sum()) for p in poses]

    nudge_logits(tiny_policy, {"<POSE>": 30.0})
    cfg = HyGRPOConfig(num_generations=4, per_device_train_batch_size=8, discrete_only=discrete_only, num_pose_samples=1,
                       rewards=[{"func": record, "target": "text" if discrete_only else "pose"}])  # fmt: skip
    batch = tiny_policy.rollout(["a", "b"], num_generations=4, max_new_tokens=3, seed=0)
    rows = [{"prompt": "a"}, {"prompt": "b"}]
    build_experience(cfg, rows, batch, torch.zeros(8, dtype=torch.long), RewardRunner(cfg.rewards))
    expected = batch.pose_mean if discrete_only else batch.pose[:, 0]
    assert not torch.allclose(batch.pose[:, 0], batch.pose_mean)
    assert torch.equal(torch.stack(seen), expected)


def test_rl_sigma_settings_survive_save_and_reload(tiny_model_dir, tmp_path):
    from posrft.policy.model import PosePolicy
    from posrft.train.common import build_policy

    cfg = HyGRPOConfig(model_name_or_path=str(tiny_model_dir), pose_sigma="state_independent",
                       pose_sigma_value=0.05, pose_sigma_max=0.1)
    policy = build_policy(cfg)
    assert policy.pose_head.free_log_std.requires_grad
    policy.save_pretrained(tmp_path / "p")
    back = PosePolicy.from_pretrained(tmp_path / "p")
    assert back.pose_head.sigma == cfg.sigma_settings()
    assert torch.equal(back.pose_head.free_log_std, policy.pose_head.free_log_std)


def test_every_task_recipe_parses():
    from pathlib import Path

    recipes = sorted(Path("recipes/text2pose").glob("*.yaml")) + sorted(Path("recipes/image2pose").glob("*.yaml"))
    assert len(recipes) == 4
    for recipe in recipes:
        cfg = parse(["--config", str(recipe)])
        assert cfg.trainer in ("sft", "hygrpo")


def test_sft_fits_the_pose_head_input_normalisation(tmp_path, tiny_model_dir, text2pose_dir):
    """pose_head_input_norm: the exported head's shift/scale are the mean and 1/RMS of the start
    model's <POSE> hidden states over the first 256 rows, here recomputed row by row in float64;
    a second SFT stage keeps them."""
    from datasets import load_from_disk

    from posrft.policy.model import PosePolicy
    from posrft.policy.prompts import encode_prompts
    from posrft.train.data import encode_completions
    from posrft.train.sft import run_sft

    start = PosePolicy.from_pretrained(tiny_model_dir).eval()
    rows = load_from_disk(str(text2pose_dir))["train"]
    hidden = []
    start.active_pose_head.register_forward_hook(lambda _m, a, _o: hidden.append(a[0].double()))
    with torch.no_grad():
        for i in range(min(256, len(rows))):
            r = rows.select([i])
            enc = encode_prompts(start.processing, r["prompt"], None, start.multimodal, start.family)
            ids, mask = encode_completions(start, r["prompt"], r["completion"])
            start(enc.input_ids, enc.attention_mask, ids, mask)
    h = torch.cat(hidden)
    shift = h.mean(0)
    scale = 1 / (h - shift).pow(2).mean().sqrt()

    kw = dict(dataset_path=str(text2pose_dir), max_steps=1, per_device_train_batch_size=4, report_to=["none"],
              pose_head_input_norm=True)  # fmt: skip
    out = run_sft(SFTConfig(model_name_or_path=str(tiny_model_dir), output_dir=str(tmp_path / "a"), **kw))
    head = PosePolicy.from_pretrained(out).active_pose_head
    torch.testing.assert_close(head.input_shift.double(), shift, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(head.input_scale.double(), scale, atol=1e-6, rtol=1e-4)
    again = run_sft(SFTConfig(model_name_or_path=str(out), output_dir=str(tmp_path / "b"), **kw))
    head2 = PosePolicy.from_pretrained(again).active_pose_head
    assert torch.equal(head2.input_shift, head.input_shift) and torch.equal(head2.input_scale, head.input_scale)
