"""SkeletonLLM model: multi-image prompts, pixels, gradient flow, frozen parts, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.data.actions import make_clip
from posrft.skeleton.inputs import chat_prompt, encode_prompt_ids, encode_targets
from posrft.skeleton.model import RendererSettings, SkeletonLLM

T_PRIME = 3


@pytest.fixture
def model(tiny_model_dir):
    return SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=T_PRIME))


def clips(labels, fmt="smpl24", seed=0):
    return torch.from_numpy(np.stack([make_clip(y, fmt=fmt, num_frames=24, seed=seed + i)
                                      for i, y in enumerate(labels)]))


def test_prompt_has_t_prime_times_16_image_tokens_like_the_processor(model):
    question = "Which action is shown? Options: squat; bow. Answer with one option."
    mine = encode_prompt_ids(model.processor, [question], T_PRIME, model.image_seq_length)[0]
    image_id = model.tokenizer.convert_tokens_to_ids("<image>")
    assert model.image_seq_length == 16
    assert sum(t == image_id for t in mine) == T_PRIME * 16
    images = [Image.new("RGB", (56, 56)) for _ in range(T_PRIME)]
    ref = model.processor(text=[chat_prompt(model.processor, question, T_PRIME)], images=images,
                          return_tensors="pt")
    assert ref["input_ids"][0].tolist() == mine


def test_pixels_match_the_clip_image_processor(model):
    frames = (torch.rand(2, 3, 56, 56) * 255).round() / 255  # 8-bit exact values
    pil = [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
           for f in frames]
    ref = model.processor.image_processor(pil, return_tensors="pt")["pixel_values"]
    assert torch.allclose(model.normalise(frames), ref, atol=1e-5)


def test_target_mask_covers_answer_and_eos(model):
    enc = encode_targets(model.processor, ["q one", "q"], ["squat", "raise left arm"], T_PRIME,
                         model.image_seq_length, 64)
    tok = model.tokenizer
    for row, answer in enumerate(["squat", "raise left arm"]):
        ids = enc.input_ids[row][enc.target_mask[row]].tolist()
        assert ids == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    short = int(enc.attention_mask.sum(1).argmin())  # right-padded: zeros only at the end
    n = int(enc.attention_mask[short].sum())
    assert n < enc.attention_mask.shape[1] and enc.attention_mask[short, :n].all()
    assert not enc.target_mask[short, n:].any()


def _step(model, lr=1e-2):
    x = clips(["squat", "bow"])
    enc = encode_targets(model.processor, ["Describe the action."] * 2, ["squat", "bow"], T_PRIME,
                         model.image_seq_length, 16)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    total, count = model(x, enc.input_ids, enc.attention_mask, enc.target_mask)
    (-total.sum() / count.sum()).backward()
    opt.step()


def test_renderer_learns_from_the_llm_loss_and_nothing_else_moves(model):
    model.set_train_parts({"renderer"})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    renderer = {n for n in before if n.startswith("renderer.")}
    assert changed and changed <= renderer
    assert "renderer.appearance.features" in changed  # colour features got LLM gradient
    assert any(n.startswith("renderer.appearance.mlp") for n in changed)
    assert not any("vision_tower" in n or "language_model" in n for n in changed)


@pytest.mark.parametrize("parts, expect", [
    ({"renderer"}, {"renderer"}),
    ({"renderer", "projector"}, {"renderer", "projector"}),
    ({"renderer", "projector", "lora"}, {"renderer", "projector", "lora"}),
    ({"projector", "lora"}, {"projector", "lora"}),
])  # fmt: skip
def test_trainable_parts_per_stage(model, parts, expect):
    names = model.set_train_parts(parts)
    kinds = set()
    for n in names:
        if n.startswith("renderer."):
            kinds.add("renderer")
        elif "multi_modal_projector" in n:
            kinds.add("projector")
        elif "lora_" in n or "modules_to_save" in n:
            kinds.add("lora")
        else:
            raise AssertionError(f"unexpected trainable parameter {n}")
    assert kinds == expect
    assert not any("vision_tower" in n for n in names)
    frozen_renderer = all(not p.requires_grad for p in model.renderer.parameters())
    assert frozen_renderer == ("renderer" not in parts)


def test_fixed_renderer_never_trains(tiny_model_dir):
    m = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=T_PRIME),
                                    renderer_learnable=False)
    names = m.set_train_parts({"renderer", "projector"})
    assert names and not any(n.startswith("renderer.") for n in names)
    with pytest.raises(ValueError, match="no trainable parameters"):
        m.set_train_parts({"renderer"})
    with pytest.raises(ValueError, match="train_parts"):
        m.set_train_parts({"vision"})


def _logits(m, x):
    enc = encode_targets(m.processor, ["Describe the action."], ["squat"], T_PRIME,
                         m.image_seq_length, 16)
    m.eval()
    with torch.no_grad():
        pix = m.pixels(x)
        return m.lm(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                    pixel_values=pix.flatten(0, 1)).logits


@pytest.mark.parametrize("parts", [{"renderer", "projector"}, {"renderer", "projector", "lora"}])
def test_save_load_round_trip_gives_identical_logits(model, tmp_path, parts):
    model.set_train_parts(parts)
    _step(model, lr=0.05)
    if "lora" in parts:  # make the adapter non-zero so merging matters
        with torch.no_grad():
            for n, p in model.lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.05)
    x = clips(["squat"])
    before = _logits(model, x)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "renderer.safetensors").is_file()
    again = SkeletonLLM.from_pretrained(tmp_path / "ckpt")
    after = _logits(again, x)
    if "lora" in parts:
        torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    else:
        assert torch.equal(after, before)
    assert torch.equal(again.renderer.appearance.features, model.renderer.appearance.features)


def test_bad_clips_are_rejected_with_the_reason(model):
    x = clips(["squat"])
    with pytest.raises(ValueError, match="24|joint"):
        model.pixels(x[:, :, :20])
    bad = x.clone()
    bad[0, 5, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        model.pixels(bad)


def test_loading_a_renderer_for_another_format_names_both(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="'smpl24'.*'ntu25'"):
        SkeletonLLM.from_pretrained(tmp_path / "m", RendererSettings(fmt="ntu25"))


def test_cross_format_transfer_copies_shared_weights_and_nearest_primitives(model):
    from posrft.body.formats import get_format
    from posrft.data.skeleton import rest_joints
    from posrft.skeleton.transfer import transfer_renderer

    src = model.renderer
    with torch.no_grad():
        src.appearance.features.normal_()
        src.log_scales.add_(0.3)
    dst = transfer_renderer(src, "ntu25", samples_per_bone=4, nfm=True)
    assert torch.equal(dst.log_scales, src.log_scales)
    assert torch.equal(dst.appearance.mlp[0].weight, src.appearance.mlp[0].weight)
    # independent nearest neighbour on the rest pose, joint by joint (brute force)
    rest = rest_joints(torch.float64).numpy()

    def centres(fmt, layout):
        x = get_format(fmt).smpl_matrix() @ rest
        return [(1 - t) * x[a] + t * x[b] for a, b, t in
                zip(layout.joint_a.tolist(), layout.joint_b.tolist(), layout.t.tolist())]

    a, b = centres("smpl24", src.layout), centres("ntu25", dst.layout)
    for i, p in enumerate(b):
        d = [float(np.sum((q - p) ** 2)) for q in a]
        nearest = [k for k in range(len(a)) if d[k] <= min(d) + 1e-12]  # ties: any of them
        assert any(torch.equal(dst.appearance.features[i], src.appearance.features[k])
                   for k in nearest)
    x = torch.from_numpy(make_clip("squat", fmt="ntu25", num_frames=24, seed=0))[None]
    assert dst.eval()(x).shape == (1, T_PRIME, 3, 56, 56)


def test_image_token_norm_pins_what_the_lm_reads_and_survives_a_reload(model, tiny_model_dir, tmp_path):
    with torch.no_grad():
        pix = model.pixels(clips(["squat", "bow"]))
        free = model.image_tokens(pix)
    pinned = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=T_PRIME, image_token_norm=2.5))
    with torch.no_grad():
        tokens = pinned.image_tokens(pix)
    torch.testing.assert_close(tokens, 2.5 * free / free.norm(dim=-1, keepdim=True))
    pinned.save_pretrained(tmp_path / "m")
    again = SkeletonLLM.from_pretrained(tmp_path / "m", RendererSettings(num_frames=T_PRIME))
    assert again.settings.image_token_norm == 2.5
