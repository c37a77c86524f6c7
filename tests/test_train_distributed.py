"""The real launch path: 2 learner processes (DeepSpeed ZeRO-2 over gloo) + 2 Ray rollout workers."""

import json
import sys

import pytest
import yaml

from posrft.launch import launch_command
from test_loop import _expected_lr

pytestmark = pytest.mark.slow


def test_launch_command_uses_accelerate_and_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer: sft\n")
    cmd = launch_command(recipe, ["--max_steps", "2"], accelerate_config="recipes/accelerate/zero2.yaml")
    assert cmd[:4] == [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    assert cmd[-4:] == ["--config", str(recipe), "--max_steps", "2"]
    assert cmd[cmd.index("--config_file") + 1] == "recipes/accelerate/zero2.yaml"
    with pytest.raises(FileNotFoundError, match="accelerate config 'nope.yaml'"):
        launch_command(recipe, accelerate_config="nope.yaml")


def test_zero2_two_learners_two_ray_workers(tmp_path, tiny_model_dir, text2pose_dir):
    from posrft.launch import launch

    recipe = tmp_path / "hygrpo.yaml"
    out = tmp_path / "run"
    recipe.write_text(yaml.safe_dump({
        "trainer": "hygrpo", "model_name_or_path": str(tiny_model_dir),
        "dataset_path": str(text2pose_dir), "output_dir": str(out), "max_steps": 3,
        "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8,
        "num_rollout_workers": 2, "save_steps": 2, "report_to": ["none"],
        "lr_scheduler_type": "cosine", "warmup_steps": 1, "learning_rate": 1e-3,
        "steps_per_generation": 2, "gradient_accumulation_steps": 1,
        "rewards": [{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}],
    }))  # fmt: skip
    assert launch(recipe, accelerate_config="recipes/accelerate/zero2.yaml") == 0
    log = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["sync/bytes"] > 0 for r in log)  # weights reached the workers every step
    # 2 optimizer steps per rollout step, 6 in all: the schedule is the single-process one
    assert [r["optimizer_steps"] for r in log] == [2, 2, 2]
    assert [r["lr"] for r in log] == pytest.approx(
        [_expected_lr("cosine", 1e-3, 1, 6, 2 * k + 2) for k in range(3)], abs=1e-12)
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()
    assert (out / "final" / "pose_head.safetensors").is_file()


def test_two_process_schedule_and_exact_resume(tmp_path, tiny_model_dir, text2pose_dir):
    """SFT over 2 DeepSpeed ranks: the LR of every step is the single-process linear schedule,
    and a run resumed from its step-3 checkpoint ends bit-identical, with no repeated log line."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from posrft.launch import launch

    def run(out, **extra):
        recipe = tmp_path / f"{out.name}.yaml"
        recipe.write_text(yaml.safe_dump({
            "trainer": "sft", "model_name_or_path": str(tiny_model_dir),
            "dataset_path": str(text2pose_dir), "output_dir": str(out), "max_steps": 6,
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
            "learning_rate": 3e-3, "lr_scheduler_type": "linear", "warmup_steps": 2,
            "save_steps": 3, "report_to": ["none"], **extra}))  # fmt: skip
        assert launch(recipe, accelerate_config="recipes/accelerate/zero2.yaml") == 0

    full = tmp_path / "full"
    run(full)
    log = [json.loads(line) for line in open(full / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in log] == pytest.approx(
        [_expected_lr("linear", 3e-3, 2, 6, i) for i in range(6)], abs=1e-12)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    shutil.copy(full / "metrics.jsonl", resumed / "metrics.jsonl")  # as if killed after step 6's log
    run(resumed, resume_from_checkpoint="latest")
    assert [json.loads(line)["step"] for line in open(resumed / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    for name in ("model.safetensors", "pose_head.safetensors"):
        a, b = load_file(str(full / "final" / name)), load_file(str(resumed / "final" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
