"""The shared learner loop: clipping, the LR schedule, accumulation, several optimizer steps per
rollout batch, and bounded staleness (in-process; the 2-process checks are in
test_train_distributed.py)."""

import json
import math

import pytest
import torch

from posrft.train.config import HyGRPOConfig, SFTConfig


def _expected_lr(kind, base, warmup, total, i):
    """transformers' schedules written out: LR of optimizer step i (0-based)."""
    if i < warmup:
        return base * i / max(1, warmup)
    progress = (i - warmup) / max(1, total - warmup)
    if kind == "linear":
        return base * max(0.0, 1 - progress)
    if kind == "cosine":
        return base * max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))
    return base


def _learner(tmp_path, model, **cfg_kw):
    from posrft.train.accelerator import make_accelerator
    from posrft.train.loop import Learner

    cfg = SFTConfig(output_dir=str(tmp_path), report_to=["none"], **cfg_kw)
    return Learner(cfg, make_accelerator(cfg), model, run_name="t", total_steps=cfg.max_steps)


def test_a_huge_gradient_is_clipped_before_the_optimizer_sees_it(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    learner = _learner(tmp_path, model, max_grad_norm=0.5, learning_rate=1e-3, max_steps=1)
    w = [p.detach().clone() for p in model.parameters()]
    with learner.accumulate():
        learner.backward(1e6 * sum((p**2).sum() for p in learner.model.parameters()))
    out = learner.optimizer_step()
    raw = 2e6 * math.sqrt(sum(float((x**2).sum()) for x in w))  # ‖∇ 1e6·Σp²‖ = 2e6·‖p‖
    assert out["grad_norm"] == pytest.approx(raw, rel=1e-5)
    # Adam's first moment after one step is (1-β1)·g: its norm shows the gradient it was given
    state = learner.optimizer.state
    m = math.sqrt(sum(float((state[p]["exp_avg"] ** 2).sum()) for p in model.parameters()))
    assert m == pytest.approx(0.1 * 0.5, rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_the_schedule_advances_once_per_optimizer_step(tmp_path, kind):
    model = torch.nn.Linear(2, 2)
    learner = _learner(tmp_path, model, lr_scheduler_type=kind, warmup_steps=2, max_steps=7,
                       learning_rate=0.1, gradient_accumulation_steps=2)
    seen = []
    for _ in range(7):
        for _ in range(2):
            with learner.accumulate():
                learner.backward(learner.model(torch.ones(1, 2)).sum())
        seen.append(learner.optimizer_step()["lr"])
    assert seen == pytest.approx([_expected_lr(kind, 0.1, 2, 7, i) for i in range(7)], abs=1e-12)


def test_stepping_in_the_middle_of_accumulation_is_refused(tmp_path):
    learner = _learner(tmp_path, torch.nn.Linear(2, 2), gradient_accumulation_steps=2)
    with learner.accumulate():
        learner.backward(learner.model(torch.ones(1, 2)).sum())
    with pytest.raises(RuntimeError, match="gradient_accumulation_steps=2"):
        learner.optimizer_step()


def test_a_fresh_start_drops_the_log_of_a_run_stopped_before_its_first_checkpoint(tmp_path):
    stale = [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    learner = _learner(tmp_path, torch.nn.Linear(2, 2), max_steps=2, resume_from_checkpoint="latest")
    assert learner.resume(sampler=None) == (0, {})
    learner.logger.log(1, {"loss": 1.0})
    log = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert log == [{"step": 1, "loss": 1.0}]


# --------------------------------------------------------------------------- HyGRPO
def _grpo(tmp_path, model, data, name, **kw):
    from posrft.train.hygrpo import run_hygrpo

    base = dict(model_name_or_path=str(model), dataset_path=str(data), output_dir=str(tmp_path / name),
                max_steps=2, per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
                learning_rate=1e-2, report_to=["none"], num_rollout_workers=0, beta=0.0,
                epsilon=0.05, pose_epsilon=0.05, log_completions=False,
                rewards=[{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}])  # fmt: skip
    base.update(kw)
    out = run_hygrpo(HyGRPOConfig(**base))
    return out, [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]


def _clipped(row):
    return sum(row.get(f"clip/{t}_{s}", 0.0) for t in ("text", "pose") for s in ("low", "high"))


def test_clip_acts_only_when_one_batch_feeds_several_optimizer_steps(tmp_path, sft_model, text2pose_dir):
    _, one = _grpo(tmp_path, sft_model, text2pose_dir, "one", max_steps=1)
    _, two = _grpo(tmp_path, sft_model, text2pose_dir, "two", max_steps=1, steps_per_generation=2)
    assert one[0]["optimizer_steps"] == 1 and two[0]["optimizer_steps"] == 2
    assert _clipped(one[0]) == 0  # one step per batch: the ratio is exactly 1 (plain REINFORCE)
    assert _clipped(two[0]) > 0  # the second step sees the policy the first one moved


@pytest.mark.parametrize("staleness, ages", [(0, [0, 0, 0, 0]), (1, [0, 1, 1, 1]), (2, [0, 1, 2, 2])])
def test_bounded_staleness_ages(tmp_path, sft_model, text2pose_dir, staleness, ages):
    _, log = _grpo(tmp_path, sft_model, text2pose_dir, f"s{staleness}", max_steps=4,
                   max_staleness=staleness, learning_rate=1e-3)
    assert [r["staleness/max"] for r in log] == ages
    assert [r["staleness/mean"] for r in log] == ages  # a batch is sampled by one version


def test_on_policy_ray_workers_train_exactly_like_the_in_process_pool(tmp_path, sft_model, text2pose_dir):
    """max_staleness 0 through a Ray worker (an asynchronous actor) and through the synchronous
    in-process pool: the same samples, so the same parameters, bit for bit."""
    from safetensors.torch import load_file

    torch.set_num_threads(1)  # the Ray worker samples with one thread too
    kw = dict(max_steps=2, learning_rate=1e-3, worker_num_cpus=1.0)
    local, _ = _grpo(tmp_path, sft_model, text2pose_dir, "local", num_rollout_workers=0, **kw)
    ray_run, _ = _grpo(tmp_path, sft_model, text2pose_dir, "ray", num_rollout_workers=1, **kw)
    a, b = load_file(str(local / "model.safetensors")), load_file(str(ray_run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = load_file(str(local / "pose_head.safetensors")), load_file(str(ray_run / "pose_head.safetensors"))
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
