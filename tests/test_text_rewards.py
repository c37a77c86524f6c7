"""The text reward of a rollout without a pose: never better than the worst pose in its group."""

from __future__ import annotations

import math

import pytest
import torch

from posrft.train.scoring import text_rewards
from rewards.runner import RewardBatch, RewardSpec

NAN = float("nan")


def _batch(per_func, specs):
    from rewards.runner import _weighted_total

    values = torch.tensor(per_func, dtype=torch.float32)
    text = torch.from_numpy(_weighted_total(values.double().numpy(), specs, ("text", "both"))).float()
    return RewardBatch(names=[s.label for s in specs], per_func=values, text=text,
                       pose=torch.zeros(len(values)), metrics={}, specs=specs)  # fmt: skip


def _specs():
    return [RewardSpec(func="format", target="text"),
            RewardSpec(func="joint", name="joint_pelvis", target="text", weight=2.0),
            RewardSpec(func="joint", name="joint_pa", target="pose")]  # fmt: skip


def test_a_missing_pose_scores_the_groups_worst_pose():
    # two groups of three rows; row 2 (group 0) and row 3 (group 1) have no pose
    per_func = [[1, -0.6, -0.4], [1, -1.5, -0.2], [0, NAN, NAN],
                [0, NAN, NAN], [1, -0.7, -0.1], [1, NAN, -0.3]]  # row 5: its joint reward errored
    valid = torch.tensor([True, True, False, False, True, True])
    got = text_rewards(_batch(per_func, _specs()), valid, 3)
    # by hand: format + 2 · joint_pelvis, a missing pose taking the group's lowest joint_pelvis;
    # the errored row keeps its joint reward out of the sum
    want = [1 + 2 * -0.6, 1 + 2 * -1.5, 0 + 2 * -1.5, 0 + 2 * -0.7, 1 + 2 * -0.7, 1.0]
    torch.testing.assert_close(got, torch.tensor(want))
    plain = _batch(per_func, _specs()).text  # the runner's sum: the missing pose beat both poses
    assert plain[2] > plain[0] and plain[2] > plain[1]
    assert got[2] < got[1] < got[0]


def test_a_group_without_any_pose_keeps_the_runners_sum():
    per_func = [[0, NAN, NAN], [1, NAN, NAN]]
    batch = _batch(per_func, _specs())
    got = text_rewards(batch, torch.tensor([False, False]), 2)
    torch.testing.assert_close(got, batch.text)
    assert got.tolist() == [0.0, 1.0]


def test_only_text_targets_count_and_shapes_are_checked():
    specs = [RewardSpec(func="format", target="pose"), RewardSpec(func="joint", target="both")]
    per_func = [[1, -1.0], [0, NAN]]
    got = text_rewards(_batch(per_func, specs), torch.tensor([True, False]), 2)
    assert got.tolist() == [-1.0, -1.0]
    only_pose = [RewardSpec(func="joint", target="pose")]
    assert math.isnan(text_rewards(_batch([[1.0], [2.0]], only_pose), torch.tensor([True, True]), 2)[0])
    with pytest.raises(ValueError, match="group of 4"):
        text_rewards(_batch(per_func, specs), torch.tensor([True, False]), 4)
