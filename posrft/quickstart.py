"""The main job: tiny model → synthetic data → SFT warm-up → HyGRPO → evaluation summary.

Reads ``recipes/quickstart.yaml`` (never evaluated, only parsed). Training stages are launched
through :mod:`posrft.launch` exactly as ``posrft train`` does — accelerate, DeepSpeed ZeRO-2,
two learner processes (gloo on a CPU-only machine) and Ray rollout workers — so the quickstart
exercises the same path a real run takes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from posrft.files import atomic_write_json, atomic_write_text

console = Console()
STAGES = 5
CURVES = ("reward/text", "reward/pose", "rewards/joint_pelvis/mean", "rewards/joint_pa/mean", "grad_norm")
SFT_CURVES = ("loss/sft_text", "loss/sft_pose", "pose/valid_frac", "pose/sigma")


def _stage(k: int, text: str) -> float:
    console.rule(f"[bold cyan][{k}/{STAGES}] {text}")
    return time.perf_counter()


def _write_recipe(path: Path, trainer: str, fields: dict[str, Any]) -> Path:
    return atomic_write_text(path, yaml.safe_dump({"trainer": trainer, **fields}, sort_keys=False))


def _train(recipe: Path, accelerate_config: str | None) -> None:
    from posrft.launch import launch

    code = launch(recipe, accelerate_config=accelerate_config)
    if code != 0:
        raise RuntimeError(f"training stage {recipe} failed with exit code {code}")


def quickstart(config: str | os.PathLike = "recipes/quickstart.yaml", out: str | os.PathLike | None = None) -> dict:
    """Run every stage; returns (and writes to ``OUT/summary.json``) the evaluation summary."""
    with open(config) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise ValueError(f"{config} must be a YAML mapping")
    unknown = set(spec) - {"out", "seed", "accelerate_config", "data", "eval", "sft", "hygrpo"}
    if unknown:
        raise ValueError(f"{config}: unknown keys {sorted(unknown)}")
    root = Path(out or spec.get("out", "runs/quickstart"))
    seed = int(spec.get("seed", 0))
    accel = spec.get("accelerate_config")
    data_spec, eval_spec = spec.get("data", {}), spec.get("eval", {})
    start = time.perf_counter()

    t = _stage(1, "build the tiny offline pose-MLLM")
    from posrft.policy.sample import init_tiny

    info = init_tiny(root / "tiny", seed=seed)
    console.print(f"{info['model_parameters']:,} model + {info['pose_head_parameters']:,} pose-head "
                  f"parameters ({time.perf_counter() - t:.1f}s)")  # fmt: skip

    t = _stage(2, f"synthesise {data_spec.get('task', 'text2pose')} data")
    from posrft.data.synth import synth_dataset

    data_dir = root / "data"
    dd = synth_dataset(data_spec.get("task", "text2pose"), int(data_spec.get("n", 800)), data_dir, seed=seed)
    console.print({k: len(v) for k, v in dd.items()}, f"({time.perf_counter() - t:.1f}s)")

    t = _stage(3, "SFT warm-up (accelerate + DeepSpeed)")
    sft_recipe = _write_recipe(root / "recipes" / "sft.yaml", "sft", {
        "model_name_or_path": str(root / "tiny"), "dataset_path": str(data_dir),
        "output_dir": str(root / "sft"), "seed": seed, **spec.get("sft", {})})  # fmt: skip
    _train(sft_recipe, accel)
    from posrft.train.plots import plot_curves

    plot_curves(root / "sft" / "metrics.jsonl", SFT_CURVES, root / "sft" / "curves.png", title="quickstart SFT")
    console.print(f"SFT done ({time.perf_counter() - t:.1f}s)")

    t = _stage(4, "HyGRPO (Ray rollout workers + DeepSpeed learner)")
    rl_recipe = _write_recipe(root / "recipes" / "hygrpo.yaml", "hygrpo", {
        "model_name_or_path": str(root / "sft" / "final"), "dataset_path": str(data_dir),
        "output_dir": str(root / "hygrpo"), "seed": seed, **spec.get("hygrpo", {})})  # fmt: skip
    _train(rl_recipe, accel)
    curves = plot_curves(root / "hygrpo" / "metrics.jsonl", CURVES, root / "hygrpo" / "curves.png",
                         title="quickstart HyGRPO")  # fmt: skip
    console.print(f"HyGRPO done ({time.perf_counter() - t:.1f}s); curves: {curves}")

    t = _stage(5, f"evaluate on the {eval_spec.get('split', 'test')} split")
    from posrft.eval.pose_eval import evaluate_pose_policy

    results = {}
    for name, model in (("sft", root / "sft" / "final"), ("hygrpo", root / "hygrpo" / "final")):
        results[name] = evaluate_pose_policy(str(model), str(data_dir), eval_spec.get("split", "test"),
                                             eval_spec.get("num_samples"))  # fmt: skip
    table = Table(title="quickstart evaluation (greedy text, pose = μ)")
    for col in ("model", "valid <POSE>", "format acc", "MPJPE mm", "PA-MPJPE mm"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(name, f"{r['valid_rate']:.2f}", f"{r['format_accuracy']:.2f}",
                      f"{r['mpjpe_mm']:.1f}", f"{r['pa_mpjpe_mm']:.1f}")  # fmt: skip
    console.print(table)
    sft, rl = results["sft"], results["hygrpo"]
    # what HyGRPO optimised here (the joint rewards: pelvis- and Procrustes-aligned joint error),
    # measured on prompts neither stage trained on
    improvement = {
        f"{k}_relative": (rl[k] - sft[k]) / sft[k] for k in ("mpjpe_mm", "pa_mpjpe_mm")
    } | {f"{k}_delta": rl[k] - sft[k] for k in ("mpjpe_mm", "pa_mpjpe_mm")}
    from posrft.eval.pose_eval import mean_pose_metrics

    reference = mean_pose_metrics(str(data_dir), eval_spec.get("split", "test"), eval_spec.get("num_samples"))
    summary = {"evaluation": results, "hygrpo_vs_sft": improvement, "mean_pose_reference": reference,
               "split": eval_spec.get("split", "test"), "wall_s": time.perf_counter() - start,
               "metrics_log": str(root / "hygrpo" / "metrics.jsonl")}  # fmt: skip
    atomic_write_json(root / "summary.json", summary)
    console.print(f"HyGRPO vs its SFT start on held-out prompts: MPJPE "
                  f"{100 * improvement['mpjpe_mm_relative']:+.1f} %, PA-MPJPE "
                  f"{100 * improvement['pa_mpjpe_mm_relative']:+.1f} %")  # fmt: skip
    console.print(f"summary written to {root / 'summary.json'} (total {summary['wall_s']:.0f}s)")
    return summary
