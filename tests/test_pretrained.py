"""Pretrained starts: conversions against their originals, the policy folders, LoRA targets.

The bases convert once into ``$POSRFT_CACHE/pretrained`` (the first run pays ~30 s, later runs
reuse it); the two policy folders are built once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.policy.model import PosePolicy
from posrft.policy.pretrained import dinov2_folder, init_pretrained, smollm2_folder

PROMPT = [{"role": "user",
           "content": [{"type": "text", "text": "Generate the pose: a person sitting."}]}]
IMAGE_PROMPT = [{"role": "user",
                 "content": [{"type": "image"}, {"type": "text", "text": "What is this pose?"}]}]


@pytest.fixture(scope="session")
def text_policy_dir(tmp_path_factory):
    return init_pretrained(tmp_path_factory.mktemp("pt") / "text", "smollm2", "none")["out"]


@pytest.fixture(scope="session")
def mm_policy_dir(tmp_path_factory):
    """The default composition: 224-px DINOv2 patches pixel-shuffled 4×4 → 16 LM tokens."""
    return init_pretrained(tmp_path_factory.mktemp("pt") / "mm", "smollm2", "dinov2-small")["out"]


def _picture(seed: int = 0, size: int = 80) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (size, size, 3), np.uint8))


# ---------------------------------------------------------------------------- conversions
def test_dinov2_features_equal_the_onnx_backbone():
    from transformers import Dinov2Model

    from posrft.policy.pretrained.dinov2_onnx import onnx_backbone_features

    model = Dinov2Model.from_pretrained(dinov2_folder()).eval()
    assert sum(p.numel() for p in model.parameters()) == 22_056_576
    pixels = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    reference = onnx_backbone_features(pixels)
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert ours.shape == reference.shape == (2, 257, 384)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.abs(reference).max() > 1.0  # not a trivially small output


@pytest.mark.slow  # reading the GGUF (dequantising 272 tensors) takes 15-80 s
def test_smollm2_logits_equal_the_gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posrft.policy.pretrained.smollm2_gguf import find_gguf

    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    gguf = find_gguf()
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                    dtype=torch.float32).eval()
    ids = tokenizer("A person raises both arms.", return_tensors="pt")
    with torch.no_grad():
        a, b = converted(**ids).logits, original(**ids).logits
    assert converted.config.num_hidden_layers == 30 and converted.config.hidden_size == 576
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert json.loads((folder / "source.json").read_text())["source"] == str(gguf.resolve())


# ---------------------------------------------------------------------------- policy folders
def test_text_policy_folder_loads_with_auto_classes_and_has_pose(text_policy_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_policy_dir)
    model = AutoModelForCausalLM.from_pretrained(text_policy_dir)
    pose_id = tokenizer.convert_tokens_to_ids("<POSE>")
    assert tokenizer.encode("a <POSE>.", add_special_tokens=False).count(pose_id) == 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 49153
    text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("a person sitting.<|im_end|>\n<|im_start|>assistant\n")


def test_text_policy_rollout_logprob_ratio_is_one(text_policy_dir):
    policy = PosePolicy.from_pretrained(text_policy_dir)
    batch = policy.rollout([PROMPT, "Describe a pose."], num_generations=2, max_new_tokens=6, seed=0)
    out = policy.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                  batch.completion_mask, batch.pose, temperature=1.0)
    mask = batch.completion_mask.bool()
    ratio = (out.token_logps - batch.token_logps)[mask].exp()
    assert mask.sum() > 0
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)


def test_mm_policy_folder_loads_and_expands_images(mm_policy_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(mm_policy_dir)
    model = AutoModelForImageTextToText.from_pretrained(mm_policy_dir).eval()
    assert model.config.vision_config.model_type == "dinov2"
    assert model.config.downsample_factor == 4
    text = processor.apply_chat_template(IMAGE_PROMPT, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[_picture()], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 16  # (224/14/4)²
    assert enc["pixel_values"].shape == (1, 3, 224, 224)
    assert "<POSE>" in processor.tokenizer.get_vocab()
    with torch.no_grad():
        logits = model(**enc).logits
    assert torch.isfinite(logits).all()


def _image_tokens(model, pixels):
    hidden = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True)
    return model.model.multi_modal_projector(hidden.hidden_states[-1][:, 1:])


def test_mm_projector_matches_text_embedding_scale_and_starts_as_average(mm_policy_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(mm_policy_dir)
    model = AutoModelForImageTextToText.from_pretrained(mm_policy_dir).eval()
    grey = Image.new("RGB", (224, 224), (128, 128, 128))
    pixels = processor.image_processor(images=[grey], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = _image_tokens(model, pixels)
    text_rms = model.get_input_embeddings().weight.pow(2).mean().sqrt()
    torch.testing.assert_close(feats.pow(2).mean().sqrt(), text_rms, rtol=1e-3, atol=0)
    # the projector's first layer sees the block mean: permuting patches inside each 4×4 block
    # of the 16×16 grid leaves its output unchanged, moving a patch across blocks does not
    projector = model.model.multi_modal_projector
    x = torch.randn(1, 16, 16, 384)
    inside = x.reshape(1, 4, 4, 4, 4, 384).flip(2).flip(4).reshape(1, 256, 384)
    across = x.roll(1, dims=1).reshape(1, 256, 384)
    with torch.no_grad():
        first = projector.linear_1(projector.pixel_shuffle(x.reshape(1, 256, 384)))
        same = projector.linear_1(projector.pixel_shuffle(inside))
        other = projector.linear_1(projector.pixel_shuffle(across))
    torch.testing.assert_close(same, first, rtol=0, atol=1e-5)
    assert (other - first).abs().max() > 1e-2


def test_image_token_norm_text_pins_a_composed_start_at_the_embedding_norm(mm_policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    default = json.loads((Path(mm_policy_dir) / "posrft_config.json").read_text())
    assert default["image_token_norm"] is None
    base = AutoModelForCausalLM.from_pretrained(smollm2_folder())
    expected = float(base.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    pinned = init_pretrained(tmp_path / "pinned", "smollm2", "dinov2-small",
                             image_token_norm="text")["out"]
    config = json.loads((Path(pinned) / "posrft_config.json").read_text())
    assert config["image_token_norm"] == pytest.approx(expected, abs=1e-4)
    policy = PosePolicy.from_pretrained(pinned)
    seen = []
    projector = policy.model.model.multi_modal_projector
    hook = projector.register_forward_hook(lambda _m, _a, out: seen.append(out))
    text = policy.processing.apply_chat_template(IMAGE_PROMPT, add_generation_prompt=True,
                                                 tokenize=False)
    enc = policy.processing(text=[text], images=[_picture(3)], return_tensors="pt")
    with torch.no_grad():
        policy.model(**enc)
    hook.remove()
    norms = seen[0].norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, config["image_token_norm"]))


def test_image_token_norm_choices(tiny_model_dir, tmp_path):
    # an image-text model's trained projector keeps its scale under "text"
    kept = init_pretrained(tmp_path / "kept", tiny_model_dir, "none", image_token_norm="text")
    assert kept["image_token_norm"] is None
    summary = init_pretrained(tmp_path / "set", tiny_model_dir, "none", image_token_norm=1.5)
    assert summary["image_token_norm"] == 1.5
    assert PosePolicy.from_pretrained(tmp_path / "set").config.image_token_norm == 1.5
    with pytest.raises(ValueError, match="text-only start has no image tokens"):
        init_pretrained(tmp_path / "t", "smollm2", "none", image_token_norm=2.0)
    with pytest.raises(ValueError, match="image_token_norm: expected 'text'"):
        init_pretrained(tmp_path / "t", "smollm2", "dinov2-small", image_token_norm="auto")


def test_plain_llava_with_one_token_per_patch(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    summary = init_pretrained(tmp_path / "llava", "smollm2", "dinov2-small", image_size=112, pool=1)
    assert summary["image_tokens"] == 64
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "llava").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    text = processor.apply_chat_template(IMAGE_PROMPT, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=[_picture()], return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 64
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()
    with pytest.raises(ValueError, match="multiple of patch size"):
        init_pretrained(tmp_path / "bad", "smollm2", "dinov2-small", image_size=224, pool=3)


def test_mm_policy_rollout_logprob_ratio_is_one(mm_policy_dir):
    policy = PosePolicy.from_pretrained(mm_policy_dir)
    assert policy.multimodal and policy.suppressed_token_ids
    batch = policy.rollout([IMAGE_PROMPT, "What pose is shown?"], [_picture(1), _picture(2)],
                           num_generations=2, max_new_tokens=5, seed=0)
    out = policy.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                  batch.completion_mask, batch.pose,
                                  pixel_values=batch.pixel_values)
    mask = batch.completion_mask.bool()
    ratio = (out.token_logps - batch.token_logps)[mask].exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pose_logp, batch.pose_logp, rtol=0, atol=1e-4)


def test_lora_targets_only_the_language_model(mm_policy_dir):
    from posrft.policy.lora import apply_lora, trainable_parameter_names

    policy = apply_lora(PosePolicy.from_pretrained(mm_policy_dir), r=4)
    names = trainable_parameter_names(policy)
    rows = [n for n in names if ".trainable_tokens_delta." in n]
    assert names and all(("language_model" in n and "lora_" in n) or "multi_modal_projector" in n
                         or n.startswith("pose_head.") or n in rows for n in names)
    # SmolLM2 ties its LM head to the embeddings: one <POSE> row, which the head shares
    assert rows == ["model.base_model.model.model.language_model.embed_tokens.token_adapter."
                    "trainable_tokens_delta.default"]
    head = policy.hf_model.get_output_embeddings()
    assert head.token_adapter.tied_adapter is policy.hf_model.get_input_embeddings().token_adapter
    assert not any("vision_tower" in n for n in names)
    assert not any("lora_" in n for n, _ in policy.hf_model.model.vision_tower.named_parameters())
    assert any("multi_modal_projector.modules_to_save" in n for n in names)
    lora_layers = {n.split(".layers.")[1].split(".")[0] for n in names if "lora_A" in n}
    assert len(lora_layers) == 30


# ---------------------------------------------------------------------------- one code path
def test_local_folder_gets_tokens_template_and_head(tmp_path):
    """``--text PATH``: any local causal LM goes down the same path (here a 2-layer Llama with
    SmolLM2's tokenizer), gets ``<POSE>``, the multi-part ChatML template and a pose head."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from posrft.cli import main

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")
    assert main(["model", "init-pretrained", str(tmp_path / "out"), "--text", str(tmp_path / "small")]) == 0
    policy = PosePolicy.from_pretrained(tmp_path / "out")
    assert policy.pose_token_id == len(tokenizer)  # one new row
    assert (tmp_path / "out" / "pose_head.safetensors").is_file()
    text = policy.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert "a person sitting." in text and text.startswith("<|im_start|>system")


def test_image_text_folder_only_gets_the_head(tiny_model_dir, tmp_path):
    summary = init_pretrained(tmp_path / "out", tiny_model_dir, "none")
    assert summary["multimodal"]
    policy = PosePolicy.from_pretrained(tmp_path / "out")
    base = PosePolicy.from_pretrained(tiny_model_dir)
    assert len(policy.tokenizer) == len(base.tokenizer)
    with pytest.raises(ValueError, match="already an image-text model"):
        init_pretrained(tmp_path / "out2", tiny_model_dir, "dinov2-small")


def test_bad_sources_name_the_flag(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        init_pretrained(tmp_path / "taken", "smollm2")
    with pytest.raises(FileNotFoundError, match="--text"):
        init_pretrained(tmp_path / "o", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="--vision"):
        init_pretrained(tmp_path / "o", "smollm2", tmp_path / "missing")


def test_cli_builds_a_start_whose_head_reads_the_image(tiny_model_dir, tmp_path):
    from posrft.cli import main

    assert main(["model", "init-pretrained", str(tmp_path / "out"), "--text", str(tiny_model_dir),
                 "--pose-head-reads-image"]) == 0
    policy = PosePolicy.from_pretrained(tmp_path / "out")
    assert policy.config.head_reads_image and policy.pose_head.reads_image
    with pytest.raises(ValueError, match="text-only"):
        init_pretrained(tmp_path / "t", "smollm2", "none", head_reads_image=True)
