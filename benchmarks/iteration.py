"""One RL iteration: posrft HyGRPO vs TRL ``GRPOTrainer`` on the same tiny model and work.

Same for every run: ``--prompts`` text→pose prompts × ``--generations`` (G) completions of at
most ``--max-tokens`` new tokens, temperature 1, top-p 1, no top-k, β = ``--beta`` (so both keep
a frozen reference model and run its forward pass), micro-batch ``--micro-batch``, one
optimizer step per generated batch (TRL: ``steps_per_generation = gradient_accumulation_steps``,
so it generates once per step and skips its "old log-prob" pass, as on-policy GRPO may).
Both models start from the same weights: a tiny random model (posrft.policy.tiny) after
``--sft-steps`` of posrft SFT, so completions end at EOS with a ``<POSE>`` as trained models do.

posrft does more per iteration: it also samples a pose from the Gaussian head at ``<POSE>``,
scores it with the joint reward (body-model FK), builds a second (pose) advantage, and adds the
pose surrogate + closed-form Gaussian KL to the loss; its reward list is the default one
(format → text, joint → pose). TRL gets ``rewards.format.format_reward`` only.

Variants (each a fresh subprocess; ``--rounds`` rounds, order reversed every other round, the
fastest round of each variant kept — other users share the 2 cores):

* posrft on the text-only model (``build_tiny_text_model``, what TRL also trains), learner
  threads = OMP_NUM_THREADS per process: in-process sampling with 1 and 2 intra-op threads
  (``inproc-1p-1t``/``-2t``); 2 Ray rollout workers × 1 thread (``ray2w-1p``); 2 learner
  processes (``posrft.launch.launch_command`` + ``recipes/accelerate/zero2.yaml``: DeepSpeed
  ZeRO-2 over gloo) sampling on rank 0 (``inproc-2p-zero2``) or with 2 Ray workers
  (``ray2w-2p-zero2``); 1 Ray worker with ``max_staleness 1`` (``ray1w-stale1``: sampling overlaps
  the update, samples one version old — reported, not counted as the on-policy result);
* posrft on the LLaVA model (``build_tiny_model``), in-process, 1 thread;
* TRL on the text model with ``torch.set_num_threads`` 1 and 2 (``trl-1t``/``-2t``).

Per-iteration time, the same for both: this process polls (every 5 ms) a file that gets one
line per finished step — posrft's ``metrics.jsonl``, a line written by a TRL ``on_step_end``
callback — and takes the median period between consecutive lines after ``--warmup`` steps
(``--steps`` periods). posrft's own ``time/step`` and phases (time/rollout, time/reward,
time/ref, time/update, time/sync) and TRL's profiling blocks (generate, log-prob forwards,
rewards, loss) are reported next to it. A run still going after ``--variant-timeout`` s is
killed and reported from the steps it finished (``timed_out``): with 2 intra-op threads a
process on 2 cores that other jobs also use can slow down 10-50×.

``posrft_s`` / ``trl_s``: the fastest on-policy posrft text variant / the fastest TRL variant
(finished runs first); ``ratio`` = posrft_s / trl_s. ``ratio_matched_*``: the same set-up on
both sides (1 process, in-process sampling, 1 or 2 threads).

    PYTHONPATH=. .venv/bin/python benchmarks/iteration.py            # ~6-9 min on 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/iteration.py --profile  # + cProfile of posrft

Prints readable lines; the last line is one JSON object (posrft_s, trl_s, ratio, variants, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("time/step", "time/rollout", "time/reward", "time/ref", "time/update", "time/sync")


@dataclass
class Variant:
    """One posrft configuration: learner processes, rollout workers, threads per learner."""

    name: str
    model: str  # "text" or "mm"
    processes: int = 1
    workers: int = 0
    threads: int = 2
    staleness: int = 0

    @property
    def on_policy(self) -> bool:
        return self.staleness == 0


TEXT_VARIANTS = [
    Variant("inproc-1p-1t", "text", threads=1),
    Variant("inproc-1p-2t", "text", threads=2),
    Variant("ray2w-1p", "text", workers=2, threads=1),
    Variant("inproc-2p-zero2", "text", processes=2, threads=1),
    Variant("ray1w-stale1", "text", workers=1, threads=1, staleness=1),
    Variant("ray2w-2p-zero2", "text", processes=2, workers=2, threads=1),  # 4 processes, 2 cores
]
#: The LLaVA model in the set-up that is robust to other users' load (1 process, 1 thread).
LLAVA = Variant("inproc-1p-1t-llava", "mm", threads=1)


# --------------------------------------------------------------------------- set-up
def prepare(work: Path, args: argparse.Namespace) -> dict[str, str]:
    """Data + both tiny models (same seed, same tokenizer), each after a short SFT."""
    from posrft.data.synth import build_text2pose
    from posrft.policy.tiny import build_tiny_model, build_tiny_text_model

    build_text2pose(args.n_train, 8, 8, seed=0, out_dir=work / "data")
    raw = {"text": build_tiny_text_model(work / "text0", seed=0),
           "mm": build_tiny_model(work / "mm0", seed=0)}
    if args.sft_steps == 0:
        return {k: str(v) for k, v in raw.items()}
    out = {}
    for kind, path in raw.items():
        recipe = _write_recipe(work / f"sft_{kind}.yaml", {
            "trainer": "sft", "model_name_or_path": str(path), "dataset_path": str(work / "data"),
            "output_dir": str(work / f"sft_{kind}"), "max_steps": args.sft_steps,
            "learning_rate": 3e-3, "per_device_train_batch_size": 8, "report_to": ["none"]})
        _run([sys.executable, "-m", "posrft.train", "--config", recipe], _env(1),
             work / f"sft_{kind}.log")
        out[kind] = str(work / f"sft_{kind}" / "final")
    return out


def _write_recipe(path: Path, fields: dict[str, Any]) -> str:
    import yaml

    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return str(path)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", RAY_DEDUP_LOGS="0")  # fmt: skip
    return env


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 300) -> None:
    with open(log, "w") as f:
        rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                             timeout=timeout)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}); last lines of {log}:\n"
                           + "".join(open(log).readlines()[-30:]))


def _load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- posrft
def posrft_fields(v: Variant, model: str, work: Path, args: argparse.Namespace,
                  tag: str = "") -> dict[str, Any]:
    """The HyGRPO recipe of variant ``v`` (written as YAML, launched like a user would)."""
    samples = args.prompts * args.generations
    per_step = args.micro_batch * v.processes
    if samples % per_step:
        raise ValueError(f"--prompts × --generations = {samples} is not a multiple of "
                         f"--micro-batch × processes = {per_step} (variant {v.name})")
    return {
        "trainer": "hygrpo", "model_name_or_path": model, "dataset_path": str(work / "data"),
        "output_dir": str(work / f"run_{v.name}{tag}"), "max_steps": args.warmup + args.steps,
        "per_device_train_batch_size": args.micro_batch,
        "gradient_accumulation_steps": samples // per_step, "num_generations": args.generations,
        "max_completion_length": args.max_tokens, "temperature": 1.0, "top_p": 1.0,
        "beta": args.beta, "learning_rate": args.lr, "loss_type": "grpo", "scale_rewards": "group",
        "num_rollout_workers": v.workers, "worker_num_cpus": 1.0, "max_staleness": v.staleness,
        "report_to": ["none"], "logging_steps": 1, "seed": 0,
        # no "rewards": the trainer's default list (format → text, joint → pose)
    }  # fmt: skip


def run_posrft(v: Variant, model: str, work: Path, args: argparse.Namespace,
               tag: str) -> dict[str, Any]:
    """Launch one variant, time consecutive metrics.jsonl lines from outside, parse phases."""
    from posrft.launch import launch_command

    fields = posrft_fields(v, model, work, args, tag)
    recipe = _write_recipe(work / f"{v.name}{tag}.yaml", fields)
    if v.processes == 1:
        cmd = [sys.executable, "-m", "posrft.train", "--config", recipe]
    else:
        cmd = launch_command(recipe, accelerate_config=str(ROOT / "recipes/accelerate/zero2.yaml"),
                             num_processes=v.processes)
    metrics = Path(fields["output_dir"]) / "metrics.jsonl"
    load0 = _load()
    arrivals, timing = _watch(cmd, _env(v.threads), work / f"{v.name}{tag}.log", metrics, args)
    rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.is_file() else []
    measured = rows[args.warmup:] or rows[1:] or rows

    def med(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in measured) if measured else float("nan")

    return {**asdict(v), "on_policy": v.on_policy, **timing,
            **{"own_" + k.split("/")[1] + "_s": med(k) for k in PHASES},
            "completion_mean_len": med("completion/mean_length"),
            "pose_valid_frac": med("pose/valid_frac"), "load_start": load0, "load_end": _load()}


def _watch(cmd: list[str], env: dict[str, str], log: Path, progress: Path,
           args: argparse.Namespace) -> tuple[list[float], dict[str, Any]]:
    """Run ``cmd``; note when each line of ``progress`` appears (polled every 5 ms) — one line
    per finished step for both trainers, so both are timed the same way from outside.

    A run still going after ``--variant-timeout`` s is killed (its whole process group) and
    reported from the steps it finished, with ``timed_out``: two intra-op threads per process
    on 2 cores shared with other users' jobs can slow a step 10-50×, and the benchmark must
    still end in time. Returns (arrival times, timing fields).
    """
    t0 = time.perf_counter()
    arrivals: list[float] = []
    timed_out = False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)  # fmt: skip
        while True:
            done = proc.poll() is not None
            if progress.is_file():
                lines = progress.read_text().count("\n")
                arrivals += [time.perf_counter()] * (lines - len(arrivals))
            if done:
                break
            if time.perf_counter() - t0 > args.variant_timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                timed_out = True
                break
            time.sleep(0.005)
    if proc.returncode != 0 and not timed_out:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); last lines of "
                           f"{log}:\n" + "".join(open(log).readlines()[-30:]))
    now = time.perf_counter()
    periods = [b - a for a, b in zip(arrivals[args.warmup - 1:], arrivals[args.warmup:])]
    if timed_out:  # the unfinished step has lasted at least this long
        periods = periods or [b - a for a, b in zip(arrivals, arrivals[1:])]
        periods.append(now - (arrivals[-1] if arrivals else t0))
    return arrivals, {
        "step_s": statistics.median(periods), "step_s_min": min(periods),
        "step_s_max": max(periods),
        "steps_timed": len(periods), "timed_out": timed_out,
        "startup_s": (arrivals[0] - t0) if arrivals else None, "wall_s": now - t0,
    }  # fmt: skip


# --------------------------------------------------------------------------- TRL
def trl_child(spec: dict[str, Any]) -> None:
    """Runs inside a fresh process: TRL GRPOTrainer; writes per-step times and profiling."""
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    from rewards.format import format_reward

    prof: list[tuple[int, str, float]] = []  # (step index, block, seconds)
    original = profiling.ProfilingContext._log_metrics
    ends: list[float] = []

    def collect(self, duration):  # TRL only reports these to wandb/mlflow/trackio: keep them
        prof.append((len(ends) - 1, self.name, duration))
        return original(self, duration)

    profiling.ProfilingContext._log_metrics = collect
    log_rows: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            ends.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())
            with open(spec["progress"], "a") as f:  # the parent times these lines' arrival
                f.write(f"{len(ends) - 1}\n")

        def on_log(self, args, state, control, logs=None, **k):
            log_rows.append(dict(logs or {}))

    samples = spec["prompts"] * spec["generations"]
    ga = samples // spec["micro_batch"]
    cfg = GRPOConfig(
        output_dir=spec["output_dir"], use_cpu=True, report_to="none", save_strategy="no",
        max_steps=spec["warmup"] + spec["steps"], logging_steps=1, seed=0, bf16=False,
        per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=ga,
        steps_per_generation=ga, num_generations=spec["generations"],
        max_completion_length=spec["max_tokens"], temperature=1.0, top_p=1.0, top_k=0,
        beta=spec["beta"], learning_rate=spec["lr"], loss_type="grpo", scale_rewards="group",
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, log_completions=False,
        dataloader_num_workers=0, disable_dropout=True,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    train = load_from_disk(spec["data"])["train"]
    trainer = GRPOTrainer(model=model, reward_funcs=[format_reward], args=cfg, train_dataset=train,
                          processing_class=tokenizer, callbacks=[StepTimer()])  # fmt: skip
    trainer.train()
    per_step: dict[str, float] = {}  # seconds per optimizer step in each profiled block
    for step, name, seconds in prof:
        if step >= spec["warmup"]:
            per_step[name] = per_step.get(name, 0.0) + seconds / spec["steps"]
    step_logs = [r for r in log_rows if "completions/mean_length" in r][spec["warmup"]:]
    Path(spec["result"]).write_text(json.dumps({
        "profile_per_step_s": per_step,
        "completion_mean_len": statistics.median(r["completions/mean_length"] for r in step_logs),
    }))  # fmt: skip


def run_trl(threads: int, model: str, work: Path, args: argparse.Namespace,
            tag: str) -> dict[str, Any]:
    stem = work / f"trl_{threads}t{tag}"
    result = stem.with_suffix(".json")
    spec = dict(threads=threads, model=model, data=str(work / "data"), output_dir=str(stem),
                prompts=args.prompts, generations=args.generations, max_tokens=args.max_tokens,
                micro_batch=args.micro_batch, beta=args.beta, lr=args.lr, warmup=args.warmup,
                steps=args.steps, result=str(result),
                progress=str(stem.with_suffix(".steps")))  # fmt: skip
    load0 = _load()
    _, timing = _watch([sys.executable, __file__, "--trl-child", json.dumps(spec)], _env(threads),
                       stem.with_suffix(".log"), Path(spec["progress"]), args)
    r = json.loads(result.read_text()) if result.is_file() else {}
    return {"name": f"trl-{threads}t", "threads": threads, **timing,
            "completion_mean_len": r.get("completion_mean_len", float("nan")),
            "profile_per_step_s": r.get("profile_per_step_s", {}),
            "load_start": load0, "load_end": _load()}  # fmt: skip


# --------------------------------------------------------------------------- profile
def profile_child(spec: dict[str, Any]) -> None:
    """cProfile of posrft's in-process iterations after warm-up (the trainer is unchanged: the
    profiler is switched on and off around TrainLogger.log, which ends each step)."""
    import cProfile
    import io
    import pstats

    import torch

    torch.set_num_threads(spec["threads"])
    from posrft.train import logging as train_logging
    from posrft.train.config import HyGRPOConfig
    from posrft.train.hygrpo import run_hygrpo

    fields = {k: v for k, v in spec["fields"].items() if k != "trainer"}
    profiler = cProfile.Profile()
    original = train_logging.TrainLogger.log

    def log(self, step, metrics):
        if step == spec["warmup"] + spec["steps"]:
            profiler.disable()
        original(self, step, metrics)
        if step == spec["warmup"]:
            profiler.enable()

    train_logging.TrainLogger.log = log
    run_hygrpo(HyGRPOConfig(**fields))
    out = io.StringIO()
    profiler.dump_stats(spec["result"] + ".pstats")
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(45)
    out.write("\n---- by own time\n")
    stats.sort_stats("tottime").print_stats(25)
    Path(spec["result"]).write_text(out.getvalue())


def run_profile(model: str, work: Path, args: argparse.Namespace) -> str:
    v = Variant("profile-inproc", "text", threads=1)
    spec = dict(fields=posrft_fields(v, model, work, args), threads=1, warmup=args.warmup,
                steps=args.steps, result=str(work / "profile.txt"))  # fmt: skip
    _run([sys.executable, __file__, "--profile-child", json.dumps(spec)], _env(1),
         work / "profile.log", timeout=args.variant_timeout)
    return (work / "profile.txt").read_text()


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sft-steps", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--variants", default=",".join(v.name for v in TEXT_VARIANTS),
                    help=f"comma-separated subset of {[v.name for v in TEXT_VARIANTS]}")
    ap.add_argument("--trl-threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2, help="run every variant this many times")
    ap.add_argument("--profile", action="store_true", help="also cProfile posrft in-process")
    ap.add_argument("--variant-timeout", type=float, default=45.0,
                    help="kill a run after this many seconds and report the steps it finished")
    ap.add_argument("--work", default=None, help="keep files here (default: a temp folder)")
    ap.add_argument("--trl-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_child:
        return trl_child(json.loads(args.trl_child))
    if args.profile_child:
        return profile_child(json.loads(args.profile_child))
    if args.warmup < 1 or args.steps < 1:
        raise ValueError("--warmup and --steps must both be >= 1")

    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"start: {uptime_start}; cores: {os.cpu_count()}")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        models = prepare(work, args)
        print(f"data + 2 tiny models + {args.sft_steps} SFT steps each: "
              f"{time.perf_counter() - t0:.1f} s")
        chosen = [v for v in TEXT_VARIANTS if v.name in args.variants.split(",")]
        rows, trl_rows = _rounds(chosen + [LLAVA], models, work, args)
        profile = run_profile(models["text"], work, args) if args.profile else None
    if profile:
        print("---- cProfile of posrft in-process iterations (after warm-up)\n" + profile)
    text_rows = [r for r in rows if r["model"] == "text"]
    best = _fastest([r for r in text_rows if r["on_policy"]])
    trl_best = _fastest(trl_rows)
    by_name = {r["name"]: r for r in rows + trl_rows}

    def matched(posrft_name: str, trl_name: str) -> float | None:
        a, b = by_name.get(posrft_name), by_name.get(trl_name)
        if a is None or b is None or a["timed_out"] or b["timed_out"]:
            return None
        return round(a["step_s"] / b["step_s"], 3)

    print(_table(rows + trl_rows))
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"end: {uptime_end}; total {time.perf_counter() - t_all:.0f} s")
    print(f"posrft best on-policy (text model): {best['name']} {best['step_s']:.3f} s/iteration; "
          f"TRL best: {trl_best['name']} {trl_best['step_s']:.3f} s/iteration; "
          f"ratio {best['step_s'] / trl_best['step_s']:.2f}")
    print(json.dumps({
        "posrft_s": round(best["step_s"], 4), "posrft_variant": best["name"],
        "posrft_llava_s": round(by_name[LLAVA.name]["step_s"], 4),
        "posrft_llava_variant": LLAVA.name,
        "trl_s": round(trl_best["step_s"], 4), "trl_variant": trl_best["name"],
        "ratio": round(best["step_s"] / trl_best["step_s"], 3),
        # same process/thread set-up on both sides (in-process sampling, 1 process)
        "ratio_matched_1thread": matched("inproc-1p-1t", "trl-1t"),
        "ratio_matched_2threads": matched("inproc-1p-2t", "trl-2t"),
        "timing": "external, same for both: median period between arrivals of consecutive "
                  "per-step lines (posrft metrics.jsonl; TRL on_step_end callback) after warm-up",
        "prompts": args.prompts, "G": args.generations, "max_tokens": args.max_tokens,
        "micro_batch": args.micro_batch, "beta": args.beta, "warmup": args.warmup,
        "steps": args.steps, "rounds": args.rounds, "sft_steps": args.sft_steps,
        "threads": "OMP_NUM_THREADS per learner process (posrft) / torch.set_num_threads (TRL); "
                   "1 per Ray worker", "cores": os.cpu_count(),
        "variants": [_round(r) for r in rows + trl_rows],
        "uptime_start": uptime_start, "uptime_end": uptime_end,
    }))  # fmt: skip


def _rounds(chosen: list[Variant], models: dict[str, str], work: Path,
            args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every variant ``--rounds`` times, the order reversed each round so that posrft and TRL
    see the other users' load alike; per variant the round with the fastest median is kept
    (the machine is shared: a slower round means someone else took a core)."""
    jobs: list[tuple[str, Any]] = [("posrft", v) for v in chosen]
    jobs += [("trl", int(t)) for t in args.trl_threads.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    for k in range(args.rounds):
        for kind, what in (jobs if k % 2 == 0 else jobs[::-1]):
            if kind == "posrft":
                r = run_posrft(what, models[what.model], work, args, f"r{k}")
            else:
                r = run_trl(what, models["text"], work, args, f"r{k}")
            r["round"] = k
            print(_fmt(r))
            results.setdefault(r["name"], []).append(r)
    kept = []
    for name, runs in results.items():
        fastest = dict(_fastest(runs))
        fastest["rounds_step_s"] = [r["step_s"] for r in runs]
        kept.append(fastest)
    return [r for r in kept if "own_step_s" in r], [r for r in kept if "own_step_s" not in r]


def _fastest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run that finished (a timed-out run only if none did)."""
    return min(rows, key=lambda r: (r["timed_out"], r["step_s"]))


def _round(r: dict[str, Any]) -> dict[str, Any]:
    """4 decimals; NaN (a run killed before it logged anything) → null, so the line is JSON."""
    def num(x: Any) -> Any:
        return (None if x != x else round(x, 4)) if isinstance(x, float) else x

    out = {}
    for k, v in r.items():
        if isinstance(v, dict):
            v = {kk: num(vv) for kk, vv in v.items()}
        elif isinstance(v, list):
            v = [num(x) for x in v]
        out[k] = num(v)
    return out


def _fmt(r: dict[str, Any]) -> str:
    flag = f" TIMED OUT after {r['steps_timed']} period(s)" if r["timed_out"] else ""
    head = (f"{r['name']:<20} {r['step_s']:.3f} s/iteration (min {r['step_s_min']:.3f}, max "
            f"{r['step_s_max']:.3f}), completion len {r['completion_mean_len']:.1f}, load "
            f"{r['load_start']:.2f}→{r['load_end']:.2f}{flag}")  # fmt: skip
    if "own_rollout_s" in r:
        own = ", ".join(f"{k} {r[f'own_{k}_s']:.3f}" for k in ("rollout", "reward", "ref", "update",
                                                                  "sync"))  # fmt: skip
        return head + (f"\n{'':<20} own time/step {r['own_step_s']:.3f}: {own}; pose valid "
                       f"{r['pose_valid_frac']:.2f}")
    prof = ", ".join(f"{k.split('.')[-1]} {v:.3f}"
                     for k, v in sorted(r["profile_per_step_s"].items()))
    return head + f"\n{'':<20} TRL profiled blocks per step: {prof or 'n/a'}"


def _table(rows: list[dict[str, Any]]) -> str:
    """The kept (fastest-round) runs, fastest first."""
    lines = [f"{'variant':<20} {'s/iter':>7}  rounds (s/iter)      on-policy  timed out"]
    for r in sorted(rows, key=lambda r: (r["timed_out"], r["step_s"])):
        rounds = ", ".join(f"{x:.3f}" for x in r["rounds_step_s"])
        lines.append(f"{r['name']:<20} {r['step_s']:7.3f}  {rounds:<20} "
                     f"{str(r.get('on_policy', True)):<10} {r['timed_out']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
