"""Every registered MLLM family through the policy, on tiny random models built in code.

Per family: build (no ``<POSE>``, like a released checkpoint) → add ``<POSE>`` → rollout G with
images of different sizes → the learner's log-probs equal the sampling ones (ratio 1) after
selection, splitting, trimming, shard concatenation and pickling, and match ``generate``'s own
scores → one HyGRPO step (LoRA, reference = adapter disabled) changes exactly LoRA B, projector
and pose head, with KL 0 at step 0 → save/load (LoRA and merged) round trip → DrAction frames as
one multi-image prompt. The 2-process / Ray path for Qwen2.5-VL is in
test_families_distributed.py.
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from posrft.policy.families import FAMILIES, family_for_model_type, get_family
from posrft.policy.logprobs import mask_after_eos
from posrft.policy.mm_inputs import InputSpec, Layout, MultimodalInputs
from posrft.policy.model import PosePolicy
from posrft.policy.tiny_families import TINY_FAMILIES, build_tiny_family

ALL = (*TINY_FAMILIES, "llava")


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, tiny_model_dir):
    """name → model folder: built without <POSE>, then <POSE> added (the user's path)."""
    from posrft.policy.pose_token import add_pose_token_to_folder

    root = tmp_path_factory.mktemp("families")
    dirs = {"llava": tiny_model_dir}

    def get(name):
        if name not in dirs:
            build_tiny_family(name, root / f"{name}_raw", seed=0, pose_token=False)
            add_pose_token_to_folder(root / f"{name}_raw", root / name)
            dirs[name] = root / name
        return dirs[name]

    return get


def _images(seed, sizes):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((s, s, 3)) * 255).astype("uint8")) for s in sizes]


def _prompts(family):
    """Three prompts with 2 images (different sizes), 1 large image, and none (an image for
    families that need one)."""
    last = _images(3, [56]) if family.image_required else None
    return ["Describe the pose.", [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What is the person doing?"}]}], "x"], \
        [_images(1, [56, 40]), _images(2, [84]), last]


def _logps(policy, b):
    return policy.forward_logprobs(b.prompt_ids, b.prompt_mask, b.completion_ids,
                                   b.completion_mask, mm_inputs=b.mm_inputs).token_logps


def _masked_max(a, b, mask):
    return float(((a - b) * mask).abs().max().detach())


# ----------------------------------------------------------------------------- registry
def test_registry_covers_the_families_of_this_transformers_version():
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    for family in FAMILIES.values():
        for model_type in family.model_types:
            assert model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, model_type
            assert family_for_model_type(model_type, True) is family
        if family.processor:
            assert hasattr(transformers, family.processor)
    assert family_for_model_type("qwen2", False).name == "text"
    with pytest.raises(ValueError, match="'mllama' is not in posrft's family registry"):
        family_for_model_type("mllama", True)


@pytest.mark.parametrize("name", [f.name for f in FAMILIES.values() if f.image_only])
def test_image_only_processors_keep_every_argument_but_the_video_processor(name):
    family = get_family(name)
    cls = family.processor_class()
    base = cls.__mro__[1]
    want = [p for p in inspect.signature(base.__init__).parameters if p != "video_processor"]
    assert list(inspect.signature(cls.__init__).parameters) == want
    assert cls.get_attributes() == ["image_processor", "tokenizer"]
    assert cls.__name__ == base.__name__  # saved folders name the real class


def test_a_missing_processor_dependency_names_the_family(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "num2words" else real(m, *a))
    with pytest.raises(ImportError, match=r"SmolVLM.*\['num2words'\]"):
        get_family("smolvlm").check_requirements()


# ----------------------------------------------------------------------------- MultimodalInputs
def _toy_qwen_inputs():
    """3 samples: 2 images (grids 1x2x2, 1x4x2), none, 1 image (1x2x4); patches numbered."""
    grid = torch.tensor([[1, 2, 2], [1, 4, 2], [1, 2, 4]])
    patches = torch.arange(4 + 8 + 8, dtype=torch.float32)[:, None].repeat(1, 3)
    types = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
    specs = get_family("qwen2_5_vl").inputs
    return MultimodalInputs(3, {"pixel_values": patches, "image_grid_thw": grid, "mm_token_type_ids": types},
                            dict(specs), {"pixel_values": torch.tensor([12, 0, 8]),
                                          "image_grid_thw": torch.tensor([2, 0, 1])})


def test_selecting_flat_patches_follows_the_image_grids():
    mm = _toy_qwen_inputs()
    sub = mm.select([2, 0, 2])
    # independent: sample 2 owns patches 12..19, sample 0 patches 0..11
    want = torch.cat([torch.arange(12, 20), torch.arange(0, 12), torch.arange(12, 20)]).float()
    assert torch.equal(sub.tensors["pixel_values"][:, 0], want)
    assert sub.tensors["image_grid_thw"].tolist() == [[1, 2, 4], [1, 2, 2], [1, 4, 2], [1, 2, 4]]
    assert sub.rows["pixel_values"].tolist() == [8, 12, 8]
    assert sub.tensors["mm_token_type_ids"].tolist() == [[0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="do not match image_grid_thw"):
        MultimodalInputs(3, dict(mm.tensors), dict(mm.specs),
                         {"pixel_values": torch.tensor([8, 4, 8]), "image_grid_thw": mm.rows["image_grid_thw"]})


def test_concat_pads_prompt_columns_left_and_trailing_dims_with_zeros():
    specs = {"pixel_values": InputSpec(Layout.SAMPLE), "token_type_ids": InputSpec(Layout.PROMPT, 1)}
    a = MultimodalInputs(1, {"pixel_values": torch.ones(1, 2, 3), "token_type_ids": torch.tensor([[1, 1]])}, specs)
    b = MultimodalInputs(2, {"token_type_ids": torch.tensor([[2, 2, 2], [3, 3, 3]])}, specs)
    c = MultimodalInputs.concat([a, b], prompt_width=4)
    assert c.tensors["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 2, 2, 2], [0, 3, 3, 3]]
    assert c.tensors["pixel_values"].shape == (3, 2, 3) and c.tensors["pixel_values"][1:].abs().sum() == 0
    assert c.trim_prompt(1).tensors["token_type_ids"].shape == (3, 3)
    # completion tokens take the family's value (PaliGemma's suffix is 1)
    kw = c.model_kwargs(completion_tokens=2)
    assert kw["token_type_ids"][:, -2:].tolist() == [[1, 1]] * 3


def test_selection_equals_encoding_the_selected_prompts(family_dirs):
    policy = PosePolicy.from_pretrained(family_dirs("qwen2_5_vl"))
    prompts, images = _prompts(policy.family)
    full = policy.encode(prompts, images)
    alone = policy.encode([prompts[2], prompts[0]], [images[2], images[0]])
    sub = full.mm_inputs.select([2, 0])
    for key, t in alone.mm_inputs.tensors.items():
        got = sub.tensors[key]
        if alone.mm_inputs.specs[key].layout is Layout.PROMPT:
            got = got[:, got.shape[1] - t.shape[1]:]
        assert torch.equal(got, t), key


# ----------------------------------------------------------------------------- per family
@pytest.mark.parametrize("name", ALL)
def test_pose_token_is_added_with_a_mean_embedding(family_dirs, name):
    if name == "llava":
        pytest.skip("the LLaVA tiny model is built with <POSE>")
    raw = family_dirs(name).parent / f"{name}_raw"
    with pytest.raises(ValueError, match="has no '<POSE>' token"):
        PosePolicy.from_pretrained(raw)
    from posrft.policy.model import load_hf

    before, _ = load_hf(raw)
    policy = PosePolicy.from_pretrained(family_dirs(name))
    assert policy.family.name == name
    pid = policy.pose_token_id
    emb = policy.hf_model.get_input_embeddings().weight
    torch.testing.assert_close(emb[pid], before.get_input_embeddings().weight[:pid].mean(0))
    assert policy.tokenizer.encode("a <POSE> b", add_special_tokens=False).count(pid) == 1
    saved = json.loads((family_dirs(name) / "processor_config.json").read_text())
    assert saved["processor_class"] == get_family(name).processor
    assert not hasattr(policy.processing, "video_processor")


@pytest.mark.parametrize("name", ALL)
def test_rollout_ratio_is_one_through_selection_split_concat_and_transport(family_dirs, name):
    from posrft.rollout.concat import concat_rollouts
    from posrft.rollout.worker import batch_to_cpu
    from posrft.train.experience import Experience

    policy = PosePolicy.from_pretrained(family_dirs(name))
    prompts, images = _prompts(policy.family)
    g = 2
    batch = policy.rollout(prompts, images, num_generations=g, max_new_tokens=5, seed=0)
    counts = [len(im) if im else 0 for im in images]
    assert batch.image_counts.tolist() == [c for c in counts for _ in range(g)]
    for key, spec in batch.mm_inputs.specs.items():
        if spec.layout is Layout.PATCH:  # flat patches: rows per sample = Σ t·h·w of its images
            grid = batch.mm_inputs.tensors["image_grid_thw"].prod(-1).split(batch.image_counts.tolist())
            assert batch.mm_inputs.rows[key].tolist() == [int(x.sum()) for x in grid]
    # learner: shards, micro-batches (padding trimmed), shuffled selection with repeats
    n = len(batch)
    exp = Experience.from_rollout(batch, torch.randn(n), torch.randn(n), torch.zeros(n, dtype=torch.long))
    for shard in exp.split(2):
        for mb in shard.chunks(2):
            new = policy.forward_logprobs(mb.prompt_ids, mb.prompt_mask, mb.completion_ids,
                                          mb.completion_mask, mm_inputs=mb.mm_inputs).token_logps
            assert _masked_max(new, mb.old_token_logps, mb.completion_mask) < 1e-5
    sub = batch.select([5, 0, 3, 0])
    assert _masked_max(_logps(policy, sub), sub.token_logps, sub.completion_mask) < 1e-5
    # two "workers": shards sampled apart, moved to CPU, pickled (Ray), concatenated
    shards = [policy.rollout(prompts[:1], images[:1], num_generations=g, max_new_tokens=5, seed=1),
              policy.rollout(prompts[1:], images[1:], num_generations=g, max_new_tokens=7, seed=2)]
    shards = [pickle.loads(pickle.dumps(batch_to_cpu(s))) for s in shards]
    joined = concat_rollouts(shards, policy.pad_token_id)
    assert joined.image_counts.tolist() == batch.image_counts.tolist()
    assert _masked_max(_logps(policy, joined), joined.token_logps, joined.completion_mask) < 1e-5


@pytest.mark.parametrize("name", ALL)
def test_learner_logprobs_match_generate_on_a_left_padded_batch(family_dirs, name):
    """``generate``'s own scores (what was sampled from) = forward_logprobs: position ids, token
    types and pixels reach both passes the same way."""
    policy = PosePolicy.from_pretrained(family_dirs(name))
    prompts, images = _prompts(policy.family)
    enc = policy.encode(prompts[:2], images[:2])
    assert enc.attention_mask[:, 0].min() == 0  # left padding present
    out = policy.hf_model.generate(
        input_ids=enc.input_ids, attention_mask=enc.attention_mask, **policy.model_inputs(enc.mm_inputs, None),
        max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True,
        suppress_tokens=policy.suppressed_token_ids, pad_token_id=policy.pad_token_id,
        eos_token_id=policy.eos_token_ids)
    comp, mask = mask_after_eos(out.sequences[:, enc.input_ids.shape[1]:],
                                torch.tensor(policy.eos_token_ids), policy.pad_token_id)
    scores = torch.stack(out.scores, 1).float().log_softmax(-1).gather(-1, comp[..., None])[..., 0]
    mine = policy.forward_logprobs(enc.input_ids, enc.attention_mask, comp, mask,
                                   mm_inputs=enc.mm_inputs).token_logps
    assert _masked_max(mine, scores, mask) < 1e-4


@pytest.mark.parametrize("name", ALL)
def test_hygrpo_lora_step_reference_and_round_trip(family_dirs, name, nudge_logits, tmp_path):
    from posrft.policy.lora import apply_lora, merge_lora, trainable_parameter_names
    from posrft.train.accelerator import make_accelerator
    from posrft.train.config import HyGRPOConfig
    from posrft.train.experience import Experience
    from posrft.train.hygrpo import _reference, _update
    from posrft.train.loop import Learner

    policy = apply_lora(PosePolicy.from_pretrained(family_dirs(name)), r=4, alpha=8)
    nudge_logits(policy, {"<POSE>": 30.0})  # so that poses are sampled and the head learns
    prompts, images = _prompts(policy.family)
    g = 2
    batch = policy.rollout(prompts, images, num_generations=g, max_new_tokens=4, seed=0)
    assert batch.pose_valid.any()
    n = len(batch)
    gen = torch.Generator().manual_seed(0)
    exp = Experience.from_rollout(batch, torch.randn(n, generator=gen), torch.randn(n, generator=gen),
                                  torch.zeros(n, dtype=torch.long))
    cfg = HyGRPOConfig(output_dir=str(tmp_path / "run"), report_to=["none"], num_generations=g,
                       per_device_train_batch_size=n, learning_rate=1e-2, beta=0.04, pose_beta=0.04)
    learner = Learner(cfg, make_accelerator(cfg), policy, run_name="t", total_steps=1)
    exp = _reference(learner, None, exp, cfg)
    # step 0: the disabled adapter (original projector, reference head) is the policy itself
    assert _masked_max(exp.ref_token_logps, exp.old_token_logps, exp.completion_mask) < 1e-5
    torch.testing.assert_close(exp.ref_pose_mean, exp.old_pose_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(exp.ref_pose_log_std, exp.old_pose_log_std, atol=1e-6, rtol=0)

    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    trainable = set(trainable_parameter_names(policy))
    metrics = _update(learner, exp, cfg)
    assert abs(metrics["kl/text"]) < 1e-6 and abs(metrics["kl/pose"]) < 1e-6
    changed = {k for k, v in policy.named_parameters() if not torch.equal(v, before[k])}
    projector = {k for k in trainable if ".modules_to_save." in k}
    assert projector and all(policy.family.is_projector(k) for k in projector)
    lora_b = {k for k in trainable if "lora_B" in k}
    head = {k for k in trainable if k.startswith("pose_head.")}
    rows = {k for k in trainable if ".trainable_tokens_delta." in k}  # <POSE>'s rows
    assert rows & changed  # its LM-head row (or, tied, the shared row) learns
    # lora_A has no gradient while B = 0; everything else that trains moved, nothing else did
    # (the input row of <POSE> moves only when a completion goes on after <POSE>)
    assert changed - rows == lora_b | projector | head
    assert trainable == changed | {k for k in trainable if "lora_A" in k} | rows
    assert not any(policy.family.is_vision(k) for k in trainable)  # no LoRA in the vision tower

    # save / load: the LoRA checkpoint and the merged one (what rollout workers load)
    probe = batch.select([0, n - 1])
    want = _logps(policy, probe)
    policy.save_pretrained(tmp_path / "lora")
    again = PosePolicy.from_pretrained(tmp_path / "lora")
    nudge_logits(again, {"<POSE>": 30.0})
    torch.testing.assert_close(_logps(again, probe), want, atol=1e-5, rtol=0)
    with again.disable_adapter():
        ref = again.forward_logprobs(probe.prompt_ids, probe.prompt_mask, probe.completion_ids,
                                     probe.completion_mask, mm_inputs=probe.mm_inputs).token_logps
    sel = exp.select([0, n - 1])
    assert _masked_max(ref, sel.ref_token_logps, sel.completion_mask) < 1e-5
    merge_lora(copy.deepcopy(policy)).save_pretrained(tmp_path / "merged")
    merged = PosePolicy.from_pretrained(tmp_path / "merged")
    nudge_logits(merged, {"<POSE>": 30.0})
    torch.testing.assert_close(_logps(merged, probe), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_draction_frames_are_one_multi_image_prompt(family_dirs, name):
    """SkeletonLLM's input: T' rendered frames of one clip as the images of one prompt; every
    frame reaches the model (changing the first or the last changes the log-probs)."""
    from posrft.data.actions import make_clip
    from posrft.render import DrAction, to_pil

    frames_t = 4
    renderer = DrAction("smpl24", image_size=48, num_frames=frames_t, samples_per_bone=2).eval()
    with torch.no_grad():
        clip = torch.from_numpy(make_clip("wave right hand", num_frames=12, seed=0))
        frames = to_pil(renderer(clip[None])[0])
    policy = PosePolicy.from_pretrained(family_dirs(name))
    question = "Which action is shown in these frames?"
    batch = policy.rollout([question], [frames], num_generations=2, max_new_tokens=4, seed=0)
    assert batch.image_counts.tolist() == [frames_t, frames_t]
    base = _logps(policy, batch)
    assert _masked_max(base, batch.token_logps, batch.completion_mask) < 1e-5
    for k in (0, frames_t - 1):
        edited = list(frames)
        edited[k] = Image.fromarray(255 - np.asarray(frames[k]))
        enc = policy.encode([question] * 2, [edited] * 2)
        other = policy.forward_logprobs(enc.input_ids, enc.attention_mask, batch.completion_ids,
                                        batch.completion_mask, mm_inputs=enc.mm_inputs).token_logps
        assert _masked_max(other, base, batch.completion_mask) > 1e-4, f"frame {k} did not matter"


@pytest.mark.parametrize("name", ALL)
def test_freezing_the_vision_tower_keeps_the_projector_trainable(family_dirs, name):
    from posrft.policy.lora import freeze_vision_tower

    policy = PosePolicy.from_pretrained(family_dirs(name))
    frozen = set(freeze_vision_tower(policy))
    family = policy.family
    modules = dict(policy.hf_model.named_modules())
    towers = [m for k, m in modules.items() if any(k == v or k.endswith("." + v) for v in family.vision_modules)]
    projectors = [m for k, m in modules.items() if family.is_projector(k)]
    assert towers and projectors
    projector_ids = {id(p) for m in projectors for p in m.parameters()}
    tower_ids = {id(p) for m in towers for p in m.parameters()} - projector_ids
    named = dict(policy.named_parameters())
    assert {id(named[k]) for k in frozen} == tower_ids
    assert all(p.requires_grad for m in projectors for p in m.parameters())


# ----------------------------------------------------------------------------- family errors
def test_paligemma_needs_an_image_and_a_bos_token(family_dirs):
    policy = PosePolicy.from_pretrained(family_dirs("paligemma"))
    with pytest.raises(ValueError, match=r"prompts\[1\] has no image, but PaliGemma"):
        policy.encode(["a", "b"], [_images(0, [28]), None])
    policy.tokenizer.bos_token = None
    with pytest.raises(ValueError, match="PaliGemma.*BOS token.*tokenizer has none"):
        policy.encode(["a"], [_images(0, [28])])


def test_an_unlisted_processor_output_is_an_error_not_dropped(family_dirs):
    from dataclasses import replace

    from posrft.policy.prompts import encode_prompts

    policy = PosePolicy.from_pretrained(family_dirs("qwen2_vl"))
    family = replace(policy.family, inputs={k: v for k, v in policy.family.inputs.items()
                                            if k != "image_grid_thw"})
    with pytest.raises(ValueError, match="returned 'image_grid_thw', which the family registry does not list"):
        encode_prompts(policy.processing, ["a"], [_images(0, [56])], True, family)


def test_skeletonllm_names_a_family_its_pixel_path_does_not_support(family_dirs):
    from posrft.skeleton.model import SkeletonLLM

    with pytest.raises(ValueError, match="needs a LLaVA-style model.*Qwen2.5-VL is not supported"):
        SkeletonLLM.from_pretrained(family_dirs("qwen2_5_vl"))


@pytest.mark.parametrize("name", ALL)
def test_a_pose_head_that_reads_the_image_sees_each_prompts_image_tokens(family_dirs, name, nudge_logits):
    """``head_reads_image`` in every family: the head gets one token per image placeholder of
    the prompt, and the pose read from ``generate``'s states equals the learner's."""
    import dataclasses

    from posrft.policy.config import PosePolicyConfig

    loaded = PosePolicy.from_pretrained(family_dirs(name))
    policy = PosePolicy(loaded.model, loaded.processing,
                        dataclasses.replace(loaded.config or PosePolicyConfig(), head_reads_image=True))
    nudge_logits(policy, {"<POSE>": 9.0})
    torch.nn.init.normal_(policy.pose_head.mean_out.weight, std=0.1)  # so μ follows the input
    prompts, images = _prompts(policy.family)
    seen = []
    hook = policy.pose_head.register_forward_hook(lambda _m, args, _o: seen.append(args[2].sum(1)))
    try:
        batch = policy.rollout(prompts, images, num_generations=2, max_new_tokens=4, seed=0, score=False)
    finally:
        hook.remove()
    placeholders = (batch.prompt_ids == policy.image_token_id).sum(1)
    assert torch.equal(seen[0].cpu(), placeholders) and placeholders[0] > 0
    assert batch.pose_valid.any()
    out = policy.forward_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                  batch.completion_mask, mm_inputs=batch.mm_inputs)
    valid = batch.pose_valid
    torch.testing.assert_close(out.pose_dist.mean[valid], batch.pose_mean[valid], rtol=1e-4, atol=1e-5)
