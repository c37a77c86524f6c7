"""Pose-RFT's results table on the offline benchmark: SFT baselines vs HyGRPO vs text-only GRPO.

    python benchmarks/pose_rft_table.py [--quick] --out DIR [--seeds 0] [--work DIR]

For each task (text→pose and image→pose: own synthetic data, own tiny model — text-only Qwen2
for text→pose so TRL can load it, LLaVA for image→pose) and seed, it trains and evaluates:

    sft_deterministic              SFT, deterministic head (L2 on μ only)                = (a)
    sft_gaussian                   SFT, Gaussian head (NLL on μ, σ)                      = (b)
    sft_gaussian+hygrpo            (b) + HyGRPO (text + pose surrogates)                 = (c)
    sft_gaussian+grpo_text_only    (b) + GRPO on text tokens only: every reward feeds the
                                   token advantage, rewards score μ, no pose term        = (d)
    sft_gaussian+more_sft          (b) + as many SFT steps as the RL runs take (control)
    sft_gaussian+hygrpo[joint_ratio]  ablation: one ratio per pose instead of per dimension
    sft_gaussian+hygrpo[sft_sigma] ablation: exploration σ as SFT left it (no clamp log σ ≤ -3)
    sft_gaussian+hygrpo[-R]        ablation: reward R dropped, for each reward in turn
    trl_grpo_text_only             outside check of (d): TRL's GRPOTrainer on the text→pose
                                   model's language model (pose head carried over from (b))

plus two references per task: ``mean_pose`` (always answer the training set's mean pose) and,
for retrieval, the ground-truth poses scored by the same evaluator. Numbers are on ``test``;
``val`` numbers of the main rows are stored too (settings were chosen on ``val`` only).
Retrieval metrics use the *evaluation* retrieval model (train subset b, seed 1+seed), never
the semantic reward's (subset a, seed seed).

Writes ``DIR/pose_rft.json`` (``{"variants": {name: {"image2pose": {...}, "text2pose":
{...}}}, "references": ..., "criteria": ..., "settings": ..., "wall_s": ...}``),
``DIR/pose_rft.md`` (tables, criteria, regenerate command) and ``DIR/curves_{task}.png``. The
two tasks run as two processes (one thread each); every stage trains on one learner process
with in-process sampling — the recipes in ``recipes/`` cover accelerate + DeepSpeed + Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TASKS = ("image2pose", "text2pose")

#: Chosen on the val split (see docs/results/pose_rft.md for the tuning runs).
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "data": {"text2pose": 6000, "image2pose": 3000},
        "eval_val": 200, "eval_test": 400,
        "sft": {"max_steps": 2000, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0},
        "rl": {"max_steps": 300, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
               "num_generations": 8, "max_completion_length": 16, "beta": 0.04,
               "pose_epsilon": 0.2, "temperature": 1.0, "log_std_max": -3.0},
        "trl_steps": 150, "retrieval_epochs": 60,
    },
    "quick": {
        "data": {"text2pose": 400, "image2pose": 240},
        "eval_val": 32, "eval_test": 40,
        "sft": {"max_steps": 60, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0},
        "rl": {"max_steps": 8, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
               "num_generations": 8, "max_completion_length": 16, "beta": 0.04,
               "pose_epsilon": 0.2, "temperature": 1.0, "log_std_max": -3.0},
        "trl_steps": 4, "retrieval_epochs": 10,
    },
}


def task_rewards(task: str, reward_model: str | None) -> list[dict[str, Any]]:
    """The paper's reward set per task: format → text; joints (+ semantic / reprojection) → pose."""
    rewards = [{"func": "format", "weight": 1.0, "target": "text"},
               {"func": "joint", "weight": 1.0, "target": "pose", "kwargs": {"kind": "exp", "tau": 0.3}}]  # fmt: skip
    if task == "text2pose":
        rewards.append({"func": "semantic", "weight": 1.0, "target": "pose", "kwargs": {"model_path": reward_model}})
    else:
        rewards.append({"func": "reprojection", "weight": 0.5, "target": "pose"})
    return rewards


def rl_variants(task: str, reward_model: str | None) -> dict[str, dict[str, Any]]:
    """HyGRPO-config overrides of each RL row (relative to the task's settings)."""
    full = task_rewards(task, reward_model)
    out: dict[str, dict[str, Any]] = {
        "sft_gaussian+hygrpo": {"rewards": full},
        "sft_gaussian+grpo_text_only": {"rewards": [{**r, "target": "text"} for r in full], "discrete_only": True},
        "sft_gaussian+hygrpo[joint_ratio]": {"rewards": full, "pose_ratio": "joint"},
        # σ keeps the SFT head's range instead of the tuned clamp (log σ ≤ -3)
        "sft_gaussian+hygrpo[sft_sigma]": {"rewards": full, "log_std_max": None},
    }
    for r in full:
        out[f"sft_gaussian+hygrpo[-{r['func']}]"] = {"rewards": [x for x in full if x is not r]}
    return out


# ------------------------------------------------------------------------------ one task
def run_task(task: str, seed: int, mode: str, work: Path, base_model: str | None = None) -> dict[str, Any]:
    """Every row of one task and seed; returns ``{"variants": {...}, "references": {...}}``.

    ``base_model``: a local HF model folder to start from instead of the tiny offline one (a
    real checkpoint on a GPU machine: the rest of the protocol is unchanged)."""
    import torch

    torch.set_num_threads(1)
    from posrft.data.synth import synth_dataset
    from posrft.eval.evaluate import evaluate_model
    from posrft.files import atomic_write_json
    from posrft.policy.tiny import build_tiny_model, build_tiny_text_model
    from posrft.train.config import HyGRPOConfig, SFTConfig
    from posrft.train.hygrpo import run_hygrpo
    from posrft.train.sft import run_sft

    s = SETTINGS[mode]
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "settings.json"  # finished stages are reused only under the same settings
    wanted = json.dumps({"settings": s, "base_model": base_model}, sort_keys=True)
    if stamp.exists() and stamp.read_text() != wanted:
        raise SystemExit(f"{work} holds stages trained with other settings ({stamp}); "
                         "delete it or pass another --work")
    stamp.write_text(wanted)
    # Stage times persist in the work folder, so a rerun that reuses finished stages still
    # reports what they cost when they were trained.
    timing_file = work / "timings.json"
    timings: dict[str, float] = json.loads(timing_file.read_text()) if timing_file.exists() else {}

    def timed(name: str, fn, *a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        timings[name] = round(time.perf_counter() - t, 1)
        atomic_write_json(timing_file, timings)
        print(f"[{task} seed {seed}] {name}: {timings[name]:.0f}s", flush=True)
        return out

    data = work / "data"
    if not data.exists():
        timed("data", synth_dataset, task, s["data"][task], data, seed=seed)
    model0 = Path(base_model) if base_model else work / "tiny"
    if not model0.exists():
        build = build_tiny_text_model if task == "text2pose" else build_tiny_model
        timed("tiny_model", build, model0, seed=seed)
    reward_model = eval_model = None
    if task == "text2pose":
        from posrft.eval.retrieval_train import train_retrieval

        reward_model, eval_model = work / "retrieval_reward", work / "retrieval_eval"
        if not eval_model.exists():
            timed("retrieval_reward", train_retrieval, data, reward_model, seed=seed, subset="a",
                  epochs=s["retrieval_epochs"], eval_split="val")  # fmt: skip
            timed("retrieval_eval", train_retrieval, data, eval_model, seed=seed + 1, subset="b",
                  epochs=s["retrieval_epochs"], eval_split="val")  # fmt: skip
        reward_model, eval_model = str(reward_model), str(eval_model)

    def evaluate(model: Path, split: str) -> dict[str, Any]:
        n = s["eval_test"] if split == "test" else s["eval_val"]
        r = evaluate_model(model, data, task, split=split, num_samples=n, retrieval_model=eval_model, seed=seed)
        return compact(r)

    rows: dict[str, Any] = {}
    common = {"dataset_path": str(data), "seed": seed, "report_to": ["none"], "logging_steps": 10}

    def sft(name: str, start: Path, steps: int, **kw: Any) -> Path:
        out = work / name
        if not (out / "final").exists():
            cfg = SFTConfig(model_name_or_path=str(start), output_dir=str(out),
                            **{**s["sft"], "max_steps": steps, **kw}, **common)  # fmt: skip
            timed(name, run_sft, cfg)
        return out / "final"

    def record(name: str, model: Path, val: bool, log: Path | None = None) -> None:
        rows[name] = {"test": timed(f"eval {name}", evaluate, model, "test")}
        if val:
            rows[name]["val"] = evaluate(model, "val")
        if log is not None and log.exists():
            rows[name]["metrics_log"] = str(log)

    record("sft_deterministic", sft("sft_deterministic", model0, s["sft"]["max_steps"], pose_loss="l2"), val=True)
    b = sft("sft_gaussian", model0, s["sft"]["max_steps"], pose_loss="nll")
    record("sft_gaussian", b, val=True)
    rl_steps = s["rl"]["max_steps"]
    record("sft_gaussian+more_sft", sft("sft_gaussian+more_sft", b, rl_steps, pose_loss="nll"), val=True)
    for name, over in rl_variants(task, reward_model).items():
        out = work / name
        if not (out / "final").exists():
            cfg = HyGRPOConfig(model_name_or_path=str(b), output_dir=str(out), num_rollout_workers=0,
                               log_completions=False, **{**s["rl"], **over}, **{**common, "logging_steps": 1})  # fmt: skip
            timed(name, run_hygrpo, cfg)
        main = "[" not in name
        record(name, out / "final", val=main, log=out / "metrics.jsonl")
    if task == "text2pose":
        from pose_rft_trl import run_trl_text_only

        out = work / "trl_grpo_text_only"
        if not (out / "final").exists():
            timed("trl_grpo_text_only", run_trl_text_only, b, data, out, steps=s["trl_steps"],
                  rl=s["rl"], seed=seed)  # fmt: skip
        record("trl_grpo_text_only", out / "final", val=True, log=out / "metrics.jsonl")
    refs = {"mean_pose": mean_pose_reference(data, s["eval_test"])}
    return {"variants": rows, "references": refs, "timings_s": timings}


def compact(r: dict[str, Any]) -> dict[str, Any]:
    """The table's fields of one :func:`~posrft.eval.evaluate.evaluate_model` result."""
    out = {"mpjpe": r["mpjpe_mm"], "pa_mpjpe": r["pa_mpjpe_mm"], "valid_rate": r["valid_rate"],
           "format_accuracy": r["format_accuracy"], "num_samples": r["num_samples"]}  # fmt: skip
    if r.get("retrieval"):
        for key, value in r["retrieval"].items():  # t2p_r@5 -> r_t2p@5, t2p_pool32_r@5 -> r_t2p_pool32@5
            direction, _, k = key.rpartition("_r@")
            out[f"r_{direction}@{k}" if direction else key] = value
        out["reference_gt_mrecall"] = r["reference"]["mrecall"]
    return out


def mean_pose_reference(data: Path, n: int) -> dict[str, float]:
    """MPJPE / PA-MPJPE (mm) of always answering the training split's mean (pelvis-aligned) joints."""
    import torch
    from datasets import load_from_disk

    from posrft.eval.metrics import mpjpe, pa_mpjpe

    dd = load_from_disk(str(data))
    train = torch.tensor(dd["train"]["gt_joints"], dtype=torch.float64)
    test = torch.tensor(dd["test"].select(range(min(n, len(dd["test"]))))["gt_joints"], dtype=torch.float64)
    mean = (train - train[:, :1]).mean(0, keepdim=True).expand_as(test)
    return {"mpjpe": float(mpjpe(mean, test).mean()) * 1000, "pa_mpjpe": float(pa_mpjpe(mean, test).mean()) * 1000}


# ------------------------------------------------------------------------------ driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data and few steps (≤ 10 min)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for data and models "
                    "(default runs/pose_rft_table/{full,quick}); finished stages found there are reused")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--text-model", default=None, help="HF model folder for text2pose (default: tiny, built here)")
    ap.add_argument("--image-model", default=None, help="HF model folder for image2pose (default: tiny LLaVA)")
    ap.add_argument("--child", nargs=3, metavar=("TASK", "SEED", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    work = args.work or Path("runs/pose_rft_table") / mode
    if args.child:
        task, seed, result = args.child
        base = args.text_model if task == "text2pose" else args.image_model
        res = run_task(task, int(seed), mode, work / f"{task}_seed{seed}", base)
        Path(result).write_text(json.dumps(res, indent=1))
        return 0

    from pose_rft_report import write_report

    start = time.perf_counter()
    results: dict[str, dict[int, Any]] = {t: {} for t in TASKS}
    for seed in args.seeds:
        procs = []
        for task in TASKS:  # the two tasks in parallel: one thread each on a 2-core machine
            res = work / f"{task}_seed{seed}.json"
            cmd = [sys.executable, __file__, "--out", str(args.out), "--work", str(work),
                   "--child", task, str(seed), str(res)] + (["--quick"] if args.quick else [])  # fmt: skip
            for flag, value in (("--text-model", args.text_model), ("--image-model", args.image_model)):
                cmd += [flag, value] if value else []
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            work.mkdir(parents=True, exist_ok=True)
            log = open(work / f"{task}_seed{seed}.log", "w")
            procs.append((task, res, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        for task, res, p in procs:
            if p.wait() != 0:
                raise SystemExit(f"{task} seed {seed} failed: see {work / f'{task}_seed{seed}.log'}")
            results[task][seed] = json.loads(res.read_text())
    wall = time.perf_counter() - start
    command = "python benchmarks/pose_rft_table.py" + (" --quick" if args.quick else "") + \
        f" --out {args.out} --seeds {' '.join(map(str, args.seeds))}"
    paths = write_report(results, args.out, settings=SETTINGS[mode], mode=mode, wall_s=wall, command=command)
    print(paths["markdown"].read_text())
    print(json.dumps({"wall_s": round(wall, 1), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
