"""How SkeletonLLM reads frames: the AyaVision (DINOv2-style, pixel-shuffle) path, tokens per
frame, pooling, the target-only head, KV-cached option scoring and greedy captions, each
checked against the HF model's own forward / generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.data.actions import make_clip
from posrft.skeleton.inputs import encode_answers, encode_generation_prompts, encode_targets
from posrft.skeleton.model import RendererSettings, SkeletonLLM
from posrft.skeleton.reader import embed_with_images, greedy_decode, option_logprobs, pool_tokens

T_PRIME = 2


@pytest.fixture(scope="module")
def aya_dir(tmp_path_factory, tiny_text_model_dir):
    """A tiny AyaVision model composed like `init-pretrained --pool 2`: random 2-layer DINOv2
    (56 px, patch 14: 4×4 patches -> 2×2 = 4 tokens), the tiny Qwen2 LM, ImageNet processor."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Dinov2Config, Dinov2Model

    from posrft.policy.pretrained.compose import compose_llava

    torch.manual_seed(0)
    text = AutoModelForCausalLM.from_pretrained(tiny_text_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    vision = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, patch_size=14, image_size=56)).eval()
    model, processor = compose_llava(text, tok, vision, image_size=56, pool=2, seed=0)
    out = tmp_path_factory.mktemp("aya") / "model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def clips(labels, seed=0):
    return torch.from_numpy(np.stack([make_clip(y, num_frames=16, seed=seed + i)
                                      for i, y in enumerate(labels)]))


def _reference(m, pix, enc):
    """Summed target log-probs from the HF model's own forward (its own image path)."""
    with torch.no_grad():
        logits = m.lm(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                      pixel_values=pix.flatten(0, 1)).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, enc.input_ids[:, 1:, None])[..., 0]
    return (logp * enc.target_mask[:, 1:]).sum(1)


@pytest.mark.parametrize("vision_size, tokens", [(None, 4), (112, 16)])
def test_aya_answer_logprobs_equal_the_model_forward(aya_dir, vision_size, tokens):
    m = SkeletonLLM.from_pretrained(aya_dir, RendererSettings(num_frames=T_PRIME,
                                                              vision_size=vision_size))
    assert m.family.name == "aya_vision" and m.image_seq_length == tokens
    m.eval()
    enc = encode_targets(m.processor, ["Which action?", "Name it."], ["squat", "raise left arm"],
                         T_PRIME, m.image_seq_length, 16)
    with torch.no_grad():
        pix = m.pixels(clips(["squat", "bow"]))
        got, count = m.answer_logprobs(pix, enc.input_ids, enc.attention_mask, enc.target_mask)
    assert pix.shape[-1] == (vision_size or 56)
    torch.testing.assert_close(got, _reference(m, pix, enc), atol=1e-4, rtol=1e-5)
    assert count.tolist() == enc.target_mask[:, 1:].sum(1).float().tolist()


def test_aya_pixels_match_the_imagenet_processor(aya_dir):
    m = SkeletonLLM.from_pretrained(aya_dir, RendererSettings(num_frames=T_PRIME))
    assert m.processor.image_processor.image_mean == pytest.approx([0.485, 0.456, 0.406])
    frames = (torch.rand(2, 3, 56, 56) * 255).round() / 255
    pil = [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for f in frames]
    ref = m.processor.image_processor(pil, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(m.normalise(frames), ref, atol=1e-5, rtol=0)


def test_aya_renderer_learns_through_the_frozen_dinov2(aya_dir):
    m = SkeletonLLM.from_pretrained(aya_dir, RendererSettings(num_frames=T_PRIME))
    names = m.set_train_parts({"renderer", "projector", "lora"})
    assert not any("vision_tower" in n for n in names)
    head_trained = any("modules_to_save" in n for n in names if "lm_head" in n)
    assert head_trained == (not m.lm_head_tied())  # auto: only an untied head trains
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    enc = encode_targets(m.processor, ["q"] * 2, ["squat", "bow"], T_PRIME, m.image_seq_length, 8)
    total, count = m(clips(["squat", "bow"]), enc.input_ids, enc.attention_mask, enc.target_mask)
    (-total.sum() / count.sum()).backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert grads["renderer.appearance.features"].abs().sum() > 0
    torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-2).step()
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("renderer.") for n in changed)
    assert not any("vision_tower" in n for n in changed)


def test_lm_head_auto_and_lora_on_top_layers(tiny_model_dir, aya_dir):
    tiny = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=T_PRIME))
    assert not tiny.lm_head_tied()
    names = tiny.set_train_parts({"lora"}, lora_layers=1)
    assert any("modules_to_save" in n and "lm_head" in n for n in names)  # untied: trained
    lora = [n for n in names if "lora_" in n]
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n in lora}
    assert layers == {tiny.hf_model.config.text_config.num_hidden_layers - 1}
    frozen = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=T_PRIME))
    assert not any("lm_head" in n for n in frozen.set_train_parts({"lora"}, lm_head=False))
    with pytest.raises(ValueError, match="lora_layers"):
        SkeletonLLM.from_pretrained(aya_dir).set_train_parts({"lora"}, lora_layers=99)


def test_pool_tokens_averages_square_blocks():
    feats = torch.randn(3, 16, 5)
    grid = feats.numpy().reshape(3, 4, 4, 5)  # row-major grid of 4×4 tokens
    want = grid.reshape(3, 2, 2, 2, 2, 5).mean(axis=(2, 4)).reshape(3, 4, 5)
    np.testing.assert_allclose(pool_tokens(feats, 2).numpy(), want, atol=1e-6)
    with pytest.raises(ValueError, match="token_pool 3"):
        pool_tokens(feats, 3)


@pytest.mark.parametrize("which, pool", [("tiny", None), ("tiny", 2), ("aya", None)])
def test_cached_option_scores_equal_one_row_per_option(which, pool, tiny_model_dir, aya_dir):
    m = SkeletonLLM.from_pretrained(tiny_model_dir if which == "tiny" else aya_dir,
                                    RendererSettings(num_frames=T_PRIME, token_pool=pool))
    assert m.image_seq_length == (4 if which == "aya" or pool == 2 else 16)
    m.eval()
    prompts = ["Which one? Options: squat; bow; raise left arm.", "Pick: jump up; nod head."]
    options = [["squat", "bow", "raise left arm"], ["jump up", "nod head"]]
    with torch.no_grad():
        pix = m.pixels(clips(["squat", "jump up"]))
        images = m.image_tokens(pix)
        ids, att = encode_generation_prompts(m.processor, prompts, T_PRIME, m.image_seq_length)
        flat = [o for opts in options for o in opts]
        idx = torch.tensor([b for b, opts in enumerate(options) for _ in opts])
        oid, omask = encode_answers(m.processor, flat, 16)
        got, n = option_logprobs(m.hf_model, embed_with_images(m.hf_model, ids, images), att,
                                 oid, omask, idx)
        enc = encode_targets(m.processor, [prompts[i] for i in idx], flat, T_PRIME,
                             m.image_seq_length, 16)
        want, n_want = m.answer_logprobs(pix, enc.input_ids, enc.attention_mask, enc.target_mask, idx)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-5)
    assert n.tolist() == n_want.tolist()


def test_greedy_captions_equal_generate(tiny_model_dir):
    m = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=T_PRIME))
    m.eval()
    tok = m.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    with torch.no_grad():
        pix = m.pixels(clips(["squat", "bow", "nod head"]))
        ids, att = encode_generation_prompts(m.processor, ["Describe.", "Describe the action.", "Go"],
                                             T_PRIME, m.image_seq_length)
        ref = m.hf_model.generate(input_ids=ids, attention_mask=att, pixel_values=pix.flatten(0, 1),
                                  max_new_tokens=8, do_sample=False, bad_words_ids=[[image_id]],
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        got = greedy_decode(m.hf_model, embed_with_images(m.hf_model, ids, m.image_tokens(pix)), att,
                            8, tok.eos_token_id, (image_id,))
    ref = ref[:, ids.shape[1]:]
    assert got.shape[1] <= 8 and ref.shape[1] <= 8

    def cut(r: list[int]) -> list[int]:  # up to and including the first EOS
        return r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r

    for a, b in zip(got.tolist(), ref.tolist()):
        assert cut(a) == cut(b)
