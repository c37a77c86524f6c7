"""The real launch path: 2 learner processes (DeepSpeed ZeRO-2 over gloo) + 2 Ray rollout workers."""

import json
import sys

import pytest
import yaml

from posrft.launch import launch_command

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
        "rewards": [{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}],
    }))  # fmt: skip
    assert launch(recipe, accelerate_config="recipes/accelerate/zero2.yaml") == 0
    log = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["sync/bytes"] > 0 for r in log)  # weights reached the workers every step
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()
    assert (out / "final" / "pose_head.safetensors").is_file()
