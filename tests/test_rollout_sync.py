"""Weight-sync verification, adapter-only LoRA sync and rewards next to the rollouts, without
Ray (the in-process pool runs the same worker code as a Ray actor): tensor hashes checked
against xxhash on the raw bytes, a corrupted load caught by name, adapter and merged sync giving the learner's
function with far fewer bytes for the adapter, worker-side scoring equal to learner-side scoring
(also when split into shards), and the cluster/placement/config checks."""

from __future__ import annotations

import pickle

import pytest
import torch
import xxhash
from datasets import load_from_disk

from posrft.policy.lora import apply_lora
from posrft.policy.model import PosePolicy
from posrft.rollout.cluster import resolve_address
from posrft.rollout.fingerprint import WeightSyncError, compare, fingerprint, tensor_hash
from posrft.rollout.local import LocalRolloutPool
from posrft.rollout.placement import check_strategy, worker_bundle
from posrft.rollout.weights import adapter_state_dict, merged_state_dict
from posrft.train.config import HyGRPOConfig
from posrft.train.scoring import RolloutScorer, concat_reward_batches, score_rollouts
from rewards import RewardRunner

SAMPLING = {"max_new_tokens": 6, "temperature": 1.0}


# ---------------------------------------------------------------- fingerprints
def _xxh(array) -> int:
    return xxhash.xxh3_64_intdigest(array.tobytes())


def test_tensor_hash_is_xxh3_of_the_bytes_and_sees_one_bit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(33, 17, generator=g)
    assert tensor_hash(x) == _xxh(x.numpy())
    assert tensor_hash(x.t()) == _xxh(x.t().contiguous().numpy())  # strided
    as_bf16 = x.to(torch.bfloat16)
    assert tensor_hash(x, torch.bfloat16) == tensor_hash(as_bf16)  # the worker's dtype
    assert tensor_hash(as_bf16) == _xxh(as_bf16.view(torch.int16).numpy())
    flipped = x.clone()
    flipped.view(torch.int32)[7, 3] ^= 1  # lowest mantissa bit of one element
    assert tensor_hash(flipped) != tensor_hash(x)
    ints = torch.arange(10)
    assert tensor_hash(ints) == _xxh(ints.numpy())
    tensors = {"a": x, "b": as_bf16, "c": ints}
    assert fingerprint(tensors, threads=3) == fingerprint(tensors, threads=1)


def test_compare_names_worker_tensor_and_count():
    compare({"a": 1, "b": 2}, {"a": 1, "b": 2, "extra": 5}, "w")  # superset held: fine
    with pytest.raises(WeightSyncError, match=r"on rollout worker 3: tensor 'b' holds hash "
                                              r"0000000000000009 .* sent hash 0000000000000002 "
                                              r"\(1 more"):
        compare({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 9}, "rollout worker 3")
    with pytest.raises(WeightSyncError, match="'c' holds nothing"):
        compare({"c": 3}, {}, "w")


# ---------------------------------------------------------------- adapter vs merged sync
@pytest.fixture
def lora_learner(tiny_model_dir):
    learner = apply_lora(PosePolicy.from_pretrained(tiny_model_dir), r=4, alpha=8)
    with torch.no_grad():  # stand-in for training: every trainable tensor moves
        gen = torch.Generator().manual_seed(1)
        for p in learner.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return learner.eval()


def _matches_learner(learner, batch, atol=1e-5):
    with torch.no_grad():
        out = learner.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                       batch.completion_mask, batch.pose, batch.pixel_values)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(out.token_logps[mask], batch.token_logps[mask], atol=atol, rtol=0)
    torch.testing.assert_close(out.pose_dist.mean, batch.pose_mean, atol=atol, rtol=0)
    torch.testing.assert_close(out.pose_dist.log_std, batch.pose_log_std, atol=atol, rtol=0)


def _lora_layers(policy):
    from peft.tuners.lora import LoraLayer

    return [m for m in policy.hf_model.modules() if isinstance(m, LoraLayer)]


def test_adapter_and_merged_sync_both_give_the_learners_function(tiny_model_dir, lora_learner):
    prompts = ["A person raises both arms.", "Describe the pose.", "Sit down."]
    adapter = adapter_state_dict(lora_learner)
    merged = merged_state_dict(lora_learner)
    assert all(".lora_" in k or "modules_to_save" in k or k.startswith("pose_head.")
               or ".trainable_tokens_delta." in k for k in adapter)
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter.values())
    outs = {}
    for merge in (True, False):  # the adapter folded into a kept base copy, or applied unmerged
        with LocalRolloutPool(tiny_model_dir, lora=lora_learner.config.lora,
                              merge_adapter=merge) as pool:
            layers = _lora_layers(pool.worker.policy)
            assert layers and all(m.merged == merge for m in layers)
            res = pool.sync_weights(adapter, 1)
            assert res["bytes"] == adapter_bytes and res["verified"] == 1
            assert all(m.merged == merge for m in layers)
            outs[merge] = pool.generate(prompts, num_generations=2, sampling=SAMPLING, seed=3)
            _matches_learner(lora_learner, outs[merge].batch)
            with pytest.raises(ValueError, match="unknown to the rollout model"):
                pool.sync_weights(merged, 2)  # a merged sync is refused by an adapter worker
    with LocalRolloutPool(tiny_model_dir) as pool:
        res = pool.sync_weights(merged, 1)
        assert res["bytes"] > 4 * adapter_bytes  # the adapter is the much smaller transfer
        plain = pool.generate(prompts, num_generations=2, sampling=SAMPLING, seed=3)
        _matches_learner(lora_learner, plain.batch)
    # folding the adapter on the worker gives the merged sync's weights bit for bit
    assert torch.equal(outs[True].batch.completion_ids, plain.batch.completion_ids)
    assert torch.equal(outs[True].batch.token_logps, plain.batch.token_logps)
    assert torch.equal(outs[True].batch.pose_mean, plain.batch.pose_mean)
    with pytest.raises(ValueError, match="needs a LoRA policy"):
        adapter_state_dict(PosePolicy.from_pretrained(tiny_model_dir))


def test_local_pool_catches_a_corrupted_load(tiny_model_dir, lora_learner):
    with LocalRolloutPool(tiny_model_dir, lora=lora_learner.config.lora) as pool:
        load = pool.worker.policy.load_state_dict

        def corrupt(state, strict=True):
            state = dict(state)
            key = next(k for k in state if ".lora_B." in k)
            state[key] = state[key] + 1e-3
            return load(state, strict=strict)

        pool.worker.policy.load_state_dict = corrupt
        with pytest.raises(WeightSyncError, match=r"in-process rollout worker: tensor '.*lora_B"):
            pool.sync_weights(adapter_state_dict(lora_learner), 1)
        del pool.worker.policy.load_state_dict  # the class's method again
        pool.sync_weights(adapter_state_dict(lora_learner), 2)


# ---------------------------------------------------------------- rewards on the workers
def _length(prompts, completions, **kw):
    return [float(len(c)) for c in completions]


@pytest.fixture
def rows(text2pose_dir):
    data = load_from_disk(str(text2pose_dir))["train"]
    return [data[i] for i in range(4)]


def test_rewards_on_the_worker_equal_rewards_on_the_learner(tiny_model_dir, rows, nudge_logits):
    g = 3
    specs = [{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"},
             {"func": _length, "target": "text", "weight": 0.1, "name": "length"}]
    scorer = RolloutScorer(specs, g)
    with LocalRolloutPool(tiny_model_dir, scorer=scorer) as pool:
        nudge_logits(pool.worker.policy, {"<POSE>": 6.0, "<|im_end|>": 4.0})
        score_rows = [{k: v for k, v in r.items() if k != "images"} for r in rows]
        out = pool.generate([r["prompt"] for r in rows], num_generations=g, sampling=SAMPLING,
                            seed=5, score_rows=score_rows)
    assert out.scores is not None and out.metrics["reward_s"] > 0
    batch = out.batch
    assert 0 < int(batch.pose_valid.sum()) < len(batch)  # both pose branches exercised
    here = score_rollouts(RewardRunner(specs), rows, batch, g)
    assert out.scores.names == here.names == ["format", "joint", "length"]
    torch.testing.assert_close(out.scores.per_func, here.per_func, equal_nan=True)
    torch.testing.assert_close(out.scores.text, here.text, equal_nan=True)
    torch.testing.assert_close(out.scores.pose, here.pose, equal_nan=True)
    # scored in two shards of whole groups, combined: the same rewards and metrics
    cut = 2 * g
    parts = [score_rollouts(RewardRunner(specs), rows[:2], _rows_of(batch, 0, cut), g),
             score_rollouts(RewardRunner(specs), rows[2:], _rows_of(batch, cut, len(batch)), g)]
    joined = concat_reward_batches(parts)
    torch.testing.assert_close(joined.per_func, here.per_func, equal_nan=True)
    for key, value in here.metrics.items():
        assert joined.metrics[key] == pytest.approx(value, rel=1e-5, nan_ok=True), key
    # pickled for a worker without its (possibly heavy) runner
    assert scorer._runner is not None
    assert pickle.loads(pickle.dumps(scorer))._runner is None
    # the learner builds the same experience from the workers' rewards
    from posrft.train.experience import build_experience

    cfg = HyGRPOConfig(num_generations=g, per_device_train_batch_size=12, rewards=specs, num_pose_samples=1)
    versions = torch.zeros(len(batch), dtype=torch.long)
    a = build_experience(cfg, rows, batch, versions, out.scores, reward_s=0.5)
    b = build_experience(cfg, rows, batch, versions, RewardRunner(specs))
    assert torch.equal(a.experience.text_advantages, b.experience.text_advantages)
    assert torch.equal(a.experience.pose_advantages, b.experience.pose_advantages)
    assert a.metrics["time/reward"] == 0.5


def _rows_of(batch, lo, hi):
    """Samples ``lo:hi`` of a rollout batch (whole groups) as a batch of their own."""
    from dataclasses import fields, replace

    out = {}
    for f in fields(batch):
        v = getattr(batch, f.name)
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(batch):
            out[f.name] = v[lo:hi]
    out["completion_texts"] = batch.completion_texts[lo:hi]
    return replace(batch, **out)


# ---------------------------------------------------------------- cluster, placement, config
def test_address_resolution_bundles_and_config_checks(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None  # a new local cluster, never a stale one
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # what `ray job submit` sets
    assert resolve_address(None) == "10.0.0.5:6379"
    assert resolve_address("auto") == "auto" and resolve_address(" h:1 ") == "h:1"
    with pytest.raises(ValueError, match="ray_address is empty"):
        resolve_address("  ")
    assert worker_bundle(2, 0.5, {"rollout_node": 1}) == {"CPU": 2.0, "GPU": 0.5, "rollout_node": 1.0}
    assert worker_bundle(1, 0) == {"CPU": 1.0}
    with pytest.raises(ValueError, match="worker_resources\\['x'\\] must be a number > 0"):
        worker_bundle(1, 0, {"x": 0})
    with pytest.raises(ValueError, match="placement_strategy must be one of"):
        check_strategy("RANDOM")
    with pytest.raises(ValueError, match="needs use_peft"):
        HyGRPOConfig(lora_sync="adapter")
    cfg = HyGRPOConfig(worker_resources='{"rollout_node": 0.5}', placement_strategy="SPREAD")
    assert cfg.worker_resources == {"rollout_node": 0.5}
    with pytest.raises(ValueError, match="worker_resources: set GPU with worker_num_gpus"):
        HyGRPOConfig(worker_resources={"GPU": 1})
    with pytest.raises(TypeError, match="placement_strategy: expected one of"):
        HyGRPOConfig(placement_strategy="spread")
    with pytest.raises(ValueError, match="rollout_timeout_s must be > 0"):
        HyGRPOConfig(rollout_timeout_s=0.0)
