"""Rollout throughput and weight sync of a RolloutPool: 1 and 2 workers on one node, 2 workers
across 2 nodes, merged and adapter-only LoRA sync.

Same work for every configuration: ``--prompts`` prompts (one 56 px image each) ×
``--generations`` samples, ``--new-tokens`` new tokens at most, each worker one CPU / one
intra-op thread. After ``--warmup`` steps, the median of ``--repeats`` steps is reported
(samples/s over the whole submit → gather wall time, plus the slowest worker's own ``generate``
time and the rest: scheduling, (de)serialisation, concatenation). Weight sync: a LoRA learner
(r = ``--lora-r``) on the same model syncs its merged layers (plain workers) or only its adapter
(workers holding the same LoRA structure), verified (XXH3-64 hash per tensor) every time; median of
``--repeats`` syncs after ``--warmup``.

Configurations:

* ``1w1n``, ``2w1n``: one local Ray node (posrft's own loopback-only local cluster);
* ``2w2n``: a 2-node cluster on this machine (two ``ray start`` nodes of 1 CPU each, see
  :mod:`posrft.rollout.devcluster`), workers placed with ``SPREAD`` (one per node); weights
  reach the second node through Ray's object transfer instead of shared memory.
* ``adapter`` pools (2 workers, one node and two nodes): the adapter-only sync, workers folding
  it into their kept base (merged-speed sampling); ``adapter_unmerged`` (one node): sampling
  through PEFT's unmerged adapter instead.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/rollout_scaling.py

Prints readable lines; the last line is one JSON object (samples_per_s per configuration,
speedups against 1 worker, sync GB/s and seconds merged vs adapter, ...).
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
            "nodes_used": runs[0].metrics["nodes_used"],
            "completion_tokens": pick("completion_tokens"), "worker_cpu_share": busy}


def _sync(pool, state, args) -> dict[str, float]:
    for i in range(args.warmup):
        pool.sync_weights(state, 1 + i)
    runs = [pool.sync_weights(state, 1 + args.warmup + i) for i in range(args.repeats)]
    pick = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {"bytes": pick("bytes"), "seconds": pick("seconds"), "gb_per_s": pick("gb_per_s"),
            "verify_s": pick("worker_verify_s_max") + pick("learner_verify_s")}


def _run(name, path, n, address, strategy, lora, state, prompts, images, args, results,
         merge_adapter=True):
    from posrft.rollout import RolloutPool

    start = time.perf_counter()
    with RolloutPool(path, num_workers=n, num_cpus_per_worker=1.0, ray_address=address,
                     placement_strategy=strategy, lora=lora,
                     merge_adapter=merge_adapter) as pool:
        print(f"[{name}] {n} worker(s) ready in {time.perf_counter() - start:.1f} s")
        r = _measure(pool, prompts, images, args)
        r["sync"] = s = _sync(pool, state, args)
    results[name] = r
    print(f"[{name}] {r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} tokens/s on "
          f"{int(r['nodes_used'])} node(s), step {r['rollout_s']:.3f} s (slowest worker "
          f"{r['slowest_worker_generate_s']:.3f} s, overhead {r['overhead_s'] * 1e3:.1f} ms; "
          f"workers on-CPU {100 * r['worker_cpu_share']:.0f}%); "
          f"{'adapter' if lora else 'merged'} sync {s['bytes'] / 1e6:.2f} MB in "
          f"{s['seconds'] * 1e3:.1f} ms = {s['gb_per_s']:.3f} GB/s (verify {s['verify_s'] * 1e3:.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lora-r", type=int, default=16)
    args = ap.parse_args()
    # Ray's default for new clusters; set before Ray reads it, so the driver can join the
    # token-authenticated 2-node cluster below
    os.environ.setdefault("RAY_AUTH_MODE", "token")

    import numpy as np
    import ray
    from PIL import Image

    from posrft.policy import PosePolicy, apply_lora, build_tiny_model
    from posrft.rollout import adapter_state_dict, init_ray, merged_state_dict
    from posrft.rollout.devcluster import DevCluster

    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), cores: {os.cpu_count()}")
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (56, 56, 3), dtype=np.uint8))
              for i in range(args.prompts)]
    prompts = [f"Describe the pose of person {i} in the picture." for i in range(args.prompts)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="posrft-bench-", dir="/tmp") as tmp:
        path = build_tiny_model(Path(tmp) / "tiny", seed=0)
        learner = apply_lora(PosePolicy.from_pretrained(path), r=args.lora_r,
                             alpha=2 * args.lora_r).eval()
        merged, adapter = merged_state_dict(learner), adapter_state_dict(learner)
        lora = learner.config.lora
        # one node: posrft's local cluster, one session for all pools
        root = str(Path(__file__).resolve().parents[1])
        start = time.perf_counter()
        init_ray(None, {"CPU": 2}, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}})
        print(f"local Ray up in {time.perf_counter() - start:.1f} s")
        try:
            for n in (1, 2):
                _run(f"{n}w1n", path, n, None, "PACK", None, merged, prompts, images, args,
                     results)
            _run("2w1n_adapter", path, 2, None, "PACK", lora, adapter, prompts, images, args,
                 results)
            _run("2w1n_adapter_unmerged", path, 2, None, "PACK", lora, adapter, prompts, images,
                 args, results, merge_adapter=False)
        finally:
            ray.shutdown()
        # two nodes of 1 CPU each: the same two workers, one per node
        start = time.perf_counter()
        nodes = [{"num_cpus": 1, "resources": {"nodeA": 1}},
                 {"num_cpus": 1, "resources": {"nodeB": 1}}]
        with DevCluster(nodes, Path(tmp) / "cluster", env={"OMP_NUM_THREADS": "1"}) as cluster:
            print(f"2-node cluster up in {time.perf_counter() - start:.1f} s")
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                _run("2w2n", path, 2, cluster.address, "SPREAD", None, merged, prompts, images,
                     args, results)
                _run("2w2n_adapter", path, 2, cluster.address, "SPREAD", lora, adapter, prompts,
                     images, args, results)
            finally:
                ray.shutdown()
    one, two, cross = results["1w1n"], results["2w1n"], results["2w2n"]
    speedup = two["samples_per_s"] / one["samples_per_s"]
    # If other processes took cores, the workers ran on a fraction of them; scaling the speedup
    # by the on-CPU shares estimates it on an idle machine (an estimate, labelled as such).
    projected = speedup * one["worker_cpu_share"] / two["worker_cpu_share"]
    load = os.getloadavg()[0]
    print(f"speedup 2 vs 1 workers: {speedup:.2f}x on one node ({projected:.2f}x projected for "
          f"uncontended cores), {cross['samples_per_s'] / one['samples_per_s']:.2f}x across 2 "
          f"nodes; adapter sync {results['2w1n_adapter']['sync']['bytes'] / 1e6:.2f} MB vs merged "
          f"{two['sync']['bytes'] / 1e6:.2f} MB (load after: {load:.2f})")
    out = {
        "samples_per_s": {k: v["samples_per_s"] for k, v in results.items()},
        "speedup_2w1n_vs_1w": speedup, "projected_speedup_uncontended": projected,
        "speedup_2w2n_vs_1w": cross["samples_per_s"] / one["samples_per_s"],
        "adapter_sampling_vs_merged_2w1n": (results["2w1n_adapter"]["samples_per_s"]
                                           / two["samples_per_s"]),
        "unmerged_adapter_sampling_vs_merged_2w1n": (
            results["2w1n_adapter_unmerged"]["samples_per_s"] / two["samples_per_s"]),
        "overhead_s": {k: v["overhead_s"] for k, v in results.items()},
        "worker_cpu_share": {k: v["worker_cpu_share"] for k, v in results.items()},
        "sync_bytes": {k: v["sync"]["bytes"] for k, v in results.items()},
        "sync_seconds": {k: v["sync"]["seconds"] for k, v in results.items()},
        "sync_gb_per_s": {k: v["sync"]["gb_per_s"] for k, v in results.items()},
        "sync_verify_s": {k: v["sync"]["verify_s"] for k, v in results.items()},
        "adapter_vs_merged_sync_seconds_2w1n": (results["2w1n_adapter"]["sync"]["seconds"]
                                               / two["sync"]["seconds"]),
        "adapter_vs_merged_sync_seconds_2w2n": (results["2w2n_adapter"]["sync"]["seconds"]
                                               / cross["sync"]["seconds"]),
        "prompts": args.prompts, "generations": args.generations, "new_tokens": args.new_tokens,
        "repeats": args.repeats, "lora_r": args.lora_r, "load_after": load,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
