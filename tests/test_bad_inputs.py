"""A corpus of bad inputs: each is refused up front with a message that names the cause, and
leaves nothing behind.

Most cases go through ``posrft train``'s pre-flight in this process (:func:`posrft.preflight.
preflight`, what the launcher runs before any rank starts), so the corpus costs milliseconds a
case; one test runs the real command line to show the user sees a single line, no traceback.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from posrft.preflight import PreflightError, preflight

ROOT = Path(__file__).resolve().parents[1]
ZERO2 = str(ROOT / "recipes" / "accelerate" / "zero2.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, text2pose_dir):
    """Shared, read-only inputs: a good model, a good dataset, and damaged copies of each."""
    from posrft.policy.model import PosePolicy

    root = tmp_path_factory.mktemp("bad_inputs")
    model = root / "model"  # the tiny LLaVA with its pose head saved next to it
    PosePolicy.from_pretrained(tiny_model_dir).save_pretrained(model)
    assert (model / "pose_head.safetensors").is_file()
    broken = {}
    for name in ("model.safetensors", "pose_head.safetensors"):
        d = root / f"trunc_{name.split('.')[0]}"
        shutil.copytree(model, d)
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
        broken[name] = d
    no_config = root / "no_config"
    shutil.copytree(model, no_config)
    (no_config / "config.json").unlink()
    bad_config = root / "bad_config"
    shutil.copytree(model, bad_config)
    (bad_config / "config.json").write_text('{"model_type": "llava", ')
    from datasets import Dataset, DatasetDict, load_from_disk

    dd = load_from_disk(str(text2pose_dir))
    empty = root / "empty_data"
    DatasetDict(train=dd["train"].select([]), val=dd["val"]).save_to_disk(str(empty))
    prompts_only = root / "prompts_only"
    DatasetDict(train=Dataset.from_dict({"prompt": dd["train"]["prompt"][:4]})).save_to_disk(str(prompts_only))
    body = root / "body_empty"
    body.mkdir()
    not_data = root / "not_data"
    not_data.mkdir()
    (not_data / "readme.txt").write_text("hello")
    a_file = root / "a_file"
    a_file.write_text("x")
    from datasets import Image as ImageFeature
    from datasets import List as ListFeature

    from posrft.data.synth import build_image2pose

    pictures = build_image2pose(4, 1, 1, seed=0, out_dir=None)
    raw = pictures["train"].cast_column("images", ListFeature(ImageFeature(decode=False)))
    rows = raw.to_dict()
    rows["images"][2] = [{"bytes": rows["images"][2][0]["bytes"][:60], "path": None}]  # a torn PNG
    corrupt_png = root / "corrupt_png"
    DatasetDict(train=Dataset.from_dict(rows, features=raw.features), test=raw).save_to_disk(str(corrupt_png))
    return dict(root=root, model=model, data=Path(text2pose_dir), trunc_model=broken["model.safetensors"],
                trunc_head=broken["pose_head.safetensors"], no_config=no_config, bad_config=bad_config,
                empty=empty, prompts_only=prompts_only, body=body, not_data=not_data, a_file=a_file,
                corrupt_png=corrupt_png)  # fmt: skip


def _recipe(tmp_path, world, trainer="hygrpo", text=None, **fields):
    base = {"trainer": trainer, "model_name_or_path": str(world["model"]), "dataset_path": str(world["data"]),
            "output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 4,
            "report_to": ["none"]}  # fmt: skip
    if trainer == "hygrpo":
        base.update(num_generations=4, num_rollout_workers=1, worker_num_cpus=1.0,
                    rewards=[{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}])
    if trainer == "skeleton":
        base.pop("dataset_path")
    for k, v in fields.items():
        if v is _DROP:
            base.pop(k, None)
        else:
            base[k] = v
    path = tmp_path / "recipe.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(base))
    return path


_DROP = object()


def _tree(path):
    path = Path(path)
    return sorted(str(p) for p in path.rglob("*")) if path.is_dir() else path.exists()


def _refused(tmp_path, world, overrides=(), accel=ZERO2, trainer="hygrpo", text=None, **fields):
    """Run the pre-flight on a recipe; return its message after checking it wrote nothing."""
    recipe = _recipe(tmp_path, world, trainer, text, **fields)
    out = Path(fields.get("output_dir", tmp_path / "out"))
    before = _tree(out)
    with pytest.raises(PreflightError) as info:
        preflight(recipe, list(overrides), accelerate_config=accel)
    assert _tree(out) == before  # no partial output
    return str(info.value)


def test_a_good_recipe_passes_and_the_launcher_learns_its_plan(tmp_path, world):
    plan = preflight(_recipe(tmp_path, world), ["--beta", "0.01"], accelerate_config=ZERO2)
    assert plan.cfg.beta == 0.01 and plan.module == "posrft.train" and plan.num_processes == 2
    assert any("stand-in" in n for n in plan.notes)
    assert not (tmp_path / "out").exists()  # a pre-flight writes nothing


# --------------------------------------------------------------------------- recipe and fields
RECIPE_CASES = {
    "unknown key": (dict(max_stepz=3), r"unknown key 'max_stepz' \(did you mean 'max_steps'\?\)"),
    "several unknown keys": (dict(lerning_rate=1e-3, betta=0.1),
                             r"unknown keys 'betta' \(did you mean 'beta'\?\), 'lerning_rate' \(did you "
                             r"mean 'learning_rate'\?\)"),
    "env key": (dict(env={"OMP_NUM_THREADS": "64"}), r"'env' key is not supported"),
    "unknown trainer": (dict(trainer="ppo"), r"trainer must be one of \['hygrpo', 'sft', 'skeleton'\].*'ppo'"),
    "misspelt trainer": (dict(trainer="skeletn"), r"did you mean 'skeleton'"),
    "negative save_total_limit": (dict(save_total_limit=-1), r"save_total_limit must be >= 1 or null"),
    "zero save_total_limit": (dict(save_total_limit=0), r"save_total_limit must be >= 1 or null"),
    "adam_beta1 above 1": (dict(adam_beta1=1.5), r"adam_beta1 must be in \[0, 1\), got 1.5"),
    "negative adam_beta2": (dict(adam_beta2=-0.1), r"adam_beta2 must be in \[0, 1\)"),
    "negative max_grad_norm": (dict(max_grad_norm=-1.0), r"max_grad_norm must be >= 0"),
    "negative pose_coef": (dict(pose_coef=-0.5), r"pose_coef must be >= 0"),
    "negative weight_decay": (dict(weight_decay=-0.1), r"weight_decay must be >= 0"),
    "zero learning_rate": (dict(learning_rate=0.0), r"learning_rate must be > 0"),
    "learning_rate text": (dict(learning_rate="fast"), r"recipe .*: learning_rate: invalid float value: 'fast'"),
    "bool as int": (dict(use_peft=3), r"use_peft: expected bool, got 3"),
    "misspelt choice": (dict(pose_ratio="perdim"), r"pose_ratio: expected one of .*\(did you mean 'per_dim'\?\)"),
    "unknown tracker": (dict(report_to=["tensorbord"]), r"unknown tracker 'tensorbord' \(did you mean 'tensorboard'\?\)"),
    "tracker not installed": (dict(report_to=["wandb"]), r"report_to: 'wandb' is not installed"),
    "too many worker CPUs": (dict(worker_num_cpus=64.0), r"= 64 CPUs, but this machine has \d+"),
    "zero worker CPUs": (dict(worker_num_cpus=0.0), r"worker_num_cpus must be > 0"),
    "num_generations 1": (dict(num_generations=1), r"num_generations must be >= 2"),
    "incomplete groups": (dict(per_device_train_batch_size=6), r"must be a multiple of num_generations \(4\)"),
    "warmup longer than run": (dict(warmup_steps=5), r"warmup_steps \(5\) exceeds max_steps \(2\)"),
    "lora_dropout 1": (dict(lora_dropout=1.0), r"lora_dropout must be in \[0, 1\)"),
    "ddp_timeout 0": (dict(ddp_timeout=0), r"ddp_timeout must be >= 1 second"),
    "max_steps 0": (dict(max_steps=0), r"max_steps must be >= 1"),
    "no rewards": (dict(rewards=[]), r"rewards must be a non-empty list"),
    "sigma clamp reversed": (dict(pose_sigma_min=0.2, pose_sigma_max=0.1), r"pose_sigma_min \(0.2\) must be <"),
    "fixed sigma of zero": (dict(pose_sigma="fixed", pose_sigma_value=0.0), r"pose_sigma='fixed' needs pose_sigma_value > 0"),
    "sibling groups of one": (dict(pose_advantage_group="siblings", num_pose_samples=1), r"needs num_pose_samples >= 2"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_fields_are_refused_naming_the_field(tmp_path, world, case):
    fields, match = RECIPE_CASES[case]
    assert __import__("re").search(match, _refused(tmp_path, world, **fields)), case


@pytest.mark.parametrize("text, match", [
    ("trainer: hygrpo\nmax_steps: [1,\n", r"not valid YAML at line \d+, column \d+"),
    ("- trainer: sft\n", r"must be a YAML mapping of trainer fields, got a list"),
])  # fmt: skip
def test_unreadable_recipes_name_the_file_and_the_line(tmp_path, world, text, match):
    assert __import__("re").search(match, _refused(tmp_path, world, text=text))


def test_a_missing_recipe_is_named(tmp_path):
    with pytest.raises(PreflightError, match=r"recipe '.*nope.yaml' does not exist"):
        preflight(tmp_path / "nope.yaml")


@pytest.mark.parametrize("overrides, match", [
    (["--betta", "0.1"], r"command line: unknown key 'betta' \(did you mean 'beta'\?\)"),
    (["--learning_rate", "fast"], r"command line: learning_rate: invalid float value: 'fast'"),
    (["--rewards", "not json"], r"rewards: not valid JSON"),
    (["-x"], r"unexpected argument '-x'"),
])  # fmt: skip
def test_bad_overrides_are_refused(tmp_path, world, overrides, match):
    assert __import__("re").search(match, _refused(tmp_path, world, overrides=overrides))


# --------------------------------------------------------------------------- rewards
REWARD_CASES = {
    "misspelt name": ({"func": "fromat"}, r"rewards\[0\]: unknown reward 'fromat' \(did you mean 'format'\?\)"),
    "misspelt entry key": ({"func": "format", "wieght": 2}, r"unknown key\(s\) 'wieght' \(did you mean 'weight'\?\)"),
    "bad target": ({"func": "format", "target": "image"}, r"target must be 'text', 'pose' or 'both'"),
    "missing module": ({"func": "no_such_module:f"}, r"cannot import module 'no_such_module'"),
    "missing attribute": ({"func": "rewards.format:nope"}, r"module 'rewards.format' has no attribute 'nope'"),
    "missing file": ({"func": "missing_rewards.py:f"}, r"reward file 'missing_rewards.py' does not exist"),
    "misspelt kwarg": ({"func": "joint", "kwargs": {"kind": "exp", "tua": 0.3}},
                       r"unexpected kwarg 'tua' \(did you mean 'tau'\?\)"),
    "model path missing": ({"func": "semantic", "kwargs": {"model_path": "runs/retrieval/nope"}},
                           r"kwargs.model_path = 'runs/retrieval/nope' does not exist \(train one with "
                           r"`posrft retrieval train"),
    "column the data lacks": ({"func": "trl.rewards:accuracy_reward"},
                              r"needs the dataset column\(s\) 'solution', which .* lacks"),
    "builder without kwargs": ({"func": "trl.rewards:get_soft_overlong_punishment"},
                               r"kwargs needs 'max_completion_len', 'soft_punish_cache'"),
    "bad timeout": ({"func": "format", "timeout": -1}, r"timeout must be a number of seconds > 0"),
    "bad weight": ({"func": "format", "weight": "heavy"}, r"weight must be a finite number"),
    "bad on_error": ({"func": "format", "on_error": "ignore"}, r"on_error must be 'raise' or 'mask'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REWARD_CASES))
def test_bad_reward_entries_are_refused_before_anything_loads(tmp_path, world, case):
    entry, match = REWARD_CASES[case]
    msg = _refused(tmp_path, world, rewards=[entry, {"func": "joint", "target": "pose"}])
    assert __import__("re").search(match, msg), msg


def test_duplicate_reward_names_are_refused(tmp_path, world):
    msg = _refused(tmp_path, world, rewards=[{"func": "format"}, {"func": "format"}])
    assert "names must be unique; repeated: ['format']" in msg


# --------------------------------------------------------------------------- files and folders
def test_damaged_model_folders_name_the_file(tmp_path, world):
    for key, match in [("trunc_model", r"model.safetensors' is truncated: \d+ bytes, its header describes"),
                       ("trunc_head", r"pose_head.safetensors' is truncated"),
                       ("no_config", r"has no config.json"),
                       ("bad_config", r"model config '.*config.json' is not valid JSON")]:  # fmt: skip
        msg = _refused(tmp_path, world, model_name_or_path=str(world[key]))
        assert __import__("re").search(match, msg), (key, msg)


@pytest.mark.parametrize("fields, match", [
    ({"model_name_or_path": "Qwen/Qwen2-VL-2B"}, r"model folder 'Qwen/Qwen2-VL-2B' does not exist \(a hub id\?"),
    ({"model_name_or_path": ""}, r"model_name_or_path is empty"),
    ({"dataset_path": "runs/no/such/data"}, r"dataset folder 'runs/no/such/data' does not exist"),
    ({"dataset_path": ""}, r"dataset_path is empty"),
    ({"dataset_train_split": "trian"}, r"has no split 'trian' \(did you mean 'train'\?\)"),
])  # fmt: skip
def test_missing_paths_are_named(tmp_path, world, fields, match):
    assert __import__("re").search(match, _refused(tmp_path, world, **fields))


def test_bad_datasets_are_named(tmp_path, world):
    msg = _refused(tmp_path, world, dataset_path=str(world["empty"]))
    assert "split 'train' is empty (0 rows)" in msg
    msg = _refused(tmp_path, world, trainer="sft", dataset_path=str(world["prompts_only"]))
    assert "lacks column(s) ['completion', 'gt_pose_6d'] the sft trainer needs" in msg
    msg = _refused(tmp_path, world, dataset_path=str(world["not_data"]))
    assert "is not a saved dataset" in msg


def test_posrft_eval_and_sample_name_a_truncated_model_file(world, capsys):
    from posrft.cli import main

    assert main(["eval", "--model", str(world["trunc_head"]), "--data", str(world["data"]),
                 "--task", "text2pose"]) == 2  # fmt: skip
    assert main(["model", "sample", str(world["trunc_model"])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("posrft eval: error: --model: '") and "pose_head.safetensors' is truncated" in err[0]
    assert err[1].startswith("posrft model: error: MODEL_DIR: '") and "model.safetensors' is truncated" in err[1]


def test_a_corrupt_picture_is_named_by_row_before_training_or_evaluation(tmp_path, world, capsys):
    msg = _refused(tmp_path, world, dataset_path=str(world["corrupt_png"]))
    assert "split 'train' row 2, column 'images', image 0: not a readable image" in msg
    from posrft.cli import main

    data = str(world["corrupt_png"])
    assert main(["eval", "--model", str(world["model"]), "--data", data, "--split", "train",
                 "--task", "image2pose"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("posrft eval: error: dataset") and "row 2, column 'images'" in err


def test_output_dir_that_is_a_file_is_refused(tmp_path, world):
    assert "is a file, not a folder" in _refused(tmp_path, world, output_dir=str(world["a_file"]))


def test_body_model_folders_are_checked(tmp_path, world):
    msg = _refused(tmp_path, world, body_model_dir=str(tmp_path / "smpl_nowhere"))
    assert "body-model folder" in msg and "does not exist" in msg
    msg = _refused(tmp_path, world, body_model_dir=str(world["body"]))
    assert "has no SMPL neutral model: expected one of SMPL_NEUTRAL.pkl" in msg


def test_resume_problems_are_found_before_launch(tmp_path, world):
    msg = _refused(tmp_path, world, resume_from_checkpoint=str(tmp_path / "ckpt"))
    assert "resume_from_checkpoint=" in msg and "no such folder" in msg
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "trainer_state.json").write_text('{"step": 2, "sam')
    msg = _refused(tmp_path, world, resume_from_checkpoint="latest")
    assert "has a readable trainer_state.json" in msg


def test_a_crafted_pickle_in_the_checkpoint_is_refused_before_launch(tmp_path, world):
    import torch

    ckpt = tmp_path / "out" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, "sampler": {}}))
    torch.save({"state": _Crafted()}, ckpt / "optimizer.bin")
    msg = _refused(tmp_path, world, resume_from_checkpoint="latest")
    assert "optimizer.bin' holds a pickled reference to builtins.print" in msg


class _Crafted:
    def __reduce__(self):  # what a malicious checkpoint does: call a function on load
        return (print, ("this ran on load",))


def test_ray_addresses_are_checked(tmp_path, world):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = _refused(tmp_path, world, ray_address=f"127.0.0.1:{port}")
    assert f"cannot reach 127.0.0.1:{port}" in msg
    assert "is not HOST:PORT" in _refused(tmp_path, world, ray_address="localhost")


def test_accelerate_config_problems(tmp_path, world):
    msg = _refused(tmp_path, world, accel=str(tmp_path / "nope.yaml"))
    assert "accelerate config" in msg and "nope.yaml' (from --accelerate-config) does not exist" in msg
    cfg = tmp_path / "accel.yaml"
    cfg.write_text("distributed_type: MULTI_CPU\nnum_processes: 0\n")
    assert "num_processes must be an integer >= 1, got 0" in _refused(tmp_path, world, accel=str(cfg))
    msg = _refused(tmp_path, world, accel=None, accelerate_config=str(tmp_path / "gone.yaml"))
    assert "gone.yaml' (from the recipe's accelerate_config) does not exist" in msg


def test_skeleton_recipes_are_checked_too(tmp_path, world):
    msg = _refused(tmp_path, world, trainer="skeleton", class_split="16-4")
    assert "class_split" in msg
    msg = _refused(tmp_path, world, trainer="skeleton", clips_per_class=2)
    assert "clips_per_class=2 (dataset_path is empty, so the clips are built in memory)" in msg
    msg = _refused(tmp_path, world, trainer="skeleton", stage="crdistill",
                   teacher={"kind": "openai", "base_url": "http://127.0.0.1:9", "model": "m",
                            "api_key_env": "POSRFT_TEST_NO_SUCH_KEY"})  # fmt: skip
    assert "environment variable 'POSRFT_TEST_NO_SUCH_KEY' (api_key_env) is not set" in msg


def test_several_problems_are_reported_together(tmp_path, world):
    msg = _refused(tmp_path, world, model_name_or_path=str(tmp_path / "m"), dataset_path=str(tmp_path / "d"))
    assert msg.startswith("2 problems:") and "model folder" in msg and "dataset folder" in msg


# --------------------------------------------------------------------------- the command line
def test_posrft_train_prints_one_line_and_no_traceback(tmp_path, world):
    recipe = _recipe(tmp_path, world, max_stepz=3)
    res = subprocess.run([sys.executable, "-m", "posrft.cli", "train", str(recipe), "--accelerate-config",
                          ZERO2], capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"posrft train: error: recipe {str(recipe)!r}: unknown key 'max_stepz' (did you "
                     "mean 'max_steps'?) for trainer 'hygrpo'"], res.stderr  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_launcher_flags_after_the_recipe_are_the_launchers(tmp_path, world):
    from posrft.launch import launch, split_launcher_flags

    flags, rest = split_launcher_flags(["--beta", "0.1", "--accelerate-config", "x.yaml", "--num_processes=1"])
    assert flags == {"accelerate_config": "x.yaml", "num_processes": "1"} and rest == ["--beta", "0.1"]
    recipe = _recipe(tmp_path, world)
    with pytest.raises(PreflightError, match=r"accelerate config '.*elsewhere.yaml' \(from --accelerate-config\)"):
        launch(recipe, ["--accelerate-config", str(tmp_path / "elsewhere.yaml")])


# --------------------------------------------------------------------------- other commands
def test_data_synth_refuses_empty_splits(tmp_path, capsys):
    from posrft.cli import main

    assert main(["data", "synth", "--task", "text2pose", "--n", "3", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posrft data: error: n=3 leaves the val and test splits empty") and "use n >= 6" in err
    assert "Traceback" not in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("scale, match", [
    (1e30, r"clip.npy.: joints span 1.7e\+30 m in one frame \(person 0, frame 0\); expected metres"),
    (float("nan"), r"NaN/inf"),
])  # fmt: skip
def test_render_refuses_coordinates_it_cannot_draw(tmp_path, scale, match):
    import numpy as np

    from posrft.render import render_npy

    clip = np.zeros((4, 24, 3), dtype=np.float32)
    clip[:, :, 1] = np.linspace(0, 1.7, 24) * scale
    np.save(tmp_path / "clip.npy", clip)
    with pytest.raises(ValueError, match=match):
        render_npy(tmp_path / "clip.npy", "smpl24", tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
