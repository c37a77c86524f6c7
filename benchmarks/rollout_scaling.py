"""Rollout throughput of a RolloutPool with 1 and 2 workers on the tiny offline model.

Same work for both: ``--prompts`` prompts (one 56 px image each) × ``--generations`` samples,
``--new-tokens`` new tokens at most, each worker one CPU / one intra-op thread. After
``--warmup`` steps, the median of ``--repeats`` steps is reported (samples/s over the whole
submit → gather wall time, plus the slowest worker's own ``generate`` time and the rest:
scheduling, (de)serialisation, concatenation). One Ray session serves both pools.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/rollout_scaling.py

Prints readable lines; the last line is one JSON object (samples_per_s_1, samples_per_s_2,
speedup_2_vs_1, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _measure(pool, prompts, images, args) -> dict[str, float]:
    sampling = {"max_new_tokens": args.new_tokens, "temperature": 1.0}
    for i in range(args.warmup):
        pool.generate(prompts, images, num_generations=args.generations, sampling=sampling, seed=i)
    runs = [pool.generate(prompts, images, num_generations=args.generations, sampling=sampling,
                          seed=100 + i) for i in range(args.repeats)]
    pick = lambda key: statistics.median(r.metrics[key] for r in runs)  # noqa: E731
    # share of the workers' wall time spent on a CPU (1.0 = never waiting for a core)
    busy = statistics.median(sum(w["cpu_s"] for w in r.per_worker)
                             / sum(w["generate_s"] for w in r.per_worker) for r in runs)
    return {"samples_per_s": pick("samples_per_s"), "tokens_per_s": pick("tokens_per_s"),
            "rollout_s": pick("rollout_s"),
            "slowest_worker_generate_s": pick("slowest_worker_generate_s"),
            "overhead_s": pick("overhead_s"), "samples": runs[0].metrics["samples"],
            "completion_tokens": pick("completion_tokens"), "worker_cpu_share": busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import ray
    from PIL import Image

    from posrft.policy import build_tiny_model
    from posrft.rollout import RolloutPool

    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), cores: {os.cpu_count()}")
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (56, 56, 3), dtype=np.uint8))
              for i in range(args.prompts)]
    prompts = [f"Describe the pose of person {i} in the picture." for i in range(args.prompts)]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(Path(tmp) / "tiny", seed=0)
        start = time.perf_counter()
        # one session for both pools; PYTHONPATH lets the workers import this checkout
        root = str(Path(__file__).resolve().parents[1])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}})
        print(f"ray.init: {time.perf_counter() - start:.1f} s")
        try:
            for n in (1, 2):
                start = time.perf_counter()
                with RolloutPool(path, num_workers=n, num_cpus_per_worker=1.0) as pool:
                    print(f"{n} worker(s) ready in {time.perf_counter() - start:.1f} s")
                    results[str(n)] = r = _measure(pool, prompts, images, args)
                print(f"{n} worker(s): {r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} "
                      f"tokens/s, step {r['rollout_s']:.3f} s (slowest worker generate "
                      f"{r['slowest_worker_generate_s']:.3f} s, overhead "
                      f"{r['overhead_s'] * 1e3:.1f} ms; workers on-CPU "
                      f"{100 * r['worker_cpu_share']:.0f}% of their time)")
        finally:
            ray.shutdown()
    speedup = results["2"]["samples_per_s"] / results["1"]["samples_per_s"]
    # If other processes took cores, the workers ran on a fraction of them; scaling the speedup
    # by the on-CPU shares estimates it on an idle machine (an estimate, labelled as such).
    projected = speedup * results["1"]["worker_cpu_share"] / results["2"]["worker_cpu_share"]
    load = os.getloadavg()[0]
    print(f"speedup 2 vs 1 workers: {speedup:.2f}x measured, {projected:.2f}x projected for "
          f"uncontended cores (load after: {load:.2f})")
    print(json.dumps({
        "samples_per_s_1": results["1"]["samples_per_s"],
        "samples_per_s_2": results["2"]["samples_per_s"],
        "speedup_2_vs_1": speedup, "projected_speedup_uncontended": projected, "tokens_per_s_1": results["1"]["tokens_per_s"],
        "tokens_per_s_2": results["2"]["tokens_per_s"], "overhead_s_1": results["1"]["overhead_s"],
        "overhead_s_2": results["2"]["overhead_s"], "samples": results["1"]["samples"],
        "worker_cpu_share_1": results["1"]["worker_cpu_share"],
        "worker_cpu_share_2": results["2"]["worker_cpu_share"],
        "prompts": args.prompts, "generations": args.generations, "new_tokens": args.new_tokens,
        "repeats": args.repeats, "load_after": load,
    }))


if __name__ == "__main__":
    main()
