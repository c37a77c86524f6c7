"""SkeletonLLM stages: config checks, recipes, the in-process loop, MC overfitting, launch path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from posrft.skeleton.__main__ import parse
from posrft.skeleton.config import SkeletonConfig

RECIPES = sorted(Path("recipes/skeleton").glob("*.yaml"))


@pytest.fixture(scope="module")
def action_dir(tmp_path_factory):
    from posrft.data.actions import build_action_dataset, save_action_dataset

    out = tmp_path_factory.mktemp("actions") / "data"
    save_action_dataset(build_action_dataset(5, formats=("smpl24", "ntu25"), num_frames=24, seed=0,
                                             val_fraction=0.2), out)
    return out


def test_recipes_parse_into_the_four_stages():
    stages = {}
    for recipe in RECIPES:
        cfg = parse(["--config", str(recipe)])
        stages[cfg.stage] = cfg
        assert cfg.trainer == "skeleton" and cfg.output_dir.startswith("runs/skeleton/")
    assert set(stages) == {"warmup", "discft", "crdistill", "refine"}
    assert stages["refine"].parts == {"projector", "lora"}  # renderer frozen in refinement
    assert stages["crdistill"].teacher_spec == {"kind": "kinematic"}
    assert {c.class_split for c in stages.values()} == {"novel"}
    assert all(c.eval_unseen_splits == ["novel/mirror"] for c in stages.values())
    cfg = parse(["--config", str(RECIPES[0]), "--num_render_frames", "3"])
    assert cfg.num_render_frames == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"stage": "pretrain"}, "stage"),
    ({"train_parts": "lora"}, "train_parts"),
    ({"teacher": "{not json"}, "teacher"),
    ({"teacher": '{"model": "x"}'}, "teacher"),
    ({"num_choices": 1}, "num_choices"),
    ({"class_split": "10/10"}, "class_split"),
    ({"cross_format": "smpl24"}, "cross_format"),
    ({"skeleton_format": "kinect"}, "skeleton_format"),
    ({"train_parts": "renderer", "renderer_learnable": False}, "nothing trains"),
    ({"use_peft": True}, "use_peft"),
    ({"freeze_vision_tower": False}, "freeze_vision_tower"),
    ({"caption_fraction": 1.5}, "caption_fraction"),
    ({"class_split": "novel", "eval_unseen_splits": ["16/4"]}, "eval_unseen_splits.*other seen"),
    ({"eval_unseen_splits": ["nope"]}, "eval_unseen_splits"),
    ({"vision_size": 0}, "vision_size"),
    ({"token_pool": 0}, "token_pool"),
    ({"align_projector_steps": -1}, "align_projector_steps"),
    ({"align_learning_rate": 0}, "align_learning_rate"),
])  # fmt: skip
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SkeletonConfig(**kwargs)


def test_bad_clips_in_the_dataset_name_split_and_row(tmp_path, action_dir):
    from datasets import load_from_disk

    from posrft.skeleton.data import load_action_data

    def poison(row, idx):
        if idx == 2:
            row["joints"] = [[[float("nan")] * 3 for _ in frame] for frame in row["joints"]]
        return row

    ds = load_from_disk(str(action_dir))
    ds["train"] = ds["train"].map(poison, with_indices=True)
    ds.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"train.*row 2.*NaN"):
        load_action_data(str(tmp_path / "bad"), formats=["smpl24"], class_split="16/4",
                         clips_per_class=5, num_frames=24, seed=0)


def _cfg(tiny, action_dir, out, **kw):
    base = dict(model_name_or_path=str(tiny), dataset_path=str(action_dir), output_dir=str(out),
                max_steps=2, per_device_train_batch_size=2, num_render_frames=2, report_to=["none"],
                eval_at_end=False)  # fmt: skip
    return SkeletonConfig(**{**base, **kw})


def test_stages_chain_in_process(tmp_path, tiny_model_dir, action_dir):
    from posrft.skeleton.model import SkeletonLLM
    from posrft.skeleton.train import run_skeleton

    warm = run_skeleton(_cfg(tiny_model_dir, action_dir, tmp_path / "w", eval_at_end=True))
    info = json.loads((tmp_path / "w" / "eval.json").read_text())
    assert 0.0 <= info["eval"]["unseen_top1"] <= 1.0 and info["eval"]["chance"]["unseen"] == 0.25
    assert "cross_format_top1" in info["eval"]
    disc = run_skeleton(_cfg(warm, action_dir, tmp_path / "d", stage="discft",
                             negative_source="confusion", negative_topk=2))
    negs = json.loads((tmp_path / "d" / "eval.json").read_text())["questions"]["negatives"]
    assert len(negs) == 16 and all(len(v) == 2 and k not in v for k, v in negs.items())
    distill = run_skeleton(_cfg(disc, action_dir, tmp_path / "c", stage="crdistill"))
    info = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert info["questions"]["skipped"] == 0
    cache = [json.loads(x) for x in open(tmp_path / "c" / "rationales.jsonl")]
    assert cache and all("Label:" in json.dumps(r) for r in cache)
    refined = run_skeleton(_cfg(distill, action_dir, tmp_path / "r", stage="refine"))
    before = SkeletonLLM.from_pretrained(distill).renderer.state_dict()
    after = SkeletonLLM.from_pretrained(refined).renderer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # renderer frozen in refine
    log = [json.loads(x) for x in open(tmp_path / "r" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss/text"]) for r in log)


def test_learned_renderer_lets_the_model_tell_two_classes_apart(tiny_model_dir):
    """Overfit 2 classes x 2 clips (answer = class name): with the renderer learning, MC top-1
    by option likelihood reaches 1.0; with it frozen, the same budget stays at chance (the
    tiny model's random vision tower cannot separate the default renders in time)."""
    from posrft.data.actions import make_clip
    from posrft.skeleton.evaluate import mc_accuracy
    from posrft.skeleton.inputs import encode_targets
    from posrft.skeleton.model import RendererSettings, SkeletonLLM
    from posrft.skeleton.questions import NAME_PROMPT

    classes = ["squat", "raise both arms"]
    labels = classes * 2
    x = torch.from_numpy(np.stack([make_clip(y, num_frames=24, seed=i) for i, y in enumerate(labels)]))
    top1 = {}
    for renderer_lr in (5e-2, 0.0):
        torch.manual_seed(0)
        model = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=2))
        model.set_train_parts({"renderer", "projector", "lora"})
        groups = [{"params": model.model_parameters(), "lr": 2e-3}]
        if renderer_lr:
            groups.append({"params": model.renderer_parameters(), "lr": renderer_lr})
        opt = torch.optim.AdamW(groups)
        model.train()
        model.renderer.eval()  # segment-middle frames: the same 4 pictures every step
        enc = encode_targets(model.processor, [NAME_PROMPT] * 4, labels, 2, 16, 16)
        for _ in range(60):
            total, count = model(x, enc.input_ids, enc.attention_mask, enc.target_mask)
            opt.zero_grad()
            (-(total / count).mean()).backward()
            opt.step()
        top1[renderer_lr] = mc_accuracy(model, x.numpy(), labels, classes, seed=1)["top1"]
    assert top1[5e-2] == 1.0
    assert top1[0.0] == 0.5


def test_option_scores_equal_an_independent_per_option_forward(tiny_model_dir):
    """score_options (all options batched, right-padded, one render per clip) equals the mean
    log-prob of each option + EOS from a separate unpadded forward per option."""
    from posrft.data.actions import make_clip
    from posrft.skeleton.evaluate import score_options
    from posrft.skeleton.inputs import encode_prompt_ids
    from posrft.skeleton.model import RendererSettings, SkeletonLLM
    from posrft.skeleton.questions import mc_prompt

    model = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=2)).eval()
    opts = [["squat", "raise both arms", "bow"], ["kick left leg", "bow", "squat"]]
    x = np.stack([make_clip("squat", num_frames=24, seed=0), make_clip("bow", num_frames=24, seed=1)])
    got = score_options(model, x, opts)
    tok = model.tokenizer
    with torch.no_grad():
        pix = model.pixels(torch.from_numpy(x))
        for b in range(2):
            prompt = encode_prompt_ids(model.processor, [mc_prompt(opts[b])], 2, 16)[0]
            for k, o in enumerate(opts[b]):
                answer = tok(o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids = torch.tensor([prompt + answer])
                logits = model.lm(input_ids=ids, pixel_values=pix[b]).logits[0].double()
                logp = torch.log_softmax(logits, -1)
                pos = range(len(prompt) - 1, len(prompt) + len(answer) - 1)
                want = np.mean([logp[p, ids[0, p + 1]].item() for p in pos])
                assert got[b][k] == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_posrft_train_warmup_recipe_through_the_launch_path(tmp_path, tiny_model_dir, action_dir):
    from posrft.launch import launch

    out = tmp_path / "run"
    recipe = tmp_path / "warmup.yaml"
    spec = yaml.safe_load(open("recipes/skeleton/warmup.yaml"))
    spec.update({"model_name_or_path": str(tiny_model_dir), "dataset_path": str(action_dir),
                 "output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 2,
                 "num_render_frames": 2, "save_steps": 2, "eval_at_end": False, "logging_steps": 1,
                 "vision_size": None})  # the tiny CLIP reads 56 px only  # fmt: skip
    recipe.write_text(yaml.safe_dump(spec))
    assert launch(recipe, accelerate_config="recipes/accelerate/zero2.yaml") == 0
    log = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2]
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert (out / "final" / "renderer.safetensors").is_file()


def test_a_teacher_endpoint_that_does_not_answer_fails_clearly(tmp_path, tiny_model_dir, action_dir):
    import socket

    from posrft.skeleton.teachers import TeacherError
    from posrft.skeleton.train import run_skeleton

    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = json.dumps({"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                          "model": "m", "timeout_s": 1, "max_retries": 0})
    cfg = _cfg(tiny_model_dir, action_dir, tmp_path / "c", stage="crdistill", teacher=teacher)
    with pytest.raises(TeacherError, match=f"127.0.0.1:{port}|connect|refused"):
        run_skeleton(cfg)


def test_parameter_groups_give_the_projector_its_own_rate(tiny_model_dir):
    """renderer at renderer_learning_rate, projector at projector_learning_rate, LoRA (and the
    rest) at learning_rate; together exactly the trainable parameters, each once."""
    from posrft.skeleton.model import RendererSettings, SkeletonLLM
    from posrft.skeleton.train import parameter_groups

    model = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=2))
    model.set_train_parts({"renderer", "projector", "lora"})
    cfg = SkeletonConfig(model_name_or_path="m", output_dir="o", learning_rate=1e-3,
                         renderer_learning_rate=5e-2, projector_learning_rate=1e-4)
    groups = parameter_groups(cfg, model)
    assert [g["lr"] for g in groups] == [5e-2, 1e-3, 1e-4]
    names = {id(p): n for n, p in model.named_parameters()}
    proj = {names[id(p)] for p in groups[2]["params"]}
    assert proj and all("multi_modal_projector" in n for n in proj)
    assert not any("multi_modal_projector" in names[id(p)] for p in groups[1]["params"])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in model.parameters())
    single = parameter_groups(SkeletonConfig(model_name_or_path="m", output_dir="o"), model)
    assert len(single) == 2  # no projector rate: projector and LoRA share learning_rate


def test_warmup_standardizes_the_frame_tokens_once(tmp_path, tiny_model_dir, action_dir):
    """standardize_image_tokens: after the first stage (lr ~0), the frame tokens of the clips it
    fitted on have zero channel means, the flag is saved with the renderer settings, and a
    second stage keeps the projector as it was (no refit)."""
    from posrft.policy.image_tokens import projector_module_names
    from posrft.skeleton.data import load_action_data
    from posrft.skeleton.model import SkeletonLLM
    from posrft.skeleton.train import run_skeleton

    kw = dict(learning_rate=1e-12, renderer_learning_rate=1e-12, standardize_image_tokens=True, max_steps=1)
    warm = run_skeleton(_cfg(tiny_model_dir, action_dir, tmp_path / "w", **kw))
    model = SkeletonLLM.from_pretrained(warm)
    assert model.settings.image_tokens_standardized
    cfg = _cfg(tiny_model_dir, action_dir, tmp_path / "w", **kw)
    data = load_action_data(cfg.dataset_path, formats=[cfg.skeleton_format], class_split=cfg.class_split,
                            clips_per_class=cfg.clips_per_class, num_frames=cfg.clip_frames,
                            seed=cfg.data_seed, val_fraction=cfg.val_fraction,
                            test_fraction=cfg.test_fraction)  # fmt: skip
    clips = data.get(cfg.dataset_train_split, cfg.skeleton_format).subset(data.seen).clips
    name = projector_module_names(model.hf_model, model.family)[0]
    seen = []
    model.hf_model.get_submodule(name).register_forward_hook(lambda _m, _a, o: seen.append(o.reshape(-1, o.shape[-1])))
    with torch.no_grad():
        model.image_tokens(model.pixels(torch.from_numpy(clips)))
    tokens = torch.cat(seen).double()
    # the fit saw 64 of these clips, rendered with the renderer's own sampling: means near 0
    # (a channel's |mean| is up to ~7 std on the tiny start)
    assert tokens.mean(0).abs().max() < 0.1 * tokens.std(0).mean()
    weights = {k: v.clone() for k, v in model.hf_model.get_submodule(name).state_dict().items()}
    again = SkeletonLLM.from_pretrained(run_skeleton(_cfg(warm, action_dir, tmp_path / "d", stage="discft",
                                                          **{**kw, "max_steps": 1})))  # fmt: skip
    after = again.hf_model.get_submodule(name).state_dict()
    assert all(torch.allclose(weights[k], after[k], atol=1e-6) for k in weights)


def test_warmup_aligns_the_projector_once_and_records_it(tmp_path, tiny_model_dir, action_dir):
    """align_projector_steps: the first stage (lr ~0 after it) exports a projector that moved
    and emits tokens of a word's norm on its training clips; the step count is saved with the
    renderer settings and a later stage given the same option does not align again."""
    from posrft.policy.image_tokens import projector_module_names, text_embedding_norm
    from posrft.skeleton.align import projector_inputs
    from posrft.skeleton.data import load_action_data
    from posrft.skeleton.model import SkeletonLLM
    from posrft.skeleton.train import run_skeleton

    kw = dict(learning_rate=1e-12, renderer_learning_rate=1e-12, align_projector_steps=3, max_steps=1)
    cfg = _cfg(tiny_model_dir, action_dir, tmp_path / "w", **kw)
    warm = run_skeleton(cfg)
    model, start = SkeletonLLM.from_pretrained(warm), SkeletonLLM.from_pretrained(tiny_model_dir)
    assert model.settings.projector_aligned_steps == 3
    name = projector_module_names(model.hf_model, model.family)[0]
    weights = {k: v.clone() for k, v in model.hf_model.get_submodule(name).state_dict().items()}
    old = start.hf_model.get_submodule(name).state_dict()
    assert not any(torch.equal(weights[k], old[k]) for k in weights if k.endswith("weight"))
    data = load_action_data(cfg.dataset_path, formats=[cfg.skeleton_format], class_split=cfg.class_split,
                            clips_per_class=cfg.clips_per_class, num_frames=cfg.clip_frames,
                            seed=cfg.data_seed)  # fmt: skip
    clips = data.get(cfg.dataset_train_split, cfg.skeleton_format).subset(data.seen).clips
    with torch.no_grad():
        tokens = model.hf_model.get_submodule(name)(projector_inputs(model, clips))
    norm = tokens.reshape(-1, tokens.shape[-1]).norm(dim=-1).mean().item()
    assert norm == pytest.approx(text_embedding_norm(model.hf_model), rel=0.02)
    again = SkeletonLLM.from_pretrained(run_skeleton(_cfg(warm, action_dir, tmp_path / "d", stage="discft",
                                                          **kw)))  # fmt: skip
    after = again.hf_model.get_submodule(name).state_dict()
    assert all(torch.allclose(weights[k], after[k], atol=1e-6) for k in weights)
