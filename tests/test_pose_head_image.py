"""A pose head that reads the image tokens (``head_reads_image``): token gathering, masked
attention pooling, the policy's learner and rollout paths, checkpoints and the SFT fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from posrft.policy.config import PosePolicyConfig
from posrft.policy.image_reader import ImageTokenReader, gather_image_tokens
from posrft.policy.model import PosePolicy
from posrft.policy.pose_head import GaussianPoseHead
from posrft.policy.prompts import encode_prompts


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (48, 48, 3), dtype=np.uint8))


@pytest.fixture
def reading_policy(tiny_model_dir):
    return PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(head_reads_image=True))


def test_gather_keeps_each_rows_image_positions_in_order():
    ids = torch.tensor([[0, 7, 7, 1, 7], [7, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    states = torch.randn(3, 5, 4)
    tokens, mask = gather_image_tokens(states, ids, image_token_id=7)
    assert tokens.shape == (3, 3, 4)
    for row in range(3):
        expected = states[row][ids[row] == 7]  # the obvious loop
        k = len(expected)
        assert mask[row].tolist() == [True] * k + [False] * (3 - k)
        torch.testing.assert_close(tokens[row, :k], expected, rtol=0, atol=0)
        assert not tokens[row, k:].any()
    with pytest.raises(ValueError, match="matching input_ids"):
        gather_image_tokens(states[:, :4], ids, 7)


def test_masked_pooling_equals_pooling_each_row_alone():
    """Padding must not change a row's result: the padded batch equals each row run on its own
    tokens; a row without tokens gives 0; padded slots can hold anything."""
    torch.manual_seed(0)
    reader = ImageTokenReader(query_size=6, token_size=8, num_heads=2)
    nn.init.normal_(reader.query_from_pose.weight)  # let the query depend on the state
    reader.fit_normalization(torch.randn(50, 8) * 3 + 1)
    query, tokens = torch.randn(3, 6), torch.randn(3, 4, 8)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [False] * 4])
    tokens[1, 2:] = 1e4  # padding content must not leak in
    out = reader(query, tokens, mask)
    for row, k in ((0, 4), (1, 2)):
        alone = reader(query[row:row + 1], tokens[row:row + 1, :k], torch.ones(1, k, dtype=torch.bool))
        torch.testing.assert_close(out[row:row + 1], alone, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[2], torch.zeros(8))


def test_pooling_matches_the_attention_formula():
    """One head, written out: softmax(q Wq · (x̂ Wk)ᵀ / √d) x̂ Wv, then the output projection."""
    torch.manual_seed(1)
    reader = ImageTokenReader(query_size=5, token_size=4, num_heads=1)
    nn.init.normal_(reader.query_from_pose.weight)
    sample = torch.randn(40, 4) * torch.tensor([0.01, 1.0, 5.0, 0.2]) + 3
    reader.fit_normalization(sample)
    # the standardisation: zero mean, unit std per channel on the sample, computed in float64
    x64 = sample.double()
    expected = (x64 - x64.mean(0)) / x64.std(0)
    got = (sample - reader.token_shift) * reader.token_scale
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    h, tokens = torch.randn(2, 5), torch.randn(2, 3, 4)
    att = reader.attention
    wq, wk, wv = att.in_proj_weight.chunk(3)
    bq, bk, bv = att.in_proj_bias.chunk(3)
    x = (tokens - reader.token_shift) * reader.token_scale
    q = (reader.query + reader.query_from_pose(h)) @ wq.T + bq
    w = torch.softmax(torch.einsum("nd,ntd->nt", q, x @ wk.T + bk) / 2.0, dim=1)
    ref = att.out_proj(torch.einsum("nt,ntd->nd", w, x @ wv.T + bv))
    torch.testing.assert_close(reader(h, tokens, torch.ones(2, 3, dtype=torch.bool)), ref, rtol=1e-5, atol=1e-6)


def test_head_needs_tokens_exactly_when_it_reads_the_image():
    head = GaussianPoseHead(6, num_joints=2, image_token_size=8)
    plain = GaussianPoseHead(6, num_joints=2)
    h, tokens, mask = torch.randn(2, 6), torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    assert head(h, tokens, mask).mean.shape == (2, 12)
    with pytest.raises(ValueError, match="reads the image tokens"):
        head(h)
    with pytest.raises(ValueError, match="does not read image tokens"):
        plain(h, tokens, mask)
    with pytest.raises(ValueError, match="no spread"):
        head.image_reader.fit_normalization(torch.ones(5, 8))
    constant = torch.randn(5, 8)
    constant[:, 3] = 2.0
    head.image_reader.fit_normalization(constant)  # a constant channel is dropped, not divided by 0
    assert head.image_reader.token_scale[3] == 0 and torch.isfinite(head.image_reader.token_scale).all()


def test_policy_pose_depends_on_the_picture_but_does_not_train_the_projector(reading_policy):
    policy = reading_policy
    pose_id = policy.pose_token_id
    nn.init.normal_(policy.pose_head.mean_out.weight, std=0.1)  # an untrained head barely moves μ
    enc = encode_prompts(policy.processing, ["pose?", "pose?"], [_image(0), _image(1)], True, policy.family)
    comp = torch.tensor([[pose_id, policy.eos_token_ids[0]]] * 2)
    out = policy(enc.input_ids, enc.attention_mask, comp, torch.ones_like(comp), mm_inputs=enc.mm_inputs)
    assert out.pose_valid.all()
    assert (out.pose_dist.mean[0] - out.pose_dist.mean[1]).abs().max() > 1e-4
    # only the head's own path here: the <POSE> state is held fixed, so any projector gradient
    # could only come through the reader, which reads the tokens through a stop-gradient
    reader = policy.pose_head.image_reader
    dist = policy.pose_distribution(torch.zeros(2, policy.hidden_size), enc.input_ids, _decoder_inputs(policy, enc))
    dist.mean.sum().backward()
    projector = [p for n, p in policy.named_parameters() if policy.family.is_projector(n)]
    assert projector and all(p.grad is None or not p.grad.any() for p in projector)
    assert reader.attention.in_proj_weight.grad.abs().sum() > 0


def _decoder_inputs(policy, enc):
    seen: list[torch.Tensor] = []
    hook = policy.decoder_input_hook(seen)
    try:
        policy.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                     **policy.model_inputs(enc.mm_inputs, None))  # fmt: skip
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("score", [True, False])
def test_rollout_and_learner_agree(reading_policy, nudge_logits, score):
    """The stored pose log-probs (from the scoring pass, or from ``generate``'s own states) are
    what the learner recomputes: ratio 1 for unchanged weights, images in different rows."""
    nudge_logits(reading_policy, {"<POSE>": 7.0, "<|im_end|>": 6.0})
    nn.init.normal_(reading_policy.pose_head.mean_out.weight, std=0.1)  # so μ follows the input
    images = [_image(2), [_image(3), _image(4)], None]
    batch = reading_policy.rollout(["first", "second prompt", "no picture"], images, num_generations=3,
                                   max_new_tokens=6, seed=1, score=score)  # fmt: skip
    assert batch.pose_valid.any()
    out = reading_policy.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                          batch.completion_mask, batch.pose, mm_inputs=batch.mm_inputs)
    valid = batch.pose_valid
    torch.testing.assert_close(out.pose_dist.mean[valid], batch.pose_mean[valid], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.pose_logp, batch.pose_logp, rtol=1e-4, atol=1e-3)


def test_checkpoint_round_trip_and_config_checks(reading_policy, tiny_model_dir, tiny_text_model_dir, tmp_path):
    reading_policy.pose_head.image_reader.fit_normalization(torch.randn(30, reading_policy.hidden_size))
    saved = reading_policy.save_pretrained(tmp_path / "p")
    again = PosePolicy.from_pretrained(saved)
    assert again.config.head_reads_image
    for (name, a), b in zip(reading_policy.pose_head.state_dict().items(), again.pose_head.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="text-only"):
        PosePolicy.from_pretrained(tiny_text_model_dir, config=PosePolicyConfig(head_reads_image=True))
    plain = PosePolicy.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="head_reads_image=False"):
        PosePolicy(plain.model, plain.processing, PosePolicyConfig(), pose_head=reading_policy.pose_head)


def test_sft_fits_the_token_standardisation_on_training_pictures(tmp_path, tiny_model_dir, caplog):
    """Before the first step SFT standardises the reader's tokens with the first training rows'
    pictures (even without pose_head_input_norm), and training moves the reader. A projector
    that trains under such a head is warned about."""
    import logging

    from datasets import load_from_disk

    from posrft.data.synth import build_image2pose
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    data = tmp_path / "i2p"
    build_image2pose(20, 2, 2, seed=0, out_dir=data, image_size=48)
    start = PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(head_reads_image=True))
    start.save_pretrained(tmp_path / "start")
    with caplog.at_level(logging.WARNING, logger="posrft.train"):
        out = run_sft(SFTConfig(model_name_or_path=str(tmp_path / "start"), output_dir=str(tmp_path / "sft"),
                                dataset_path=str(data), max_steps=2, per_device_train_batch_size=4,
                                report_to=["none"], use_peft=False))  # fmt: skip
    assert "train_projector: false" in caplog.text
    trained = PosePolicy.from_pretrained(out)
    reader = trained.pose_head.image_reader
    assert reader.has_normalization and not trained.pose_head.has_input_normalization
    # the statistics of the start's tokens over the 20 training pictures, recomputed here
    rows = load_from_disk(str(data))["train"]
    seen: list[torch.Tensor] = []
    hook = start.decoder_input_hook(seen)
    tokens = []
    with torch.no_grad():
        for row in rows:
            seen.clear()
            enc = encode_prompts(start.processing, [row["prompt"]], [row["images"]], True, start.family)
            start.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                        **start.model_inputs(enc.mm_inputs, None))  # fmt: skip
            tokens.append(seen[0][0][enc.input_ids[0] == start.image_token_id].double())
    hook.remove()
    tokens = torch.cat(tokens)
    torch.testing.assert_close(reader.token_shift.double(), tokens.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reader.token_scale.double(), 1 / tokens.std(0), rtol=1e-3, atol=1e-5)
    moved = trained.pose_head.image_reader.query_from_pose.weight
    assert moved.abs().sum() > 0  # zero-initialised, so any value is a training step's


def test_hygrpo_with_lora_trains_the_reader_and_keeps_its_statistics(tmp_path, tiny_model_dir):
    """The RL path of the table's image rows: LoRA, projector frozen, the reference head under
    the disabled adapter; the exported head still reads the image with the SFT's statistics."""
    from safetensors.torch import load_file

    from posrft.data.synth import build_image2pose
    from posrft.train.config import HyGRPOConfig, SFTConfig
    from posrft.train.hygrpo import run_hygrpo
    from posrft.train.sft import run_sft

    data = tmp_path / "i2p"
    build_image2pose(16, 2, 2, seed=0, out_dir=data, image_size=48)
    PosePolicy.from_pretrained(tiny_model_dir, config=PosePolicyConfig(head_reads_image=True)).save_pretrained(tmp_path / "start")
    sft = run_sft(SFTConfig(model_name_or_path=str(tmp_path / "start"), output_dir=str(tmp_path / "sft"),
                            dataset_path=str(data), max_steps=10, per_device_train_batch_size=4, learning_rate=1e-2,
                            report_to=["none"], use_peft=False, train_projector=False))  # fmt: skip
    out = run_hygrpo(HyGRPOConfig(
        model_name_or_path=str(sft), dataset_path=str(data), output_dir=str(tmp_path / "rl"), max_steps=2,
        per_device_train_batch_size=8, num_generations=4, max_completion_length=8, learning_rate=1e-2,
        report_to=["none"], num_rollout_workers=0, use_peft=True, lora_r=4, train_projector=False,
        merge_lora_on_export=True, rewards=[{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}]))
    log = [json.loads(line) for line in open(tmp_path / "rl" / "metrics.jsonl")]
    assert all(r["pose/valid_frac"] > 0 for r in log)
    before, after = load_file(str(sft / "pose_head.safetensors")), load_file(str(out / "pose_head.safetensors"))
    for key in ("image_reader.token_shift", "image_reader.token_scale"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["image_reader.attention.in_proj_weight"], after["image_reader.attention.in_proj_weight"])
    assert PosePolicy.from_pretrained(out).pose_head.reads_image
