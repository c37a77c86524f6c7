"""Batched rollouts and the learner's log-prob API on the tiny LLaVA and text-only models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.policy.logprobs import mask_after_eos, position_ids_from_mask, selective_log_softmax
from posrft.policy.model import PosePolicy
from posrft.policy.prompts import encode_prompts

NUDGE = {"<POSE>": 7.0, "<|im_end|>": 6.0}  # random model → a mix of valid/invalid/ended rows


def _image(seed: int) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 255, size=(64, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _check_masks(policy: PosePolicy, batch) -> None:
    eos = torch.tensor(policy.eos_token_ids)
    for ids, mask in zip(batch.completion_ids, batch.completion_mask):
        n = int(mask.sum())
        assert torch.equal(mask[:n], torch.ones(n, dtype=mask.dtype)) and not mask[n:].any()
        inside = ids[:n]
        eos_pos = torch.isin(inside, eos).nonzero().flatten()
        assert len(eos_pos) <= 1 and (len(eos_pos) == 0 or eos_pos[0] == n - 1)
        if n < len(ids):  # cut short: must end at an EOS, then padding
            assert len(eos_pos) == 1 and (ids[n:] == policy.pad_token_id).all()


def test_rollout_shapes_masks_and_flags_with_images(tiny_policy, nudge_logits):
    nudge_logits(tiny_policy, NUDGE)
    prompts = ["Describe the pose.", [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "And this one?"}]}], "Text only prompt."]
    images = [[_image(0), _image(1)], _image(2), None]
    batch = tiny_policy.rollout(prompts, images, num_generations=4, max_new_tokens=6, seed=0)
    n, d = 12, 132
    assert len(batch) == n and batch.completion_ids.shape[0] == n
    assert batch.prompt_ids.shape == batch.prompt_mask.shape and batch.prompt_ids.shape[0] == n
    assert batch.token_logps.shape == batch.completion_ids.shape
    assert batch.image_counts.tolist() == [2] * 4 + [1] * 4 + [0] * 4
    assert batch.pixel_values.shape == (12, 3, 56, 56)
    assert batch.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch.prompt_mask[:, -1].all()  # left padding
    for key in ("pose_mean", "pose_std"):
        assert getattr(batch, key).shape == (n, d)
    assert batch.pose.shape == (n, 1, d) and batch.pose_logp.shape == (n, 1)
    _check_masks(tiny_policy, batch)
    has_pose = ((batch.completion_ids == tiny_policy.pose_token_id) & batch.completion_mask.bool()).any(1)
    assert torch.equal(batch.pose_valid, has_pose)
    assert 0 < int(batch.pose_valid.sum()) < n, "seed 0 should give valid and invalid rows"
    assert [("<POSE>" in t) for t in batch.completion_texts] == batch.pose_valid.tolist()
    assert all("<|im_end|>" not in t for t in batch.completion_texts)
    for field in (batch.token_logps, batch.pose, batch.pose_logp, batch.pose_mean, batch.pose_std):
        assert torch.isfinite(field).all()
    assert (batch.pose_logp[~batch.pose_valid] == 0).all()
    torch.testing.assert_close(batch.pose[~batch.pose_valid, 0], batch.pose_mean[~batch.pose_valid])
    torch.testing.assert_close(batch.pose_logp[batch.pose_valid, 0],
                               batch.pose_dist.log_prob(batch.pose[:, 0])[batch.pose_valid])


def test_rollout_seed_reproducible_and_global_rng_untouched(tiny_policy, nudge_logits):
    nudge_logits(tiny_policy, NUDGE)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_policy.rollout(["Pose please."], num_generations=3, max_new_tokens=5, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = tiny_policy.rollout(["Pose please."], num_generations=3, max_new_tokens=5, seed=7)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.pose, b.pose)
    c = tiny_policy.rollout(["Pose please."], num_generations=3, max_new_tokens=5, seed=8)
    assert not (torch.equal(a.completion_ids, c.completion_ids) and torch.equal(a.pose, c.pose))


def test_greedy_rollout_returns_mean_pose(tiny_policy, nudge_logits):
    nudge_logits(tiny_policy, {"<POSE>": 9.0})
    batch = tiny_policy.rollout(["x", "y"], num_generations=2, max_new_tokens=3, greedy=True)
    assert batch.pose_valid.all()
    assert torch.equal(batch.pose[:, 0], batch.pose_mean)
    assert torch.equal(batch.completion_ids[0], batch.completion_ids[1])


def test_token_logps_match_generate_scores(tiny_policy, nudge_logits):
    """Independent check: generate()'s own logits at each step give the same log-probs, so the
    forward pass sees the same positions/masks as sampling did (left padding, images)."""
    nudge_logits(tiny_policy, NUDGE)
    enc = encode_prompts(tiny_policy.processing, ["A long prompt to force some left padding here.", "Hi"],
                         [[_image(3)], [_image(4), _image(5)]], multimodal=True)
    temperature = 0.7
    torch.manual_seed(0)
    out = tiny_policy.hf_model.generate(
        input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=enc.pixel_values,
        do_sample=True, temperature=temperature, top_k=0, max_new_tokens=8,
        return_dict_in_generate=True, output_logits=True, pad_token_id=tiny_policy.pad_token_id,
        eos_token_id=tiny_policy.eos_token_ids, suppress_tokens=tiny_policy.suppressed_token_ids)
    ids, mask = mask_after_eos(out.sequences[:, enc.input_ids.shape[1]:],
                               torch.tensor(tiny_policy.eos_token_ids), tiny_policy.pad_token_id)
    step_logits = torch.stack(out.logits, 1).float() / temperature
    step_logits[..., tiny_policy.suppressed_token_ids] = float("-inf")
    expected = torch.log_softmax(step_logits, -1).gather(-1, ids[..., None])[..., 0]
    got = tiny_policy.forward_logprobs(enc.input_ids, enc.attention_mask, ids, mask,
                                       pixel_values=enc.pixel_values, temperature=temperature)
    assert torch.isfinite(got.token_logps).all()
    torch.testing.assert_close(got.token_logps * mask, expected * mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("with_images", [True, False])
def test_recomputed_logprobs_give_ratio_one(tiny_policy, nudge_logits, with_images):
    nudge_logits(tiny_policy, NUDGE)
    images = [_image(6), [_image(7), _image(8)]] if with_images else None
    batch = tiny_policy.rollout(["first", "second prompt"], images, num_generations=3,
                                max_new_tokens=6, temperature=0.9, seed=1)
    assert batch.pose_valid.any()
    out = tiny_policy.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                       batch.completion_mask, batch.pose,
                                       pixel_values=batch.pixel_values, temperature=0.9)
    mask = batch.completion_mask.bool()
    token_ratio = torch.exp(out.token_logps - batch.token_logps)[mask]
    torch.testing.assert_close(token_ratio, torch.ones_like(token_ratio), atol=1e-5, rtol=0)
    pose_ratio = torch.exp(out.pose_logp - batch.pose_logp)
    torch.testing.assert_close(pose_ratio, torch.ones_like(pose_ratio), atol=1e-5, rtol=0)
    assert torch.equal(out.pose_valid, batch.pose_valid)
    # a learner micro-batch (different rows, extra left padding) gives the same numbers
    sub = batch.select([4, 1])
    out_sub = tiny_policy.forward_logprobs(sub.prompt_ids, sub.prompt_mask, sub.completion_ids,
                                           sub.completion_mask, sub.pose,
                                           pixel_values=sub.pixel_values, temperature=0.9)
    diff = (out_sub.token_logps - sub.token_logps)[sub.completion_mask.bool()]
    assert diff.abs().max() < 1e-5
    assert (out_sub.pose_logp - sub.pose_logp).abs().max() < 1e-4


def test_pose_distribution_is_read_at_the_first_pose_token(tiny_policy):
    """Hand-built completions; the head input is compared with the decoder's last hidden state
    taken through another path (the base model's ``last_hidden_state``)."""
    tok, pose_id = tiny_policy.tokenizer, tiny_policy.pose_token_id
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    words = tok.encode(" the left arm is raised", add_special_tokens=False)
    rows = [words[:2] + [pose_id] + words[2:4] + [pose_id, eos],  # first <POSE> at 2
            [pose_id] + words[:5] + [eos],                          # at 0
            words[:3] + [eos, pose_id, pose_id, pose_id]]           # after EOS: invalid
    completion = torch.tensor(rows)
    completion, cmask = mask_after_eos(completion, torch.tensor(tiny_policy.eos_token_ids),
                                       tiny_policy.pad_token_id)
    enc = encode_prompts(tiny_policy.processing, ["a", "bb", "a much longer prompt"], None, True)
    out = tiny_policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion, cmask)
    assert out.pose_valid.tolist() == [True, True, False]
    ids = torch.cat([enc.input_ids, completion], 1)
    attn = torch.cat([enc.attention_mask, cmask], 1)
    with torch.no_grad():
        hidden = tiny_policy.hf_model.model(input_ids=ids, attention_mask=attn,
                                            position_ids=position_ids_from_mask(attn)).last_hidden_state
        p = enc.input_ids.shape[1]
        expected = tiny_policy.pose_head(torch.stack([hidden[0, p + 2], hidden[1, p + 0]]))
        torch.testing.assert_close(out.pose_dist.mean[:2], expected.mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.pose_dist.log_std[:2], expected.log_std, atol=1e-5, rtol=0)
    assert out.pose_logp is None
    assert torch.isfinite(out.pose_dist.mean).all() and torch.isfinite(out.token_logps).all()


def test_forward_logprobs_has_gradients_and_rejects_nan_poses(tiny_policy):
    pose_id = tiny_policy.pose_token_id
    enc = encode_prompts(tiny_policy.processing, ["p0", "p1", "p2"], None, True)
    completion = torch.tensor([[11, pose_id, 12], [pose_id, 13, 14], [15, 16, 17]])
    cmask = torch.ones_like(completion)
    poses = torch.zeros(3, 132)
    poses[2] = float("nan")  # row 2 has no <POSE>: its pose is ignored
    out = tiny_policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion, cmask, poses)
    assert out.pose_valid.tolist() == [True, True, False] and out.pose_logp[2] == 0
    torch.testing.assert_close(out.pose_logp[:2], out.pose_dist[0:2].log_prob(poses[:2]))
    (out.pose_logp.sum() + (out.token_logps * cmask).sum()).backward()
    assert tiny_policy.pose_head.mean_out.weight.grad.abs().sum() > 0
    assert tiny_policy.hf_model.get_output_embeddings().weight.grad.abs().sum() > 0
    poses[1, 5] = float("nan")
    with pytest.raises(ValueError, match=r"poses\[1\]"):
        tiny_policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion, cmask, poses)
    with pytest.raises(ValueError, match=r"poses must be \(N, D\)"):
        tiny_policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion, cmask,
                                     torch.zeros(3, 7))


def test_completion_without_pose_is_invalid_not_an_error(tiny_policy, nudge_logits):
    nudge_logits(tiny_policy, {"<|im_end|>": 20.0})  # every completion ends at once
    batch = tiny_policy.rollout(["anything"], [_image(9)], num_generations=2, max_new_tokens=1, seed=0)
    assert not batch.pose_valid.any()
    assert batch.completion_mask.tolist() == [[1], [1]]
    assert torch.isfinite(batch.pose).all() and (batch.pose_logp == 0).all()
    assert batch.completion_texts == ["", ""]


def test_input_errors_name_the_culprit(tiny_policy):
    with pytest.raises(ValueError, match=r"prompts\[1\] has 0 image part\(s\) but 1 image"):
        tiny_policy.rollout(["a", [{"role": "user", "content": "b"}]], [None, _image(0)])
    with pytest.raises(ValueError, match="images has 1 entries"):
        tiny_policy.rollout(["a", "b"], [None])
    with pytest.raises(ValueError, match="temperature"):
        tiny_policy.rollout(["a"], temperature=0.0)
    image_id = tiny_policy.suppressed_token_ids[0]
    enc = encode_prompts(tiny_policy.processing, ["a", "b"], None, True)
    completion = torch.tensor([[5, 6], [7, image_id]])
    with pytest.raises(ValueError, match="completion 1 contains token id"):
        tiny_policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion,
                                     torch.ones_like(completion))


def test_text_only_causal_lm_policy(tiny_text_model_dir, nudge_logits):
    policy = PosePolicy.from_pretrained(tiny_text_model_dir)
    assert not policy.multimodal and policy.suppressed_token_ids == []
    nudge_logits(policy, NUDGE)
    batch = policy.rollout(["Generate the pose: arms up.", "Sit down."], num_generations=3,
                           max_new_tokens=6, seed=2)
    assert len(batch) == 6 and batch.pixel_values is None
    _check_masks(policy, batch)
    out = policy.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                  batch.completion_mask, batch.pose)
    m = batch.completion_mask.bool()
    assert (out.token_logps - batch.token_logps)[m].abs().max() < 1e-5
    assert (out.pose_logp - batch.pose_logp).abs().max() < 1e-5
    with pytest.raises(ValueError, match="text-only"):
        policy.rollout(["x"], [_image(0)])


def test_selective_log_softmax_matches_log_softmax():
    logits = torch.randn(3, 5, 11)
    index = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, index[..., None])[..., 0]
    torch.testing.assert_close(selective_log_softmax(logits, index), expected)


def test_nested_pose_samples_share_one_gaussian(tiny_policy, nudge_logits):
    """K poses per completion from its one N(μ, σ²); the first is what K = 1 samples."""
    nudge_logits(tiny_policy, {"<POSE>": 9.0})
    one = tiny_policy.rollout(["x", "y"], num_generations=2, max_new_tokens=3, seed=5)
    many = tiny_policy.rollout(["x", "y"], num_generations=2, max_new_tokens=3, seed=5, num_pose_samples=64)
    assert many.pose.shape == (4, 64, 132) and many.pose_logp.shape == (4, 64)
    torch.testing.assert_close(many.pose[:, 0], one.pose[:, 0])
    z = (many.pose - many.pose_mean[:, None]) / many.pose_std[:, None]
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02  # standard normal noise
    torch.testing.assert_close(many.pose_logp, many.pose_dist.log_prob(many.pose))
    with pytest.raises(ValueError, match="num_pose_samples"):
        tiny_policy.rollout(["x"], greedy=True, num_pose_samples=2)


@pytest.mark.parametrize("max_new_tokens", [1, 4])
def test_unscored_rollout_reads_the_pose_from_generate(tiny_policy, nudge_logits, max_new_tokens):
    """score=False skips the scoring pass: the pose distribution comes from the hidden state
    generate computed (or, when <POSE> was the last token generated, one fallback pass)."""
    nudge_logits(tiny_policy, {"<POSE>": 9.0})
    kw = dict(num_generations=2, max_new_tokens=max_new_tokens, seed=3, num_pose_samples=2)
    scored = tiny_policy.rollout(["x", "a person squats"], **kw)
    fast = tiny_policy.rollout(["x", "a person squats"], score=False, **kw)
    assert fast.token_logps is None and torch.equal(fast.completion_ids, scored.completion_ids)
    assert fast.pose_valid.any() and torch.equal(fast.pose_valid, scored.pose_valid)
    v = fast.pose_valid
    torch.testing.assert_close(fast.pose_mean[v], scored.pose_mean[v], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.pose_log_std[v], scored.pose_log_std[v], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.pose[v], scored.pose[v], atol=1e-5, rtol=0)
