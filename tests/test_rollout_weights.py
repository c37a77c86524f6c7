"""Rollout building blocks without Ray: concatenation of ragged shards, sharding and seeds,
weight buckets, the in-process worker's weight loading, and ``merged_state_dict`` (LoRA →
plain policy) checked against the learner's own forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.policy.lora import apply_lora
from posrft.policy.model import PosePolicy
from posrft.policy.prompts import encode_prompts
from posrft.rollout.buckets import pack_bucket, pack_state_dict, plan_buckets, unpack_bucket
from posrft.rollout.cluster import check_reachable, init_ray
from posrft.rollout.concat import concat_rollouts
from posrft.rollout.sharding import shard_prompts, shard_seed, split_rows
from posrft.rollout.weights import merged_state_dict
from posrft.rollout.worker import RolloutWorker

NUDGE = {"<POSE>": 6.0, "<|im_end|>": 5.0}


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (40, 52, 3), dtype=np.uint8))


# ---------------------------------------------------------------- concat_rollouts
def test_concat_ragged_batches_keeps_rows_and_logprobs(tiny_policy, nudge_logits):
    nudge_logits(tiny_policy, NUDGE)
    a = tiny_policy.rollout(["Short.", "A much longer prompt about a person standing."],
                            [_image(0), None], num_generations=2, max_new_tokens=3, seed=1)
    b = tiny_policy.rollout(["Medium length prompt here."], [[_image(1), _image(2)]],
                            num_generations=2, max_new_tokens=9, seed=2)
    c = tiny_policy.rollout(["No image at all, just text."], None, num_generations=2,
                            max_new_tokens=5, seed=3)
    parts = [a, b, c]
    assert len({p.prompt_ids.shape[1] for p in parts}) > 1  # really ragged
    assert len({p.completion_ids.shape[1] for p in parts}) > 1
    pad = tiny_policy.pad_token_id
    out = concat_rollouts(parts, pad)
    p_len = max(p.prompt_ids.shape[1] for p in parts)
    t_len = max(p.completion_ids.shape[1] for p in parts)
    assert out.prompt_ids.shape == (8, p_len) and out.completion_ids.shape == (8, t_len)
    assert out.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out.image_counts.tolist() == [1, 1, 0, 0, 2, 2, 0, 0]
    torch.testing.assert_close(out.pixel_values, torch.cat([a.pixel_values, b.pixel_values]))
    assert out.completion_texts == a.completion_texts + b.completion_texts + c.completion_texts
    row = 0
    for part in parts:
        n, p, t = len(part), part.prompt_ids.shape[1], part.completion_ids.shape[1]
        rows = slice(row, row + n)
        assert torch.equal(out.prompt_ids[rows, p_len - p:], part.prompt_ids)
        assert torch.equal(out.prompt_mask[rows, p_len - p:], part.prompt_mask)
        front = slice(0, p_len - p)
        assert (out.prompt_ids[rows, front] == pad).all() and not out.prompt_mask[rows, front].any()
        assert torch.equal(out.completion_ids[rows, :t], part.completion_ids)
        assert (out.completion_ids[rows, t:] == pad).all()
        assert not out.completion_mask[rows, t:].any()
        assert (out.token_logps[rows, t:] == 0).all()
        for name in ("pose", "pose_mean", "pose_log_std", "pose_logp", "pose_valid"):
            assert torch.equal(getattr(out, name)[rows], getattr(part, name))
        row += n
    # independent check: the policy scores the padded batch exactly like the shards
    again = tiny_policy.forward_logprobs(out.prompt_ids, out.prompt_mask, out.completion_ids,
                                         out.completion_mask, out.pose, out.pixel_values)
    mask = out.completion_mask.bool()  # (log-probs past EOS are not meaningful, only masked ones)
    torch.testing.assert_close(again.token_logps[mask], out.token_logps[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again.pose_logp, out.pose_logp, atol=1e-4, rtol=1e-5)
    # select() on the result recovers a shard's rows (images sliced along)
    sub = out.select(range(4, 6))
    torch.testing.assert_close(sub.pixel_values, b.pixel_values)


def test_concat_rejects_mixed_sampling(tiny_policy):
    a = tiny_policy.rollout(["x"], num_generations=2, max_new_tokens=2, seed=0)
    b = tiny_policy.rollout(["y"], num_generations=3, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="num_generations"):
        concat_rollouts([a, b], tiny_policy.pad_token_id)
    with pytest.raises(ValueError, match="at least one"):
        concat_rollouts([], 0)


# ---------------------------------------------------------------- sharding
@pytest.mark.parametrize("n,w", [(1, 1), (5, 2), (16, 2), (7, 3), (2, 5), (9, 4)])
def test_shards_are_contiguous_balanced_and_whole(n, w):
    shards = shard_prompts(n, w)
    assert [i for r in shards for i in r] == list(range(n))
    sizes = [len(r) for r in shards]
    assert len(shards) == min(n, w) and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_shard_seeds_deterministic_and_distinct():
    seeds = [shard_seed(7, k) for k in range(8)]
    assert seeds == [shard_seed(7, k) for k in range(8)] and len(set(seeds)) == 8
    assert shard_seed(8, 0) not in seeds and shard_seed(None, 3) is None
    with pytest.raises(ValueError):
        shard_seed(-1, 0)


def test_split_rows_accepts_rows_or_prompts():
    img = _image(0)
    rows = [{"prompt": "a", "images": [img]}, {"prompt": "b"}]
    assert split_rows(rows, None) == (["a", "b"], [[img], None])
    assert split_rows(["a", "b"], None) == (["a", "b"], None)
    with pytest.raises(ValueError, match=r"rows\[1\]"):
        split_rows([{"prompt": "a"}, {"text": "b"}], None)
    with pytest.raises(ValueError, match="2 prompts"):
        split_rows(["a", "b"], [None])


# ---------------------------------------------------------------- buckets
def test_buckets_round_trip_all_dtypes_and_sizes():
    g = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(3, 5, generator=g),
             "b": torch.randn(4, 6, generator=g).t(),  # not contiguous
             "c": torch.randn(7, generator=g).to(torch.bfloat16), "d": torch.arange(5),
             "e": torch.randn(2, 2, generator=g).half(), "f": torch.tensor([True, False]),
             "big": torch.randn(1000, generator=g)}
    buckets = pack_state_dict(state, bucket_bytes=256)
    assert [len(b.entries) for b in buckets] == [len(g_) for g_ in plan_buckets(state, 256)]
    assert any(b.names == ["big"] for b in buckets)  # larger than a bucket: alone
    total = sum(t.numel() * t.element_size() for t in state.values())
    assert sum(b.nbytes for b in buckets) == total
    back = {}
    for b in buckets:
        back.update(unpack_bucket(b))
    # contiguous CPU tensors are viewed, not copied (ray.put makes the one copy)
    assert back["a"].data_ptr() == state["a"].data_ptr()
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with pytest.raises(ValueError, match="> 0"):
        plan_buckets(state, 0)


def test_worker_update_weights_in_process_and_clear_errors(tiny_model_dir):
    worker = RolloutWorker(str(tiny_model_dir))
    sd = worker.policy.state_dict()
    key = "pose_head.mean_out.weight"
    new = torch.randn_like(sd[key])
    bias = {"pose_head.mean_out.bias": sd["pose_head.mean_out.bias"] + 1}
    info = worker.update_weights([pack_bucket([(key, new)]), bias], 3)
    assert worker.version() == 3 and info["bytes"] > 0
    assert torch.equal(worker.policy.state_dict()[key], new)
    before = worker.policy.state_dict()[key].clone()
    with pytest.raises(ValueError, match="no_such.weight"):
        worker.update_weights([{"no_such.weight": torch.zeros(1)}], 4)
    with pytest.raises(ValueError, match=rf"{key}.*shape \(3, 3\)"):
        worker.update_weights([{key: torch.zeros(3, 3)}], 4)
    # a manifest is checked before any bucket is loaded: nothing changes on a bad one
    with pytest.raises(ValueError, match="unknown"):
        manifest = {key: (tuple(new.shape), "torch.float32"), "bad": ((1,), "torch.float32")}
        worker.update_weights([{key: torch.zeros_like(new)}], 4, manifest=manifest)
    assert torch.equal(worker.policy.state_dict()[key], before) and worker.version() == 3
    with pytest.raises(ValueError, match="unknown key"):
        worker.generate(["x"], None, 1, {"temprature": 1.0})


# ---------------------------------------------------------------- merged_state_dict
def _inputs(policy: PosePolicy):
    enc = encode_prompts(policy.processing, ["with an image", "text only prompt"],
                         [_image(3), None], True)
    pose_id = policy.pose_token_id
    completion = torch.tensor([[31, 32, pose_id, 33], [pose_id, 34, 35, 36]])
    return enc, completion, torch.full((2, 132), 0.1)


def _score(policy: PosePolicy):
    enc, completion, poses = _inputs(policy)
    return policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion,
                                   torch.ones_like(completion), poses,
                                   pixel_values=enc.pixel_values)


def _train(policy: PosePolicy, steps: int = 3) -> None:
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        out = _score(policy)
        (-(out.token_logps.sum() + out.pose_logp.sum())).backward()
        opt.step()
        opt.zero_grad()


def _assert_same_function(a: PosePolicy, b: PosePolicy) -> None:
    with torch.no_grad():
        x, y = _score(a), _score(b)
    torch.testing.assert_close(x.token_logps, y.token_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(x.pose_dist.mean, y.pose_dist.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(x.pose_dist.log_std, y.pose_dist.log_std, atol=1e-5, rtol=0)
    # a fp32 sum of 132 log-densities of magnitude ~900: merged and unmerged LoRA round the
    # μ above differently (1e-5 apart), which this sum amplifies by ~1/σ² (measured: 1.5e-3 apart
    # under load, 1.6e-6 relative); rtol 1e-5 is ~132 float32 epsilons
    torch.testing.assert_close(x.pose_logp, y.pose_logp, atol=1e-4, rtol=1e-5)


def test_worker_loads_a_lora_checkpoint_merged(tiny_model_dir, tmp_path):
    learner = apply_lora(PosePolicy.from_pretrained(tiny_model_dir), r=4, alpha=8)
    _train(learner, steps=2)
    learner.save_pretrained(tmp_path / "ckpt")
    worker = RolloutWorker(str(tmp_path / "ckpt"))
    assert not worker.policy.is_lora
    assert set(merged_state_dict(learner)) <= set(worker.manifest())
    _assert_same_function(learner, worker.policy)


def test_merged_lora_state_dict_makes_plain_policy_equal_learner(tiny_model_dir):
    learner = apply_lora(PosePolicy.from_pretrained(tiny_model_dir), r=4, alpha=8)
    _train(learner)
    snapshot = {n: p.detach().clone() for n, p in learner.named_parameters()}
    state = merged_state_dict(learner)
    assert all(torch.equal(p, snapshot[n]) for n, p in learner.named_parameters())  # untouched
    plain = PosePolicy.from_pretrained(tiny_model_dir).eval()
    known = plain.state_dict()
    assert set(state) <= set(known), sorted(set(state) - set(known))[:5]
    assert not any(t.requires_grad for t in state.values())
    assert sum(".self_attn.q_proj.weight" in k for k in state) == 4  # every LoRA layer merged
    assert sum("multi_modal_projector" in k for k in state) == 4
    assert any(k.startswith("pose_head.") for k in state)
    assert not any("vision_tower" in k for k in state)  # frozen: not sent
    # the <POSE> rows train: the embedding and the (untied) head go with their new rows
    assert {"model.model.language_model.embed_tokens.weight", "model.lm_head.weight"} <= set(state)
    assert not any("token_adapter" in k for k in state)
    before = _score(plain)
    plain.load_state_dict(state, strict=False)
    _assert_same_function(learner, plain)
    with pytest.raises(AssertionError):  # the training really changed the function
        torch.testing.assert_close(before.token_logps, _score(plain).token_logps, atol=1e-5, rtol=0)
    # through a worker (bucketed, as the pool sends it)
    worker = RolloutWorker(str(tiny_model_dir))
    worker.update_weights(pack_state_dict(state, bucket_bytes=100_000), 1)
    _assert_same_function(learner, worker.policy)


def test_merged_state_dict_lora_delta_matches_closed_form(tiny_model_dir):
    learner = apply_lora(PosePolicy.from_pretrained(tiny_model_dir), r=4, alpha=8)
    _train(learner, steps=2)
    state = merged_state_dict(learner)
    prefix = "model.base_model.model.model.language_model.layers.1.mlp.down_proj"
    params = dict(learner.named_parameters())
    a, b = params[f"{prefix}.lora_A.default.weight"], params[f"{prefix}.lora_B.default.weight"]
    w0 = params[f"{prefix}.base_layer.weight"]
    expected = w0 + (8 / 4) * (b @ a)  # W0 + (alpha / r) · B A
    torch.testing.assert_close(state["model.model.language_model.layers.1.mlp.down_proj.weight"],
                               expected.detach(), atol=1e-6, rtol=1e-6)


def test_merged_state_dict_plain_policy_and_ddp_wrapper(tiny_model_dir, tmp_path):
    learner = PosePolicy.from_pretrained(tiny_model_dir)
    learner.hf_model.requires_grad_(False)  # e.g. only the head trains
    state = merged_state_dict(learner)
    assert set(state) == {n for n, p in learner.named_parameters() if p.requires_grad}
    full = merged_state_dict(learner, trainable_only=False)
    assert set(full) == set(learner.state_dict())
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:  # a file rendezvous: no TCP port that a concurrent run could hold
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                                world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(learner)
        assert set(merged_state_dict(wrapped)) == set(state)
    finally:
        if owned:
            dist.destroy_process_group()
    with pytest.raises(TypeError, match="PosePolicy"):
        merged_state_dict(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- cluster address
def test_unreachable_ray_address_fails_fast_naming_it():
    import time

    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1"):
        init_ray("127.0.0.1:1", {"CPU": 1})
    assert time.perf_counter() - start < 5
    from posrft.rollout.pool import RolloutPool

    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1"):
        RolloutPool("/nonexistent/model", 1, ray_address="127.0.0.1:1")
    assert time.perf_counter() - start < 10
    with pytest.raises(ValueError, match="host:port"):
        check_reachable("no-port-here")
