"""The results table's stage cache (benchmarks/pose_rft_table.py): a finished row is reused only
with the settings it was trained with, and the control's length is decided once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pose_rft_table import SETTINGS, Task  # noqa: E402


def _finished(task: Task, row: str, result: dict, max_steps: int, **config) -> None:
    folder = task.work / row
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "config.json").write_text(json.dumps({"max_steps": max_steps, **config}))


@pytest.fixture
def task(tmp_path: Path) -> Task:
    return Task("text2pose", "pretrained", "pretrained", tmp_path, base_model=None)


def test_text2pose_rl_runs_the_val_chosen_length() -> None:
    assert SETTINGS["pretrained"]["text2pose"]["rl"]["max_steps"] == 120
    assert SETTINGS["pretrained"]["rl"]["max_steps"] == 60  # image→pose keeps the shared length


def test_a_row_with_the_wanted_steps_is_reused(task: Task) -> None:
    _finished(task, "+hygrpo_s0", {"train_s": 1.0}, max_steps=120)
    assert task._done("+hygrpo_s0", 120) == {"train_s": 1.0}
    assert task._done("+hygrpo_s1", 120) is None


def test_an_rl_row_trained_for_other_steps_stops_the_run(task: Task) -> None:
    _finished(task, "+hygrpo_s0", {"train_s": 1.0}, max_steps=60)
    with pytest.raises(SystemExit, match=r"\+hygrpo_s0: trained for 60 steps, .* say 120; move"):
        task._done("+hygrpo_s0", 120)


def test_an_rl_row_trained_with_other_rewards_stops_the_run(task: Task) -> None:
    rewards = [{"func": "reprojection", "weight": 0.5, "target": "pose"}]
    _finished(task, "+hygrpo_s0", {"train_s": 1.0}, max_steps=60, rewards=rewards, pose_sigma_value=0.05)
    same = {"max_steps": 60, "rewards": rewards, "pose_sigma_value": None}  # None: not compared
    assert task._done("+hygrpo_s0", 60, same) == {"train_s": 1.0}
    other = [{**rewards[0], "kwargs": {"kind": "neg_mean", "per_joint": True}}]
    with pytest.raises(SystemExit, match=r"\+hygrpo_s0: trained with other rewards than"):
        task._done("+hygrpo_s0", 60, {**same, "rewards": other})


def test_an_sft_row_is_checked_by_its_recorded_steps(task: Task) -> None:
    _finished(task, "more_sft_s0", {"steps": 191}, max_steps=191)
    assert task._done("more_sft_s0", 191) == {"steps": 191}
    with pytest.raises(SystemExit, match="trained for 191 steps"):
        task._done("more_sft_s0", 250)


def test_the_control_length_once_decided_is_kept(task: Task) -> None:
    (task.work / "control_steps.json").write_text(json.dumps({"steps": 250, "sft_step_s": 3.5}))
    # no SFT is timed (the start folder does not exist): the kept decision is returned as it is
    assert task.control_steps(task.work / "missing", [900.0, 800.0, 1000.0]) == 250
