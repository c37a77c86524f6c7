"""RolloutPool on a local Ray cluster (one session for the whole module): sharded rollouts equal
in-process ones, a killed worker is replaced and its shard re-sampled, weight sync makes the
workers compute the learner's function and is verified (a corrupted update is caught), deaths
during a sync are logged and counted, the pool resizes between steps, and the local cluster
listens on loopback only."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import ray
import torch
from PIL import Image

from posrft.policy.lora import apply_lora
from posrft.policy.model import PosePolicy
from posrft.rollout.concat import concat_rollouts
from posrft.rollout.fingerprint import WeightSyncError
from posrft.rollout.pool import RolloutPool
from posrft.rollout.sharding import shard_prompts, shard_seed
from posrft.rollout.weights import merged_state_dict

# the fault-injection helpers below run inside the actors, which cannot import this module
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SAMPLING = {"max_new_tokens": 8, "temperature": 1.0}
G = 3
# how long a replacement or added worker may take to start and load its model: on a loaded
# 2-core machine (the suite beside a training run) one took more than 120 s
READY_S = 300


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (40, 40, 3), dtype=np.uint8))


PROMPTS = ["Describe the pose.", "A person is sitting on a chair with arms raised.", "Jump!",
           "What is the body doing?", "Kneel down on one knee."]
IMAGES = [_image(0), None, [_image(1), _image(2)], None, _image(3)]


def _write_pose_friendly_model(src, dst) -> None:
    """Copy of the tiny model whose LM head favours ``<POSE>`` and EOS, so random-weight rollouts
    give a mix of valid / invalid / early-ended completions. The bias must live in the saved
    weights (workers load the folder): hidden dimension 0 is made a constant channel
    (embedding column 0 = c, no attention/MLP writes to it), so the final hidden state's
    dimension 0 is positive at every position and LM-head column 0 acts as a logit bias."""
    policy = PosePolicy.from_pretrained(src)
    lm = policy.hf_model.model.language_model
    with torch.no_grad():
        lm.embed_tokens.weight[:, 0] = 3 * lm.embed_tokens.weight.std()
        for layer in lm.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        captured = []
        head = policy.hf_model.get_output_embeddings()
        hook = head.register_forward_hook(lambda _m, args, _o: captured.append(args[0][..., 0]))
        policy.rollout(["calibrate"], num_generations=2, max_new_tokens=4, seed=0)
        hook.remove()
        scale = torch.cat([c.flatten() for c in captured]).mean()
        assert scale > 0
        for token, bias in (("<POSE>", 5.0), ("<|im_end|>", 5.0)):
            head.weight[policy.tokenizer.convert_tokens_to_ids(token), 0] = bias / scale
    policy.save_pretrained(dst)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rollout") / "pose_friendly"
    _write_pose_friendly_model(tiny_model_dir, out)
    return out


@pytest.fixture(scope="module")
def pool(model_dir):
    already_up = ray.is_initialized()  # e.g. another test module's session: reused, not stopped
    with RolloutPool(model_dir, num_workers=2, num_cpus_per_worker=1.0) as p:
        yield p
    assert ray.is_initialized() == already_up  # a pool stops only the Ray it started


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: same reduction order, same numbers
    yield
    torch.set_num_threads(threads)


def _in_process(policy, seed, workers=2):
    parts = [policy.rollout(PROMPTS[r.start:r.stop], IMAGES[r.start:r.stop], num_generations=G,
                            seed=shard_seed(seed, k), **SAMPLING)
             for k, r in enumerate(shard_prompts(len(PROMPTS), workers))]
    return concat_rollouts(parts, policy.pad_token_id)


def _assert_same_rollout(x, y, atol=1e-6):
    assert torch.equal(x.completion_ids, y.completion_ids)
    assert torch.equal(x.completion_mask, y.completion_mask)
    assert torch.equal(x.prompt_ids, y.prompt_ids) and torch.equal(x.prompt_index, y.prompt_index)
    assert torch.equal(x.pose_valid, y.pose_valid) and x.completion_texts == y.completion_texts
    mask = x.completion_mask.bool()
    torch.testing.assert_close(x.token_logps[mask], y.token_logps[mask], atol=atol, rtol=0)
    for name in ("pose", "pose_mean", "pose_log_std", "pose_logp"):
        torch.testing.assert_close(getattr(x, name), getattr(y, name), atol=atol * 10, rtol=1e-6)


def _assert_matches_learner(learner, batch, atol=1e-5):
    """The workers' recorded log-probs / pose distribution equal the learner's recomputation."""
    with torch.no_grad():
        out = learner.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                       batch.completion_mask, batch.pose, batch.pixel_values)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(out.token_logps[mask], batch.token_logps[mask], atol=atol, rtol=0)
    torch.testing.assert_close(out.pose_dist.mean, batch.pose_mean, atol=atol, rtol=0)
    torch.testing.assert_close(out.pose_dist.log_std, batch.pose_log_std, atol=atol, rtol=0)
    assert torch.equal(out.pose_valid, batch.pose_valid)


def test_two_workers_equal_in_process_rollout(pool, model_dir, one_thread):
    result = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=11)
    expected = _in_process(PosePolicy.from_pretrained(model_dir).eval(), seed=11)
    batch = result.batch
    assert len(batch) == len(PROMPTS) * G
    assert 0 < int(batch.pose_valid.sum()) < len(batch)  # a real mix of valid / invalid poses
    _assert_same_rollout(batch, expected)
    assert result.model_version.tolist() == [0] * len(batch)
    assert {int(w["prompts"]) for w in result.per_worker} == {3, 2}
    assert len({int(w["pid"]) for w in result.per_worker}) == 2  # two processes did the work
    m = result.metrics
    assert m["restarts"] == 0 and m["samples"] == len(batch)
    assert m["samples_per_s"] == pytest.approx(len(batch) / m["rollout_s"])
    # dataset rows give the same result as prompts + images
    rows = [{"prompt": p, "images": im} for p, im in zip(PROMPTS, IMAGES)]
    again = pool.generate(rows, num_generations=G, sampling=SAMPLING, seed=11)
    _assert_same_rollout(again.batch, batch, atol=0)
    with pytest.raises(ValueError, match="unknown key"):
        pool.submit(PROMPTS, num_generations=G, sampling={"max_tokens": 4})


def test_sync_weights_workers_follow_learner_and_versions(pool, model_dir):
    learner = apply_lora(PosePolicy.from_pretrained(model_dir), r=4, alpha=8)
    with torch.no_grad():  # stand-in for training: every trainable tensor moves
        gen = torch.Generator().manual_seed(0)
        for p in learner.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    learner.eval()
    for version in (1, 2):
        metrics = pool.sync_weights(merged_state_dict(learner), version, bucket_mb=0.05)
        assert metrics["buckets"] > 1 and metrics["bytes"] > 0 and metrics["gb_per_s"] > 0
        assert ray.get([w.version.remote() for w in pool.workers]) == [version, version]
        result = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=5)
        assert result.model_version.tolist() == [version] * len(result.batch)
        _assert_matches_learner(learner, result.batch)
        with torch.no_grad():
            learner.pose_head.mean_out.bias.add_(0.1)  # next version differs


def test_killed_worker_is_restarted_with_latest_weights(pool, model_dir):
    learner = PosePolicy.from_pretrained(model_dir).eval()
    with torch.no_grad():
        learner.pose_head.mean_out.bias.add_(0.3)
        learner.hf_model.lm_head.weight.mul_(1.1)
    pool.sync_weights(merged_state_dict(learner, trainable_only=False), 7)
    reference = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=3)
    restarts = pool.total_restarts
    old_pid = ray.get(pool.workers[1].ping.remote())["pid"]
    handle = pool.submit(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=3)
    ray.kill(pool.workers[1], no_restart=True)
    result = pool.gather(handle)
    assert result.metrics["restarts"] >= 1 and pool.total_restarts == restarts + 1
    assert ray.get(pool.workers[1].ping.remote())["pid"] != old_pid
    # complete, same seeds → the same samples (the lost shard ran again on worker 0)
    _assert_same_rollout(result.batch, reference.batch, atol=0)
    assert result.model_version.tolist() == [7] * len(result.batch)
    _assert_matches_learner(learner, result.batch)
    death = pool.deaths[-1]
    assert death["worker"] == 1 and death["pid"] == old_pid and "sampling shard 1" in death["during"]
    # the replacement joins with version 7's weights (pushed and verified) and samples again
    assert pool.wait_ready(READY_S) == 2
    again = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=3)
    assert again.metrics["workers_used"] == 2 and again.metrics["restarts"] == 0
    _assert_same_rollout(again.batch, reference.batch, atol=0)
    assert again.model_version.tolist() == [7] * len(again.batch)


def test_bad_weights_raise_clear_errors_and_change_nothing(pool):
    version = pool.version
    good = ray.get(pool.workers[0].manifest.remote())
    key = "pose_head.mean_out.weight"
    with pytest.raises(ValueError, match="model.base_model.model"):
        pool.sync_weights({"model.base_model.model.lm_head.weight": torch.zeros(1)}, version + 1)
    with pytest.raises(ValueError, match=rf"{key}.*shape \(2, 2\)"):
        pool.sync_weights({key: torch.zeros(2, 2)}, version + 1)
    # the worker checks too (e.g. another client bypassing the pool's check)
    with pytest.raises(ValueError, match="not.a.key"):
        ray.get(pool.workers[0].update_weights.remote([{"not.a.key": torch.zeros(1)}], 99))
    assert pool.version == version and ray.get(pool.workers[0].version.remote()) == version
    assert ray.get(pool.workers[0].manifest.remote()) == good


def test_restarts_are_bounded_then_the_pool_recovers(pool):
    pool.max_restarts = 0
    try:
        handle = pool.submit(PROMPTS, IMAGES, num_generations=G,
                             sampling={"max_new_tokens": 48}, seed=1)  # long: killed mid-way
        ray.kill(pool.workers[0], no_restart=True)
        with pytest.raises(RuntimeError, match=r"shard 0 lost its worker 1 times.*rollout worker "
                                               r"0; max_restarts=0"):
            pool.gather(handle)
    finally:
        pool.max_restarts = 3
    result = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=2)
    assert len(result.batch) == len(PROMPTS) * G and result.metrics["restarts"] == 1
    assert pool.wait_ready(READY_S) == 2


def _perturbed(model_dir):
    learner = PosePolicy.from_pretrained(model_dir).eval()
    with torch.no_grad():
        learner.pose_head.mean_out.bias.add_(0.2)
        learner.hf_model.lm_head.weight.mul_(0.9)
    return learner


def _corrupt_pose_head(worker):
    """Runs inside the actor: from now on its loads add 1 to one element of the pose head."""
    original = worker.policy.load_state_dict

    def load(state, strict=True):
        state = dict(state)
        for key in [k for k in state if k == "pose_head.mean_out.bias"]:
            state[key] = state[key].clone()
            state[key][0] += 1.0
        return original(state, strict=strict)

    worker.policy.load_state_dict = load


def _skip_lm_head(worker):
    """Runs inside the actor: loads silently keep the old LM head (a stale tensor)."""
    original = worker.policy.load_state_dict
    worker.policy.load_state_dict = lambda state, strict=True: original(
        {k: v for k, v in state.items() if not k.endswith("lm_head.weight")}, strict=strict)


def _restore(worker):
    worker.policy.__dict__.pop("load_state_dict", None)


def test_corrupted_or_stale_update_is_caught_naming_worker_and_tensor(pool, model_dir):
    learner = _perturbed(model_dir)
    state = merged_state_dict(learner, trainable_only=False)
    base = pool.version
    ok = pool.sync_weights(state, base + 1)
    assert ok["verified"] == 1 and ok["worker_verify_s_max"] > 0
    ray.get(pool.workers[1].__ray_call__.remote(_corrupt_pose_head))
    with pytest.raises(WeightSyncError, match=r"rollout worker 1 \(pid \d+ on node .*tensor "
                                              r"'pose_head\.mean_out\.bias'"):
        pool.sync_weights(state, base + 2)
    ray.get(pool.workers[1].__ray_call__.remote(_restore))
    ray.get(pool.workers[0].__ray_call__.remote(_skip_lm_head))
    with torch.no_grad():
        learner.hf_model.lm_head.weight.mul_(0.9)  # the tensor worker 0 will not take
    with pytest.raises(WeightSyncError, match=r"rollout worker 0 .*lm_head\.weight"):
        pool.sync_weights(merged_state_dict(learner, trainable_only=False), base + 3)
    ray.get(pool.workers[0].__ray_call__.remote(_restore))
    pool.sync_weights(merged_state_dict(learner, trainable_only=False), base + 4)  # clean again


def _exit_on_load(worker):
    worker.policy.load_state_dict = lambda *a, **k: os._exit(1)


def test_death_during_weight_sync_is_logged_counted_and_healed(pool, model_dir, caplog):
    learner = _perturbed(model_dir)
    state = merged_state_dict(learner, trainable_only=False)
    version = pool.version + 1
    old_pid = ray.get(pool.workers[0].ping.remote())["pid"]
    ray.get(pool.workers[0].__ray_call__.remote(_exit_on_load))
    with caplog.at_level(logging.WARNING, logger="posrft.rollout"):
        res = pool.sync_weights(state, version)
    assert res["restarts"] == 1 and res["workers"] == 1  # counted in this sync, 1 left live
    death = pool.deaths[-1]
    assert death["worker"] == 0 and death["pid"] == old_pid
    assert death["during"] == f"weight sync to version {version}"
    assert death["cause"].startswith("ActorDiedError")
    line = [r.getMessage() for r in caplog.records if "died during weight sync" in r.getMessage()]
    assert line and f"rollout worker 0 (pid {old_pid}" in line[0] and "ActorDiedError" in line[0]
    # the replacement joins with this sync's weights, verified
    assert pool.wait_ready(READY_S) == 2
    assert ray.get([w.version.remote() for w in pool.workers]) == [version, version]
    result = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=4)
    assert result.metrics["workers_used"] == 2
    _assert_matches_learner(learner, result.batch)


def test_resize_between_steps_keeps_every_group(pool, model_dir, one_thread):
    learner = _perturbed(model_dir)
    version = pool.version + 1
    pool.sync_weights(merged_state_dict(learner, trainable_only=False), version)
    pool.resize(1)
    one = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=9)
    assert pool.num_workers == 1 and one.metrics["workers_used"] == 1
    _assert_same_rollout(one.batch, _in_process(learner, 9, workers=1))
    pool.resize(2)  # a new worker starts from the folder and joins with the latest weights
    assert pool.wait_ready(READY_S) == 2
    two = pool.generate(PROMPTS, IMAGES, num_generations=G, sampling=SAMPLING, seed=9)
    assert two.metrics["workers_used"] == 2
    assert two.model_version.tolist() == [version] * len(two.batch)
    _assert_same_rollout(two.batch, _in_process(learner, 9, workers=2))


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_local_cluster_listens_on_loopback_only(pool):
    if not pool._started_ray:
        pytest.skip("Ray was started by someone else in this process")
    ours = _descendants(os.getpid()) | {os.getpid()}
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    listening = []
    for line in lines.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            listening.append(line.split()[3])
    assert len(listening) >= 3, listening  # GCS, raylet, workers at least: the check is real
    bad = [a for a in listening if not re.match(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]):\d+$", a)]
    assert not bad, f"Ray processes listening beyond loopback: {bad}"
