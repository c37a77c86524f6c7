"""Qwen2.5-VL through the real launch path: 2 learner processes (DeepSpeed ZeRO-2 over gloo),
2 Ray rollout workers, LoRA with the family's projector, images of a synthetic image→pose set.

On-policy steps with a tiny clip range (ε = 1e-4) show that the learner's log-probs equal the
workers' sampling ones for every token: pixels, image grids and M-RoPE token types crossed Ray,
the rank scatter and the micro-batch selection intact, and the merged LoRA weights synced to
the workers give the learner's own distribution.
"""

import json

import pytest
import yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image2pose_dir(tmp_path_factory):
    from posrft.data.synth import build_image2pose

    out = tmp_path_factory.mktemp("data") / "image2pose"
    build_image2pose(16, 4, 4, seed=0, out_dir=out, image_size=56)
    return out


def test_qwen2_5_vl_zero2_two_learners_two_ray_workers(tmp_path, image2pose_dir):
    from posrft.launch import launch
    from posrft.policy.model import PosePolicy
    from posrft.policy.tiny_families import build_tiny_family

    model = build_tiny_family("qwen2_5_vl", tmp_path / "qwen2_5_vl", seed=0)
    # a reward that differs between completions, so every token has a non-zero advantage and
    # the clip counters see ratios on both sides of 1
    (tmp_path / "length_reward.py").write_text(
        "def length(prompts, completions, **kwargs):\n"
        "    return [float(len(c[0]['content'] if isinstance(c, list) else c)) for c in completions]\n")
    out = tmp_path / "run"
    recipe = tmp_path / "hygrpo.yaml"
    recipe.write_text(yaml.safe_dump({
        "trainer": "hygrpo", "model_name_or_path": str(model), "dataset_path": str(image2pose_dir),
        "output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 4,
        "num_generations": 4, "max_completion_length": 6, "num_rollout_workers": 2,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2,
        "beta": 0.04, "epsilon": 1e-4, "pose_epsilon": 1e-4, "report_to": ["none"],
        "rewards": [{"func": f"{tmp_path / 'length_reward.py'}:length", "target": "both"},
                    {"func": "joint", "target": "pose"}],
    }))  # fmt: skip
    assert launch(recipe, accelerate_config="recipes/accelerate/zero2.yaml") == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["sync/bytes"] > 0 for r in log)
    assert all(r["adv/zero_std_groups"] < 1 for r in log)  # advantages are not all zero
    for r in log:  # every token's ratio within 1e-4 of 1, every step (on-policy)
        assert r["clip/text_low"] == 0 and r["clip/text_high"] == 0, r
    assert abs(log[0]["kl/text"]) < 1e-6  # reference = adapter disabled = the step-0 policy
    final = PosePolicy.from_pretrained(out / "final")
    assert final.family.name == "qwen2_5_vl"
    from datasets import load_from_disk

    row = load_from_disk(str(image2pose_dir))["test"][0]
    batch = final.rollout([row["prompt"]], [row["images"]], num_generations=2, max_new_tokens=4, seed=0)
    assert batch.mm_inputs.tensors["image_grid_thw"].shape == (2, 3)
