"""Reward plug-in API: TRL functions, registry/module/file references, async, masking, errors."""

import asyncio
import math

import pytest
import torch
from trl.rewards import think_format_reward

from rewards import RewardFunctionError, RewardRunner, RewardSpec, available_rewards, resolve_reward

CONV = [[{"role": "assistant", "content": "<think>a</think>b"}],
        [{"role": "assistant", "content": "no tags <POSE>"}]]  # fmt: skip
PROMPTS_CONV = [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]]


def test_trl_reward_plugs_in_unchanged_conversational():
    batch = RewardRunner([think_format_reward])(prompts=PROMPTS_CONV, completions=CONV)
    assert batch.per_func[:, 0].tolist() == [1.0, 0.0]
    assert batch.text.tolist() == [1.0, 0.0]
    assert torch.isnan(batch.pose).all()  # no pose-targeted reward configured


def test_module_reference_with_string_completions():
    runner = RewardRunner([{"func": "rewards.format:format_reward", "kwargs": {"template": "^ok.*$"}}])
    assert runner(prompts=["p", "q"], completions=["ok!", "no"]).per_func[:, 0].tolist() == [1.0, 0.0]


def test_module_factory_and_string_completions():
    # TRL's factory returns a reward over completion_ids; we pass plain strings as completions.
    from trl.rewards import get_soft_overlong_punishment

    fn = get_soft_overlong_punishment(max_completion_len=4, soft_punish_cache=2)
    batch = RewardRunner([{"func": fn, "name": "overlong"}])(
        prompts=["p", "p"], completions=["x", "y"], completion_ids=[[1, 2], [1, 2, 3, 4]]
    )
    assert batch.per_func[:, 0].tolist() == [0.0, -1.0]


def test_format_builtin_defaults_to_text_target():
    spec = RewardSpec(func="format")
    assert spec.target == "text" and "format" in available_rewards()
    out = RewardRunner([spec])(prompts=["p"] * 3, completions=["ok <POSE>.", "none", "<POSE><POSE>"])
    assert out.per_func[:, 0].tolist() == [1.0, 0.0, 0.0]


def test_file_reference_with_poses_and_columns(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text(
        "def pose_norm(prompts, completions, poses=None, scale=1.0, caption=None, **kw):\n"
        "    return [None if p is None else -scale * float(p.norm()) for p in poses]\n"
    )
    runner = RewardRunner([{"func": f"{f}:pose_norm", "target": "pose", "kwargs": {"scale": 2.0}}])
    poses = [torch.ones(4), None]
    out = runner(prompts=["a", "b"], completions=["x", "y"], poses=poses, caption=["c1", "c2"])
    assert out.per_func[0, 0].item() == pytest.approx(-4.0)
    assert math.isnan(out.per_func[1, 0].item()) and math.isnan(out.pose[1].item())
    assert out.metrics["rewards/pose_norm/masked"] == 1.0


def test_weighted_totals_split_by_target_and_nan_only_when_all_missing():
    def a(completions, **kw):
        return [1.0, None, None]

    def b(completions, **kw):
        return [2.0, 3.0, None]

    runner = RewardRunner([{"func": a, "weight": 0.5, "target": "both"},
                           {"func": b, "weight": 2.0, "target": "pose"}])  # fmt: skip
    out = runner(prompts=["p"] * 3, completions=["c"] * 3)
    assert out.text.tolist()[:1] == [0.5] and math.isnan(out.text[1])
    assert out.pose.tolist()[:2] == [4.5, 6.0] and math.isnan(out.pose[2])


def test_async_rewards_run_concurrently():
    """Each waits for the other's event: sequential execution would time out."""
    events: dict[str, asyncio.Event] = {}

    def make(me, other):
        async def fn(completions, **kw):
            events.setdefault(me, asyncio.Event()).set()
            events.setdefault(other, asyncio.Event())
            await asyncio.wait_for(events[other].wait(), timeout=5)
            return [1.0] * len(completions)

        fn.__name__ = me
        return fn

    out = RewardRunner([make("a", "b"), make("b", "a")])(prompts=["p"], completions=["c"])
    assert out.per_func.tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda completions, **kw: [1.0], r"'bad' returned 1 rewards for 2 completions"),
        (lambda completions, **kw: [1.0, "x"], r"'bad' returned 'x' \(str\) for sample 1"),
        (lambda completions, **kw: [float("nan"), 1.0], r"'bad' returned nan for sample 0"),
        (lambda completions, **kw: [1.0, float("inf")], r"'bad' returned inf for sample 1"),
        (lambda completions, **kw: 1 / 0, r"'bad' raised: ZeroDivisionError"),
    ],
)
def test_contract_violations_name_function_and_sample(bad, message):
    with pytest.raises(RewardFunctionError, match=message):
        RewardRunner([{"func": bad, "name": "bad"}])(prompts=["p", "q"], completions=["c", "d"])


def test_on_error_mask_masks_and_counts():
    def half_bad(completions, **kw):
        return [1.0, float("nan"), 2.0]

    def raises(completions, **kw):
        raise RuntimeError("boom")

    runner = RewardRunner([{"func": half_bad, "on_error": "mask"},
                           {"func": raises, "on_error": "mask", "target": "pose"}])  # fmt: skip
    out = runner(prompts=["p"] * 3, completions=["c"] * 3)
    assert out.per_func[:, 0].tolist()[::2] == [1.0, 2.0] and math.isnan(out.per_func[1, 0])
    assert out.metrics["rewards/half_bad/errors"] == 1.0
    assert out.metrics["rewards/raises/errors"] == 3.0 and torch.isnan(out.pose).all()


def test_unknown_name_lists_available_and_bad_specs():
    with pytest.raises(KeyError, match="available: .*format"):
        resolve_reward("joint_reward_v9")
    with pytest.raises(ValueError, match="target must be"):
        RewardSpec(func="format", target="image")
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'wieght' \(did you mean 'weight'\?\)"):
        RewardSpec.from_config({"func": "format", "wieght": 2})
    with pytest.raises(ModuleNotFoundError, match="cannot import module 'nope'"):
        resolve_reward("nope:fn")
    with pytest.raises(ValueError, match="unique"):
        RewardRunner(["format", "format"])
