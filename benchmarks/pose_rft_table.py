"""Pose-RFT's results table: SFT baselines vs HyGRPO vs text-only GRPO, on a pretrained start.

    python benchmarks/pose_rft_table.py --out docs/results [--start pretrained|tiny] [--quick]
                                        [--tasks text2pose image2pose] [--work DIR]
    python benchmarks/pose_rft_table.py --out DIR --work DIR --report-only   # the stages finished so far

``--start pretrained`` (the default): SmolLM2-135M-Instruct for text→pose and SmolLM2 +
DINOv2-small (224 px, 16 image tokens) for image→pose, built offline by ``posrft model
init-pretrained``, LoRA on the top decoder layers; for image→pose the pose head also reads
the image tokens (``--pose-head-reads-image``) and SFT keeps the projector frozen. ``--start
tiny``: the tiny random models (the cheap second section). ``--text-model`` / ``--image-model`` take any local HF folder
instead. Per task (run in the order b, c, e, d, a, ablations, TRL, so a partial run already
holds the headline; every stage resumable: a finished one leaves ``WORK/<task>/<row>/result.json``):

    (a) sft_deterministic           SFT, deterministic head (L2 on μ)
    (b) sft_gaussian                SFT, Gaussian head (``l2_nll``: μ as (a), σ fitted by NLL)
    (c) +hygrpo                     (b) + HyGRPO with issue 15's settings (K nested pose samples,
                                    per-joint credit, fixed σ), seeds 0, 1, 2
    (d) +grpo_text_only             (b) + GRPO on the text tokens only: every reward feeds the
                                    token advantage, rewards score μ, no pose term; seeds 0, 1, 2
    (e) +more_sft                   (b) + SFT for as long (wall time) as a (c) run; seeds 0, 1, 2
    ablations (seed 0)              (c) with K = 1 (the paper), without per-joint credit, σ as the
                                    SFT head predicts it, one joint ratio, and each pose reward
                                    dropped
    trl_grpo_text_only (text→pose)  TRL's GRPOTrainer on (b)'s language model, an outside check
                                    of (d)

References: the training set's mean pose, and (text→pose) the ground-truth poses under each
retrieval model. Retrieval is scored by two models: the independent evaluator (train subset b,
seed 1) and the semantic reward's own model (subset a, seed 0), every mRecall convention
(PoseScript R@1/5/10, Pose-RFT R@5/10/20, UniPose R@1/5/10/20, pools of 32). Settings were
chosen on val; tables report test, mean ± std over the seeds of the RL stage (SFT rows are one
run each, shared by every seed).

The tasks run one after another on every core (``--parallel``: side by side, the cores split;
on this 2-core machine two pretrained SFT stages side by side ran at 20–26 s/step each, against
4.4–4.5 s/step alone: they are memory-bound).

Writes ``OUT/pose_rft.json`` / ``.md`` (``--start tiny``: ``pose_rft_tiny.*``) and prints the
markdown; the last line is one JSON object (wall time, criteria).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASKS = ("text2pose", "image2pose")
SEEDS = (0, 1, 2)
TIMING_STEPS = 12  # SFT steps timed to size the same-compute control

_RL_COMMON = {"beta": 0.0, "pose_beta": 0.0, "pose_sigma": "fixed", "pose_sigma_value": 0.05,
              "per_joint_credit": True, "temperature": 1.0, "logging_steps": 5}  # fmt: skip
SETTINGS: dict[str, dict[str, Any]] = {
    "pretrained": {
        "data": {"text2pose": 6000, "image2pose": 3000}, "image_size": 224,
        "eval_val": 100, "eval_test": 200,
        "sft": {"max_steps": 900, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0, "use_peft": True, "lora_layers": 8, "bf16": True,
                "pose_head_input_norm": True},
        "rl": {"max_steps": 60, "learning_rate": 2e-4, "per_device_train_batch_size": 16,
               "num_generations": 2, "num_pose_samples": 32, "max_completion_length": 16,
               "use_peft": True, "lora_layers": 8, "train_projector": False, "bf16": True, **_RL_COMMON},
        "trl_steps": 30, "retrieval_epochs": 60,
        # image→pose: the pose head reads the image tokens itself (the composed LM does not learn
        # to carry the picture to <POSE> in this budget), and the projector those tokens come
        # from stays frozen (docs/pretrained.md, "A pose head that reads the image")
        "image2pose": {"start": {"head_reads_image": True}, "sft": {"train_projector": False}},
        # text→pose: val mRecall still rose from 60 to 120 RL steps with the pose metrics flat
        # (docs/results/pose_rft_tuning.md, "The pretrained start")
        "text2pose": {"rl": {"max_steps": 120}},
    },
    "tiny": {
        "data": {"text2pose": 6000, "image2pose": 3000}, "image_size": 56,
        "eval_val": 200, "eval_test": 400,
        "sft": {"max_steps": 2000, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0},
        "rl": {"max_steps": 100, "learning_rate": 1e-4, "per_device_train_batch_size": 64,
               "num_generations": 4, "num_pose_samples": 16, "max_completion_length": 24,
               **_RL_COMMON},
        "trl_steps": 100, "retrieval_epochs": 60,
    },
    "quick": {
        "data": {"text2pose": 300, "image2pose": 200}, "image_size": 56,
        "eval_val": 24, "eval_test": 32,
        "sft": {"max_steps": 40, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0},
        "rl": {"max_steps": 4, "learning_rate": 1e-4, "per_device_train_batch_size": 16,
               "num_generations": 4, "num_pose_samples": 8, "max_completion_length": 16,
               **{**_RL_COMMON, "logging_steps": 2}},
        "trl_steps": 2, "retrieval_epochs": 5,
    },
}


def task_rewards(task: str, reward_model: str | None) -> list[dict[str, Any]]:
    """Text: format + similarity to the reference answer. Pose: joints (pelvis and Procrustes,
    per joint) + semantic alignment (text→pose) or 2D reprojection (image→pose)."""
    joint = {"kind": "neg_mean", "tau": 0.1, "per_joint": True}
    rewards = [{"func": "format", "target": "text"}, {"func": "text_similarity", "target": "text"},
               {"func": "joint", "name": "joint_pelvis", "target": "pose", "kwargs": joint},
               {"func": "joint", "name": "joint_pa", "target": "pose",
                "kwargs": {**joint, "align": "procrustes"}}]  # fmt: skip
    if task == "text2pose":
        rewards.append({"func": "semantic", "target": "pose", "kwargs": {"model_path": reward_model}})
    else:
        rewards.append({"func": "reprojection", "weight": 0.5, "target": "pose"})
    return rewards


def rl_rows(task: str, reward_model: str | None) -> dict[str, tuple[dict[str, Any], tuple[int, ...]]]:
    """RL rows: name → (HyGRPO-config overrides, seeds)."""
    full = task_rewards(task, reward_model)
    rows: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
        "+hygrpo": ({"rewards": full}, SEEDS),
        "+grpo_text_only": ({"rewards": [{**r, "target": "text"} for r in full], "discrete_only": True,
                             "num_pose_samples": 1, "per_joint_credit": False}, SEEDS),
        "+hygrpo[K1]": ({"rewards": full, "num_pose_samples": 1}, (0,)),
        "+hygrpo[no_credit]": ({"rewards": full, "per_joint_credit": False}, (0,)),
        "+hygrpo[sigma_learned]": ({"rewards": full, "pose_sigma": "learned", "pose_sigma_value": None}, (0,)),
        "+hygrpo[joint_ratio]": ({"rewards": full, "per_joint_credit": False, "pose_ratio": "joint",
                                  "pose_epsilon": 0.05}, (0,)),
    }
    for r in full:
        if r["target"] == "pose":
            name = r.get("name", r["func"])
            rows[f"+hygrpo[-{name}]"] = ({"rewards": [x for x in full if x is not r]}, (0,))
    return rows


# ------------------------------------------------------------------------------ one task
class Task:
    """Every stage of one task; results are cached in ``WORK/<task>/<row>/result.json``."""

    def __init__(self, task: str, mode: str, start: str, work: Path, base_model: str | None) -> None:
        self.task, self.mode, self.start = task, mode, start
        self.s = SETTINGS[mode]
        self.task_settings = self.s.get(task, {})
        self.work = work / task
        self.work.mkdir(parents=True, exist_ok=True)
        self.base_model = base_model
        self.data = self.work / "data"

    # -- helpers
    def _done(self, row: str, steps: int | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """``row``'s cached result. A row trained for another number of ``steps``, or whose saved
        config differs from ``settings`` (the non-None ones), stops the run: it came from other
        settings, and resuming or reporting it would mix the two."""
        f = self.work / row / "result.json"
        if not f.is_file():
            return None
        result = json.loads(f.read_text())
        config = self.work / row / "config.json"
        if steps is not None:
            done = result.get("steps") or json.loads(config.read_text())["max_steps"]
            if done != steps:
                raise SystemExit(f"{self.work / row}: trained for {done} steps, the table's settings say "
                                 f"{steps}; move the row's folder aside")
        if settings:
            saved = json.loads(config.read_text())
            stale = sorted(k for k, v in settings.items()
                           if v is not None and json.loads(json.dumps(v)) != saved.get(k))
            if stale:
                raise SystemExit(f"{self.work / row}: trained with other {', '.join(stale)} than the table's "
                                 "settings; move the row's folder aside")
        return result

    def _save(self, row: str, result: dict[str, Any]) -> dict[str, Any]:
        from posrft.files import atomic_write_json

        atomic_write_json(self.work / row / "result.json", result)
        print(f"[{self.task}] {row}: {json.dumps(_brief(result))}", flush=True)
        return result

    def evaluate(self, model: Path, splits: tuple[str, ...] = ("test",)) -> dict[str, Any]:
        from posrft.eval.evaluate import evaluate_model

        out = {}
        for split in splits:
            n = self.s["eval_test"] if split == "test" else self.s["eval_val"]
            r = evaluate_model(model, self.data, self.task, split=split, num_samples=n,
                               retrieval_model=self.retrieval, max_new_tokens=24)  # fmt: skip
            out[split] = compact(r)
        return out

    # -- stages
    def prepare(self) -> None:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        from posrft.data.synth import synth_dataset

        if not (self.data / "dataset_dict.json").is_file():
            extra = {"image_size": self.s["image_size"]} if self.task == "image2pose" else {}
            synth_dataset(self.task, self.s["data"][self.task], self.data, seed=0, **extra)
        self.model0 = Path(self.base_model) if self.base_model else self.work / "start"
        if not (self.model0 / "config.json").is_file():
            if self.start == "pretrained":
                from posrft.policy.pretrained import init_pretrained

                init_pretrained(self.model0, text="smollm2",
                                vision="dinov2-small" if self.task == "image2pose" else "none",
                                image_size=self.s["image_size"], **self.task_settings.get("start", {}))  # fmt: skip
            else:
                from posrft.policy.tiny import build_tiny_model, build_tiny_text_model

                (build_tiny_text_model if self.task == "text2pose" else build_tiny_model)(self.model0, seed=0)
        self._check_start()
        self.reward_model = self.retrieval = None
        if self.task == "text2pose":
            from posrft.eval.retrieval_train import train_retrieval

            reward, evaluator = self.work / "retrieval_reward", self.work / "retrieval_eval"
            if not evaluator.exists():  # both are written atomically, the evaluator last
                train_retrieval(self.data, reward, seed=0, subset="a", epochs=self.s["retrieval_epochs"], eval_split="val")
                train_retrieval(self.data, evaluator, seed=1, subset="b", epochs=self.s["retrieval_epochs"], eval_split="val")
            self.reward_model = str(reward)
            self.retrieval = {"evaluator": str(evaluator), "reward_model": str(reward)}

    def _check_start(self) -> None:
        """A start built by an older version of the table must not be reused with other settings."""
        wanted = self.task_settings.get("start", {})
        if self.base_model or not wanted:
            return
        from posrft.policy.config import CONFIG_NAME, PosePolicyConfig

        config = PosePolicyConfig.from_json_file(self.model0 / CONFIG_NAME)
        for key, value in wanted.items():
            if getattr(config, key) != value:
                raise SystemExit(f"{self.model0}: built with {key}={getattr(config, key)!r}, the table's "
                                 f"{self.task} settings say {value!r}; move the task's work folder aside")

    def sft(self, row: str, start: Path, steps: int, seed: int = 0, **kw: Any) -> dict[str, Any]:
        from posrft.train.config import SFTConfig
        from posrft.train.sft import run_sft

        if (r := self._done(row, steps)) is not None:
            return r
        out = self.work / row
        t = time.perf_counter()
        cfg = {**self.s["sft"], **self.task_settings.get("sft", {}), "max_steps": steps, **kw}
        run_sft(SFTConfig(model_name_or_path=str(start), dataset_path=str(self.data), output_dir=str(out),
                          seed=seed, report_to=["none"], logging_steps=25, save_steps=max(1, steps // 4),
                          resume_from_checkpoint="latest", **cfg))  # fmt: skip
        train_s = time.perf_counter() - t
        log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        step_s = statistics.median(r["time/step"] for r in log)
        return self._save(row, {"train_s": train_s, "step_s": step_s, "steps": steps,
                                **self.evaluate(out / "final", ("val", "test"))})  # fmt: skip

    def rl(self, row: str, start: Path, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
        from posrft.train.config import HyGRPOConfig
        from posrft.train.hygrpo import run_hygrpo

        name = f"{row}_s{seed}"
        cfg = {**self.s["rl"], **self.task_settings.get("rl", {}), **overrides}
        if (r := self._done(name, cfg["max_steps"], cfg)) is not None:
            return r
        out = self.work / name
        t = time.perf_counter()
        run_hygrpo(HyGRPOConfig(model_name_or_path=str(start), dataset_path=str(self.data), output_dir=str(out),
                                seed=seed, num_rollout_workers=0, report_to=["none"], log_completions=False,
                                save_steps=max(1, cfg["max_steps"] // 3), resume_from_checkpoint="latest", **cfg))  # fmt: skip
        train_s = time.perf_counter() - t
        splits = ("val", "test") if seed == 0 else ("test",)
        return self._save(name, {"train_s": train_s, "metrics_log": str(out / "metrics.jsonl"),
                                 **self.evaluate(out / "final", splits)})  # fmt: skip

    def control_steps(self, start: Path, rl_s: list[float]) -> int:
        """SFT steps that take as long as the median RL seed: the (e) control's length.

        The SFT step time is timed here (a short run from ``start``, :data:`TIMING_STEPS` steps),
        in the same sitting as the control, because a step time from an earlier stage may have
        been measured beside other jobs. Decided once and kept in ``control_steps.json``, so every
        seed of the control runs the same number of steps.
        """
        from posrft.files import atomic_write_json
        from posrft.train.config import SFTConfig
        from posrft.train.sft import run_sft

        f = self.work / "control_steps.json"
        if f.is_file():
            return json.loads(f.read_text())["steps"]
        out = self.work / "sft_timing"
        shutil.rmtree(out, ignore_errors=True)
        cfg = {**self.s["sft"], **self.task_settings.get("sft", {}), "max_steps": TIMING_STEPS}
        run_sft(SFTConfig(model_name_or_path=str(start), dataset_path=str(self.data), output_dir=str(out),
                          seed=0, report_to=["none"], logging_steps=1, save_steps=TIMING_STEPS,
                          pose_loss="l2_nll", **cfg))  # fmt: skip
        log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        step_s = statistics.median(r["time/step"] for r in log[2:])  # the first steps warm up
        shutil.rmtree(out)
        rl = statistics.median(rl_s)
        steps = max(1, round(rl / step_s))
        atomic_write_json(f, {"steps": steps, "rl_train_s": rl, "sft_step_s": step_s, "rl_train_s_seeds": rl_s})
        print(f"[{self.task}] control: {steps} SFT steps of {step_s:.2f} s = the median RL run ({rl:.0f} s)",
              flush=True)  # fmt: skip
        return steps

    def trl(self, start: Path) -> dict[str, Any]:
        sys.path.insert(0, str(HERE))
        from pose_rft_trl import run_trl_text_only

        row = "trl_grpo_text_only_s0"
        if (r := self._done(row)) is not None:
            return r
        out = self.work / row
        rl = {**self.s["rl"], "num_generations": max(2, self.s["rl"]["num_generations"])}
        t = time.perf_counter()
        lora_layers = self.s["rl"].get("lora_layers") if self.s["rl"].get("use_peft") else None
        run_trl_text_only(start, self.data, out, steps=self.s["trl_steps"], rl=rl, seed=0, lora_layers=lora_layers)
        return self._save(row, {"train_s": time.perf_counter() - t, "metrics_log": str(out / "metrics.jsonl"),
                                **self.evaluate(out / "final", ("val", "test"))})  # fmt: skip

    def run(self) -> dict[str, Any]:
        self.prepare()
        rows: dict[str, Any] = {}
        steps = self.s["sft"]["max_steps"]
        # the headline first, seed by seed, so a partial run already compares (c) with (b) and (e)
        b = self.work / "sft_gaussian" / "final"
        rows["(b) sft_gaussian"] = self.sft("sft_gaussian", self.model0, steps, pose_loss="l2_nll")
        variants = rl_rows(self.task, self.reward_model)
        order = ["+hygrpo", "+grpo_text_only"] + [v for v in variants if v.startswith("+hygrpo[")]
        rows["+hygrpo"] = [self.rl("+hygrpo", b, variants["+hygrpo"][0], seed) for seed in variants["+hygrpo"][1]]
        more = self.control_steps(b, [r["train_s"] for r in rows["+hygrpo"]])
        rows["+more_sft"] = [self.sft(f"more_sft_s{seed}", b, more, seed=seed, pose_loss="l2_nll") for seed in SEEDS]
        over, seeds = variants["+grpo_text_only"]
        grpo = [self.rl("+grpo_text_only", b, over, seed) for seed in seeds]  # a criterion row: before (a)
        rows["(a) sft_deterministic"] = self.sft("sft_deterministic", self.model0, steps, pose_loss="l2")
        rows["+grpo_text_only"] = grpo
        for name in order[2:]:
            over, seeds = variants[name]
            rows[name] = [self.rl(name, b, over, seed) for seed in seeds]
        if self.task == "text2pose":
            rows["trl_grpo_text_only"] = [self.trl(b)]
        refs = {"mean_pose": mean_pose_reference(self.data, self.s["eval_test"])}
        return {"rows": rows, "references": refs}

    def collect(self) -> dict[str, Any]:
        """The finished rows only, named as :meth:`run` names them (``--report-only``)."""
        rows: dict[str, Any] = {}
        singles = {"(b) sft_gaussian": "sft_gaussian", "(a) sft_deterministic": "sft_deterministic"}
        for name, row in singles.items():
            if (r := self._done(row)) is not None:
                rows[name] = r
        variants = rl_rows(self.task, None)  # only the row names are read
        for name, seeded in [("+hygrpo", "+hygrpo"), ("+more_sft", "more_sft"),
                             *((v, v) for v in variants if v != "+hygrpo"),
                             ("trl_grpo_text_only", "trl_grpo_text_only")]:  # fmt: skip
            runs = [r for seed in SEEDS if (r := self._done(f"{seeded}_s{seed}")) is not None]
            if runs:
                rows[name] = runs
        refs = {"mean_pose": mean_pose_reference(self.data, self.s["eval_test"])} if rows else {}
        return {"rows": rows, "references": refs}


def compact(r: dict[str, Any]) -> dict[str, Any]:
    """The table's fields of one ``evaluate_model`` result (retrieval under each model)."""
    out = {"mpjpe": r["mpjpe_mm"], "pa_mpjpe": r["pa_mpjpe_mm"], "valid_rate": r["valid_rate"],
           "format_accuracy": r["format_accuracy"], "num_samples": r["num_samples"]}  # fmt: skip
    for model, block in (r.get("retrieval_by_model") or {}).items():
        out[f"retrieval/{model}"] = block["retrieval"]
        out[f"reference/{model}"] = block["reference"]
    return out


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    t = result.get("test", {})
    b = {"mpjpe": round(t.get("mpjpe", float("nan")), 1), "pa_mpjpe": round(t.get("pa_mpjpe", float("nan")), 1),
         "train_min": round(result.get("train_s", 0) / 60, 1)}  # fmt: skip
    if "retrieval/evaluator" in t:
        b["mrecall"] = round(100 * t["retrieval/evaluator"]["mrecall"], 1)
    return b


def mean_pose_reference(data: Path, n: int) -> dict[str, float]:
    from posrft.eval.pose_eval import mean_pose_metrics

    r = mean_pose_metrics(str(data), "test", n)
    return {"mpjpe": r["mpjpe_mm"], "pa_mpjpe": r["pa_mpjpe_mm"]}


# ------------------------------------------------------------------------------ driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--start", choices=("pretrained", "tiny"), default="pretrained")
    ap.add_argument("--quick", action="store_true", help="tiny model, small data, few steps (minutes)")
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default runs/pose_rft_table/MODE); "
                    "finished stages there are reused")  # fmt: skip
    ap.add_argument("--text-model", default=None, help="HF model folder for text→pose instead of the built-in start")
    ap.add_argument("--image-model", default=None, help="HF model folder for image→pose instead of the built-in start")
    ap.add_argument("--report-only", action="store_true", help="write the report from the stages "
                    "finished so far in --work, without running anything")  # fmt: skip
    ap.add_argument("--parallel", action="store_true", help="run the tasks side by side, the cores "
                    "split between them (default: one after another on every core; two pretrained SFT "
                    "stages side by side ran at 20-26 s/step each against 4.4-4.5 alone)")
    ap.add_argument("--child", nargs=2, metavar=("TASK", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else args.start
    start = "tiny" if args.quick else args.start
    work = args.work or Path("runs/pose_rft_table") / mode
    if args.child:
        task, result = args.child
        base = args.text_model if task == "text2pose" else args.image_model
        res = Task(task, mode, start, work, base).run()
        Path(result).write_text(json.dumps(res, indent=1))
        return 0

    sys.path.insert(0, str(HERE))
    from pose_rft_report import write_report

    if args.report_only:
        results = {}
        for task in args.tasks:
            if (work / task).is_dir():
                res = Task(task, mode, start, work, None).collect()
                if res["rows"]:
                    results[task] = res
        stem = "pose_rft" if mode == "pretrained" else f"pose_rft_{mode}"
        command = f"python benchmarks/pose_rft_table.py --start {args.start} --out {args.out}"
        summary = write_report(results, args.out, stem=stem, settings=SETTINGS[mode], mode=mode, wall_s=None,
                               command=command)  # fmt: skip
        print(Path(summary["markdown"]).read_text())
        return 0

    t0 = time.perf_counter()
    procs = []
    work.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // (len(args.tasks) if args.parallel else 1))
    for task in args.tasks:
        res = work / f"{task}.json"
        cmd = [sys.executable, __file__, "--out", str(args.out), "--work", str(work), "--start", args.start,
               "--child", task, str(res)] + (["--quick"] if args.quick else [])  # fmt: skip
        for flag, value in (("--text-model", args.text_model), ("--image-model", args.image_model)):
            cmd += [flag, value] if value else []
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        log = open(work / f"{task}.log", "a")
        procs.append((task, res, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        if not args.parallel and procs[-1][2].wait() != 0:  # side by side, each SFT ran ~5x slower
            raise SystemExit(f"{task} failed: see {work / f'{task}.log'}")
    results = {}
    for task, res, p in procs:
        if p.wait() != 0:
            raise SystemExit(f"{task} failed: see {work / f'{task}.log'}")
        results[task] = json.loads(res.read_text())
    wall = time.perf_counter() - t0
    command = "python benchmarks/pose_rft_table.py " + ("--quick" if args.quick else f"--start {args.start}") + \
        f" --out {args.out}"
    stem = "pose_rft" if mode == "pretrained" else f"pose_rft_{mode}"
    summary = write_report(results, args.out, stem=stem, settings=SETTINGS[mode], mode=mode, wall_s=wall,
                           command=command)  # fmt: skip
    print(Path(summary["markdown"]).read_text())
    print(json.dumps({"wall_s": round(wall, 1), "criteria": summary["criteria"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
