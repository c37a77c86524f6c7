"""Rewards at run time: per-reward timeouts (sync and async), TRL's own reward functions and
builders plugged in unchanged, required dataset columns named."""

import asyncio
import math
import threading
import time

import pytest

from rewards import RewardRunner, RewardSpec
from rewards.api import RewardFunctionError
from rewards.registry import check_reward_kwargs, is_builder, lookup_reward, required_columns


def _batch(n=4):
    prompts = [[{"role": "user", "content": "q"}]] * n
    completions = [[{"role": "assistant", "content": f"answer {i}"}] for i in range(n)]
    return dict(prompts=prompts, completions=completions, completion_ids=[[1, 2, 3]] * n)


def _constant(completions, **kw):
    return [1.0] * len(completions)


# --------------------------------------------------------------------------- timeouts
@pytest.fixture
def release():
    """An event the never-returning rewards wait on; set at teardown so no thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


def test_a_sync_reward_that_never_returns_is_a_clear_error(release):
    def stuck(completions, **kw):
        release.wait()
        return [0.0] * len(completions)

    runner = RewardRunner([{"func": stuck, "timeout": 0.3}, {"func": _constant}])
    t0 = time.monotonic()
    with pytest.raises(RewardFunctionError, match=r"'stuck' did not return within 0.3 s"):
        runner(**_batch())
    assert time.monotonic() - t0 < 20  # returned instead of hanging


def test_an_async_reward_that_never_returns_is_masked_and_counted():
    async def never(completions, **kw):
        await asyncio.Event().wait()

    runner = RewardRunner([{"func": never, "timeout": 0.3, "on_error": "mask", "target": "pose"},
                           {"func": _constant, "target": "text"}])  # fmt: skip
    out = runner(**_batch())
    assert out.per_func[:, 0].isnan().all() and (out.per_func[:, 1] == 1).all()
    assert out.metrics["rewards/never/timeouts"] == 1 and out.metrics["rewards/never/errors"] == 4
    assert out.pose.isnan().all()  # nothing else feeds the pose advantage: masked, not zero
    assert out.metrics["rewards/_constant/timeouts"] == 0


def test_a_sync_reward_within_its_timeout_sees_the_callers_grad_mode():
    import torch

    seen = []

    def record(completions, **kw):
        seen.append(torch.is_grad_enabled())
        return [0.5] * len(completions)

    runner = RewardRunner([{"func": record, "timeout": 30}])
    with torch.no_grad():
        out = runner(**_batch())
    runner(**_batch())
    assert seen == [False, True] and (out.per_func == 0.5).all()


@pytest.mark.parametrize("timeout", [0, -1, "fast", True])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0 or null"):
        RewardSpec(func="format", timeout=timeout)


# --------------------------------------------------------------------------- TRL rewards
#: Every public function of trl.rewards with the recipe kwargs it needs (builders) or none.
TRL_REWARDS = {
    "accuracy_reward": {},
    "reasoning_accuracy_reward": {},
    "think_format_reward": {},
    "get_cosine_scaled_reward": {"max_len": 10},
    "get_repetition_penalty_reward": {"ngram_size": 2, "max_penalty": -1.0},
    "get_soft_overlong_punishment": {"max_completion_len": 6, "soft_punish_cache": 2},
}


def test_the_table_covers_every_function_trl_rewards_exports():
    import trl.rewards

    exported = {n for n in trl.rewards.__all__ if callable(getattr(trl.rewards, n))}
    assert exported == set(TRL_REWARDS)


def _math_batch():
    texts = [r"The answer is $\boxed{\frac{1}{3}}$", r"$\boxed{2}$",
             "<think>\nhmm\n</think>\nok", r"<think>x</think> $\boxed{\frac{1}{3}}$"]  # fmt: skip
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    ids = [[1, 2, 3], [1, 2, 1, 2, 1, 2], [5] * 5, [7] * 9]
    return dict(prompts=[[{"role": "user", "content": "q"}]] * 4, completions=completions,
                completion_ids=ids, solution=[r"\frac{1}{3}"] * 4)  # fmt: skip


def test_every_trl_reward_plugs_in_by_module_path_with_its_kwargs():
    pytest.importorskip("math_verify")
    specs = [{"func": f"trl.rewards:{name}", "kwargs": kw, "name": name} for name, kw in TRL_REWARDS.items()]
    out = RewardRunner(specs)(**_math_batch())
    col = {name: out.per_func[:, k].tolist() for k, name in enumerate(out.names)}
    assert col["accuracy_reward"] == [1.0, 0.0, 0.0, 1.0]
    assert col["think_format_reward"] == [0.0, 0.0, 1.0, 1.0]  # <think>...</think> then anything
    # soft overlong, written out: L <= 4 -> 0; 4 < L <= 6 -> (4 - L) / 2; L > 6 -> -1
    assert col["get_soft_overlong_punishment"] == [0.0, -1.0, -0.5, -1.0]
    # repetition: 1 - distinct bigrams / bigrams, times max_penalty
    expected_rep = [0.0, -(1 - 2 / 5), -(1 - 1 / 4), -(1 - 1 / 8)]
    assert col["get_repetition_penalty_reward"] == pytest.approx(expected_rep)
    # cosine-scaled (TRL defaults: correct in [0.5, 1], wrong in [-0.5, -1]) at progress L/10
    def cosine(correct, length):
        c = math.cos(min(length / 10, 1.0) * math.pi)
        lo, hi = (0.5, 1.0) if correct else (-0.5, -1.0)
        return lo + 0.5 * (hi - lo) * (1 + c)
    assert col["get_cosine_scaled_reward"] == pytest.approx(
        [cosine(True, 3), cosine(False, 6), cosine(False, 5), cosine(True, 9)])
    assert len(col["reasoning_accuracy_reward"]) == 4


def test_trl_rewards_that_need_a_column_the_data_lacks_say_so():
    batch = _math_batch()
    del batch["solution"]
    for name in ("accuracy_reward", "reasoning_accuracy_reward", "get_cosine_scaled_reward"):
        runner = RewardRunner([{"func": f"trl.rewards:{name}", "kwargs": TRL_REWARDS[name]}])
        with pytest.raises(RewardFunctionError, match=r"needs the dataset column\(s\) 'solution', which "
                                                      r"the data lacks \(columns it has: none\)"):
            runner(**batch)


def test_builders_are_told_apart_from_reward_functions():
    import trl.rewards as t

    assert is_builder(t.get_soft_overlong_punishment) and is_builder(t.get_repetition_penalty_reward)
    assert not is_builder(t.accuracy_reward) and not is_builder(_constant)
    assert required_columns(t.accuracy_reward) == ["solution"]
    assert required_columns(t.get_cosine_scaled_reward(max_len=8)) == ["solution"]
    assert required_columns(t.get_repetition_penalty_reward()) == []


def test_a_builders_kwargs_are_checked_before_it_is_called():
    obj, factory = lookup_reward("trl.rewards:get_soft_overlong_punishment")
    with pytest.raises(TypeError, match=r"kwargs needs 'max_completion_len', 'soft_punish_cache'"):
        check_reward_kwargs(obj, factory, {}, "soft")
    with pytest.raises(TypeError, match=r"unexpected kwarg 'max_completion_length' \(did you mean "
                                        r"'max_completion_len'\?\)"):
        check_reward_kwargs(obj, factory, {"max_completion_length": 4, "soft_punish_cache": 1}, "soft")
    obj, factory = lookup_reward("joint")  # a registered factory taking **kwargs: still checked
    with pytest.raises(TypeError, match=r"unexpected kwarg 'tua' \(did you mean 'tau'\?\)"):
        check_reward_kwargs(obj, factory, {"kind": "exp", "tua": 0.3}, "joint")
