"""The offline tiny LLaVA model: determinism, HF round trip, tokenizer, processor, generation."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    LlavaForConditionalGeneration,
)

from posrft.policy.tiny import SPECIAL_TOKENS, build_tiny_model


def _image(seed: int, size=(70, 50)) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_same_seed_gives_identical_files(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(tiny_model_dir, again, names, shallow=False)
    assert not mismatch and not errors, mismatch + errors


def test_other_seed_changes_weights_not_tokenizer(tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "seed1", seed=1)
    assert filecmp.cmp(tiny_model_dir / "tokenizer.json", other / "tokenizer.json", shallow=False)
    w0 = load_file(tiny_model_dir / "model.safetensors")
    w1 = load_file(other / "model.safetensors")
    assert w0.keys() == w1.keys()
    assert not torch.equal(w0["language_model.lm_head.weight"], w1["language_model.lm_head.weight"])


def test_refuses_non_empty_output_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        build_tiny_model(tmp_path / "x")
    assert (tmp_path / "x" / "file").read_text() == "keep me"


def test_loads_offline_through_auto_classes(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlavaForConditionalGeneration)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 20_000_000
    reference = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name
    assert processor.tokenizer.padding_side == "left"


def test_tokenizer_special_tokens_and_compact_pose_language(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert 2048 <= len(tok) <= 4096
    for special in SPECIAL_TOKENS:
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == special
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    sentence = "The person is standing with the left arm raised and the right knee slightly bent."
    ids = tok.encode(sentence, add_special_tokens=False)
    assert len(ids) <= len(sentence.split()) + 2  # about one token per word
    assert tok.decode(ids) == sentence
    text = "Ünïcödé 🙂 survives byte-level BPE"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_processor_expands_each_image_and_chat_template_takes_several(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Describe the pose."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.count("<image>") == 2 and text.endswith("<|im_start|>assistant\n")
    enc = processor(text=[text], images=[_image(0), _image(1)], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    # 56 px / 14 px patches = 16 patch tokens per image (CLS dropped by the "default" strategy)
    assert int((enc["input_ids"] == image_id).sum()) == 2 * 16
    assert tuple(enc["pixel_values"].shape) == (2, 3, 56, 56)


def test_generates_with_images(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    msgs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Pose?"}]}],
            [{"role": "user", "content": "No image here, a longer text prompt."}]]
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs]
    enc = processor(text=texts, images=[_image(2)], padding=True, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    prompt_len = enc["input_ids"].shape[1]
    assert out.shape[0] == 2 and prompt_len < out.shape[1] <= prompt_len + 5


def test_text_only_sibling_loads_as_causal_lm(tiny_text_model_dir, tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_text_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    assert model.config.model_type == "qwen2"
    assert filecmp.cmp(tiny_text_model_dir / "tokenizer.json", tiny_model_dir / "tokenizer.json",
                       shallow=False)
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 1
