"""The pretrained policy (SmolLM2-135M-Instruct, ± DINOv2-small) on this machine's CPU cores.

Part 1, in this process (``torch.set_num_threads(--threads)``), median of ``--repeats`` after
one warm-up, on ``--prompts`` text→pose prompts × ``--generations`` completions of
``--max-tokens`` new tokens (no ``<POSE>``/EOS bias: an untuned model writes until the limit,
so every row does the same number of tokens):

* rollout tokens/s: :meth:`PosePolicy.rollout` (``generate`` with KV cache + one scoring
  forward + pose sampling), generated tokens / wall time;
* update tokens/s: one learner micro-batch of those rollouts (``--micro-batch`` rows):
  ``forward_logprobs`` with grad + backward of a token + pose log-likelihood loss, sequence
  tokens (prompt + completion, padding excluded) / wall time, for full fine-tuning and for
  LoRA (r 16, every LM linear layer) on the frozen base;
* the same in bf16 (weights loaded in bf16; LoRA), with the largest |Δ log-prob| against fp32
  on the same tokens, so its speed is weighed against its error;
* the LLaVA model (``--vision dinov2-small``, 112 px → 64 image tokens): rollout and LoRA
  update with one picture per prompt.

Part 2, one HyGRPO iteration against TRL's ``GRPOTrainer`` on the same text-only SmolLM2 policy
folder, same batch (``--prompts`` × G, ``--max-tokens``, micro-batch, β, LoRA r 16 on both
sides, so both references are "adapter off"), each in a fresh subprocess with
``OMP_NUM_THREADS=--threads``, ``--rounds`` rounds in alternating order (fastest kept): posrft
(sampling in the learner process, and with 2 Ray rollout workers, its default) through its
public entry
``posrft.train.hygrpo.run_hygrpo(HyGRPOConfig(...))`` (default rewards: format → text, joint →
pose), TRL with the format reward. Timed from outside alike (arrival of one line per finished
step, median period after ``--warmup`` steps); posrft's own phase times (time/rollout,
time/reward, time/ref, time/update, time/sync) are printed next to it, and ``--profile`` adds a
cProfile of the posrft child (top functions by cumulative time) to show where its time goes.

    PYTHONPATH=. nice .venv/bin/python benchmarks/pretrained.py            # ~10-15 min, 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/pretrained.py --skip-iteration

Prints readable lines; the last line is one JSON object (``ratio`` = posrft / TRL s/iteration).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/rewards.py would shadow the top-level `rewards` package: import from the root
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# --------------------------------------------------------------------------- part 1
def _prompts(data_dir: Path, n: int, images: bool) -> tuple[list, list | None]:
    from datasets import load_from_disk

    rows = load_from_disk(str(data_dir))["train"].select(range(n))
    prompts = [r["prompt"] for r in rows]
    for p in prompts:  # Arrow stores an image part as {"type": "image", "text": None}
        for m in p:
            if isinstance(m["content"], list):
                m["content"] = [{k: v for k, v in part.items() if v is not None} for part in m["content"]]
    pics = [r["images"][0] for r in rows] if images else None
    return prompts, pics


def _update(policy: Any, batch: Any, micro: int) -> Callable[[], float]:
    """One learner micro-batch: log-probs with grad, loss, backward; returns the tokens seen."""
    rows = batch.select(list(range(min(micro, len(batch)))))
    params = [p for p in policy.parameters() if p.requires_grad]

    def step() -> float:
        out = policy.forward_logprobs(rows.prompt_ids, rows.prompt_mask, rows.completion_ids,
                                      rows.completion_mask, rows.pose, pixel_values=rows.pixel_values,
                                      temperature=batch.temperature)
        mask = rows.completion_mask.float()
        loss = -(out.token_logps * mask).sum() / mask.sum() - out.pose_logp.mean() * 1e-3
        loss.backward()
        for p in params:
            p.grad = None
        return float(rows.prompt_mask.sum() + rows.completion_mask.sum())

    return step


def speed_rows(text_dir: Path, mm_dir: Path | None, data: dict[str, Path],
               args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from posrft.policy.lora import apply_lora
    from posrft.policy.model import PosePolicy

    rows: list[dict[str, Any]] = []

    def measure(name: str, folder: Path, dtype: Any, lora: bool, images: bool,
                reference: Any = None) -> Any:
        policy = PosePolicy.from_pretrained(folder, dtype=dtype)
        prompts, pics = _prompts(data["image2pose" if images else "text2pose"], args.prompts, images)
        roll = lambda: policy.rollout(prompts, pics, num_generations=args.generations,  # noqa: E731
                                      max_new_tokens=args.max_tokens, seed=0)
        t_roll, batch = _median_time(roll, args.repeats)
        gen_tokens = float(batch.completion_mask.sum())
        if lora:
            apply_lora(policy, r=16, alpha=32)
        else:
            policy.requires_grad_(True)
            inner = getattr(policy.hf_model, "model", None)
            if getattr(inner, "vision_tower", None) is not None:
                inner.vision_tower.requires_grad_(False)  # vision tower frozen by default
        step = _update(policy, batch, args.micro_batch)
        t_upd, tokens = _median_time(step, args.repeats)
        trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        row = {"name": name, "dtype": str(dtype).replace("torch.", ""), "lora": lora,
               "images": images, "rollout_s": round(t_roll, 3),
               "rollout_tokens_per_s": round(gen_tokens / t_roll, 1),
               "generated_tokens": int(gen_tokens), "prompt_len": int(batch.prompt_ids.shape[1]),
               "update_s": round(t_upd, 3), "update_tokens_per_s": round(tokens / t_upd, 1),
               "update_tokens": int(tokens), "trainable_params": trainable}
        if reference is not None:  # same completions under fp32: how far off is bf16?
            with torch.no_grad():
                ours = policy.forward_logprobs(reference.prompt_ids, reference.prompt_mask,
                                               reference.completion_ids, reference.completion_mask)
            mask = reference.completion_mask.bool()
            row["max_abs_logp_err_vs_fp32"] = round(float(
                (ours.token_logps - reference.token_logps)[mask].abs().max()), 4)
            row["mean_abs_logp_err_vs_fp32"] = round(float(
                (ours.token_logps - reference.token_logps)[mask].abs().mean()), 4)
        print(f"{name:<22} rollout {row['rollout_tokens_per_s']:7.1f} tok/s ({t_roll:.2f} s for "
              f"{int(gen_tokens)} tokens, prompt {row['prompt_len']})   update "
              f"{row['update_tokens_per_s']:7.1f} tok/s ({t_upd:.2f} s, {int(tokens)} tokens, "
              f"{trainable / 1e6:.2f} M trainable)"
              + (f"   |Δlogp| vs fp32 max {row['max_abs_logp_err_vs_fp32']}" if reference else ""),
              flush=True)
        rows.append(row)
        return batch

    ref = measure("text fp32 full", text_dir, torch.float32, False, False)
    measure("text fp32 lora", text_dir, torch.float32, True, False)
    measure("text bf16 lora", text_dir, torch.bfloat16, True, False, reference=ref)
    if mm_dir is not None:
        measure("llava fp32 lora", mm_dir, torch.float32, True, True)
    return rows


# --------------------------------------------------------------------------- part 2
def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def _watch(cmd: list[str], env: dict[str, str], log: Path, progress: Path, warmup: int,
           timeout: float) -> dict[str, Any]:
    """Run ``cmd``; time the arrival of each line of ``progress`` (one per finished step)."""
    t0 = time.perf_counter()
    arrivals: list[float] = []
    timed_out = False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
        while True:
            done = proc.poll() is not None
            if progress.is_file():
                lines = progress.read_text().count("\n")
                arrivals += [time.perf_counter()] * (lines - len(arrivals))
            if done:
                break
            if time.perf_counter() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                timed_out = True
                break
            time.sleep(0.01)
    if proc.returncode != 0 and not timed_out:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); last lines "
                           f"of {log}:\n" + "".join(open(log).readlines()[-30:]))
    periods = [b - a for a, b in zip(arrivals[warmup - 1:], arrivals[warmup:])]
    if not periods:
        raise RuntimeError(f"{log}: fewer than {warmup + 1} steps finished "
                           f"({'timed out' if timed_out else 'ended'} after {len(arrivals)})")
    return {"step_s": statistics.median(periods), "step_s_min": min(periods),
            "step_s_max": max(periods), "steps_timed": len(periods), "timed_out": timed_out,
            "startup_s": arrivals[0] - t0 if arrivals else None}


def posrft_fields(model: str, data: Path, out: Path, args: argparse.Namespace,
                  workers: int = 0) -> dict[str, Any]:
    samples = args.prompts * args.generations
    return {
        "model_name_or_path": model, "dataset_path": str(data), "output_dir": str(out),
        "max_steps": args.warmup + args.steps, "per_device_train_batch_size": args.micro_batch,
        "gradient_accumulation_steps": samples // args.micro_batch,
        "num_generations": args.generations, "max_completion_length": args.max_tokens,
        "temperature": 1.0, "top_p": 1.0, "beta": args.beta, "learning_rate": args.lr,
        "loss_type": "grpo", "scale_rewards": "group", "use_peft": True, "lora_r": 16,
        "lora_alpha": 32, "report_to": ["none"], "logging_steps": 1, "seed": 0,
        "num_rollout_workers": workers, "worker_num_cpus": 1.0,
    }


def posrft_child(spec: dict[str, Any]) -> None:
    """In a fresh process: the public learner entry, optionally under cProfile."""
    from posrft.train.config import HyGRPOConfig
    from posrft.train.hygrpo import run_hygrpo

    config = HyGRPOConfig(**spec["fields"])
    if not spec.get("profile"):
        run_hygrpo(config)
        return
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run_hygrpo(config)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(40)
    out.write("\n---- by own time\n")
    stats.sort_stats("tottime").print_stats(20)
    Path(spec["profile"]).write_text(out.getvalue())


def trl_child(spec: dict[str, Any]) -> None:
    """In a fresh process: TRL ``GRPOTrainer`` with LoRA (same r/α/targets), format reward."""
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from posrft.policy.lora import DEFAULT_TARGETS
    from rewards.format import format_reward

    class StepLine(TrainerCallback):
        def on_step_end(self, *a, **k):
            with open(spec["progress"], "a") as f:
                f.write("step\n")

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
        dataloader_num_workers=0, disable_dropout=True)
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(DEFAULT_TARGETS),
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[format_reward], args=cfg,
                          train_dataset=load_from_disk(spec["data"])["train"],
                          processing_class=tokenizer, peft_config=lora, callbacks=[StepLine()])
    trainer.train()


def iteration(text_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """posrft (each ``--posrft-workers`` setting) and TRL, ``--rounds`` times in alternating
    order; per variant the fastest round. ``ratio``: fastest posrft / TRL."""
    variants = [f"posrft-w{w}" for w in args.posrft_workers.split(",")] + ["trl"]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for k in range(args.rounds):
        for name in (variants if k % 2 == 0 else variants[::-1]):
            out = work / f"{name}_r{k}"
            if name.startswith("posrft"):
                fields = posrft_fields(str(text_dir), data, out, args, int(name[len("posrft-w"):]))
                spec: dict[str, Any] = {"fields": fields}
                progress, side = out / "metrics.jsonl", "posrft"
            else:
                progress, side = work / f"trl_r{k}.steps", "trl"
                spec = dict(model=str(text_dir), data=str(data), output_dir=str(out),
                            prompts=args.prompts, generations=args.generations,
                            max_tokens=args.max_tokens, micro_batch=args.micro_batch,
                            beta=args.beta, lr=args.lr, warmup=args.warmup, steps=args.steps,
                            progress=str(progress))
            cmd = [sys.executable, __file__, f"--{side}-child", json.dumps(spec)]
            r = _watch(cmd, _env(args.threads), work / f"{name}_r{k}.log", progress,
                       args.warmup, args.variant_timeout)
            if side == "posrft":
                rows = [json.loads(x) for x in progress.read_text().splitlines()][args.warmup:]
                for key in ("time/step", "time/rollout", "time/reward", "time/ref",
                            "time/update", "time/sync"):
                    vals = [row[key] for row in rows if key in row]
                    if vals:
                        r["own_" + key.split("/")[1] + "_s"] = round(statistics.median(vals), 3)
            r.update(name=name, round=k, load=round(os.getloadavg()[0], 2))
            print(f"{name:<10} round {k}: {r['step_s']:.2f} s/iteration (min {r['step_s_min']:.2f},"
                  f" max {r['step_s_max']:.2f}, load {r['load']})"
                  + "".join(f", {k2[4:-2]} {v:.2f}" for k2, v in r.items() if k2.startswith("own_")),
                  flush=True)
            results[name].append(r)
    profile_text = None
    if args.profile:
        prof = work / "profile.txt"
        workers = int(args.posrft_workers.split(",")[0])
        fields = posrft_fields(str(text_dir), data, work / "posrft_profile", args, workers)
        subprocess.run([sys.executable, __file__, "--posrft-child",
                        json.dumps({"fields": fields, "profile": str(prof)})],
                       env=_env(args.threads), cwd=ROOT, check=True, capture_output=True)
        profile_text = prof.read_text()
    best = {name: min(rs, key=lambda r: r["step_s"]) for name, rs in results.items()}
    posrft_best = min((r for n, r in best.items() if n != "trl"), key=lambda r: r["step_s"])
    return {"variants": best, "posrft_variant": posrft_best["name"],
            "posrft_s": round(posrft_best["step_s"], 3), "trl_s": round(best["trl"]["step_s"], 3),
            "rounds": {n: [round(r["step_s"], 3) for r in rs] for n, rs in results.items()},
            "ratio": round(posrft_best["step_s"] / best["trl"]["step_s"], 3),
            "ratio_per_variant": {n: round(r["step_s"] / best["trl"]["step_s"], 3)
                                  for n, r in best.items() if n != "trl"},
            "profile": profile_text}


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--posrft-workers", default="0,2",
                    help="posrft variants: Ray rollout workers (0 = sampling in the learner)")
    ap.add_argument("--variant-timeout", type=float, default=900.0)
    ap.add_argument("--skip-iteration", action="store_true", help="part 1 only")
    ap.add_argument("--skip-speed", action="store_true", help="part 2 only")
    ap.add_argument("--no-vision", action="store_true", help="part 1 without the LLaVA model")
    ap.add_argument("--profile", action="store_true", help="cProfile the posrft iteration")
    ap.add_argument("--work", default=None, help="keep files here (default: a temp folder)")
    ap.add_argument("--posrft-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--trl-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.posrft_child:
        return posrft_child(json.loads(args.posrft_child))
    if args.trl_child:
        return trl_child(json.loads(args.trl_child))
    if (args.prompts * args.generations) % args.micro_batch:
        raise ValueError("--prompts × --generations must be a multiple of --micro-batch")

    import torch

    torch.set_num_threads(args.threads)
    from posrft.data.synth import build_image2pose, build_text2pose
    from posrft.policy.model import PosePolicy
    from posrft.policy.pretrained import init_pretrained

    print(f"start: {os.getloadavg()[0]:.2f} load, {os.cpu_count()} cores, {args.threads} threads")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        text = init_pretrained(work / "text", "smollm2", "none")
        result["init_text_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        mm = None if args.no_vision else init_pretrained(work / "mm", "smollm2", "dinov2-small")
        result["init_mm_s"] = None if mm is None else round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        PosePolicy.from_pretrained(text["out"])
        result["load_text_s"] = round(time.perf_counter() - t, 2)
        result["parameters"] = {"text": text["parameters"], "mm": mm and mm["parameters"],
                                "pose_head": text["pose_head_parameters"]}
        print(f"init-pretrained text {result['init_text_s']} s, llava {result['init_mm_s']} s "
              f"(cached bases); PosePolicy load {result['load_text_s']} s; parameters "
              f"{json.dumps(result['parameters'])}")
        data = {"text2pose": work / "t2p", "image2pose": work / "i2p"}
        build_text2pose(max(64, args.prompts), 8, 8, seed=0, out_dir=data["text2pose"])
        if mm is not None:
            build_image2pose(max(16, args.prompts), 4, 4, seed=0, out_dir=data["image2pose"])
        if not args.skip_speed:
            result["speed"] = speed_rows(Path(text["out"]), mm and Path(mm["out"]), data, args)
        if not args.skip_iteration:
            it = iteration(Path(text["out"]), data["text2pose"], work, args)
            profile = it.pop("profile")
            if profile:
                print("---- cProfile of the posrft iteration process\n" + profile)
            result["iteration"] = it
            result["ratio"] = it["ratio"]
            print(f"HyGRPO iteration: posrft ({it['posrft_variant']}) {it['posrft_s']:.2f} s, TRL "
                  f"{it['trl_s']:.2f} s, ratio {it['ratio']:.2f}")
    result.update(prompts=args.prompts, G=args.generations, max_tokens=args.max_tokens,
                  micro_batch=args.micro_batch, beta=args.beta, threads=args.threads,
                  end_load=round(os.getloadavg()[0], 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
