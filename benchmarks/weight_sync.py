"""Weight-sync bandwidth of a RolloutPool: learner state dict → every worker via the object store,
verified (XXH3-64 hash per tensor, read back from each worker's parameters) — full models, and a LoRA
learner's merged vs adapter-only sync at ~100 M parameters.

Two models, both built offline with :func:`posrft.policy.build_tiny_model`: the tiny default one
and a ~100M-parameter one (``--m100-hidden`` / ``--m100-layers`` / ``--m100-intermediate``).

1. Full state dict of a plain ``PosePolicy`` (fp32) synced to ``--workers`` workers (1 CPU
   each) in buckets of ``--bucket-mb`` (and a bucket sweep for the 100M model), with
   verification; the 100M sync is also timed with verification off (its overhead).
2. A LoRA learner on the 100M model (r = ``--lora-r`` on every attention/MLP projection of the
   language model, projector trained as a ``modules_to_save`` copy, pose head): *merged* sync
   (``merged_state_dict``: every adapted layer as W₀ + s·BA, computed on the learner, to plain
   workers) vs *adapter* sync (``adapter_state_dict``: A, B, projector, head, to workers holding
   the same LoRA structure on the base they keep, folding it in as W₀ + s·BA themselves, or
   ``adapter_unmerged``: sampling through the unmerged adapter). All verified; per-update times
   include building the state dict on the learner.

After ``--warmup`` syncs, the median of ``--repeats`` syncs is reported. GB/s = bytes / wall
seconds of ``sync_weights`` (pack into buckets → ``ray.put`` → all workers fetch zero-copy,
copy into their parameters and checksum them), i.e. how fast one model update reaches *all*
workers. ``--two-nodes`` runs everything on a 2-node cluster on this machine (workers SPREAD,
one per node) so that the second worker's copy crosses Ray's object transfer.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/weight_sync.py [--two-nodes]

Prints readable lines; the last line is one JSON object (tiny_gb_per_s, m100_gb_per_s,
m100_verify_overhead, lora_merged_bytes, lora_adapter_bytes, lora_adapter_speedup, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

KEYS = ("seconds", "gb_per_s", "pack_s", "put_s", "push_s", "worker_load_s_max", "bytes",
        "buckets", "worker_verify_s_max", "learner_verify_s", "prepare_s", "total_s")


def _sync_stats(pool, state, bucket_mb: float, repeats: int, warmup: int,
                prepare=None) -> dict[str, float]:
    """Median of ``repeats`` syncs after ``warmup``; with ``prepare`` (the learner's state-dict
    function), each sync also builds the state dict first and ``total_s`` includes that."""
    version = pool.version
    runs = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        if prepare is not None:
            state = prepare()
        prep = time.perf_counter() - start
        res = pool.sync_weights(state, version + 1 + i, bucket_mb=bucket_mb)
        res.update(prepare_s=prep, total_s=time.perf_counter() - start)
        # warm-up also lets the object store touch its shared-memory pages once: a fresh Ray's
        # first puts of a few hundred MB page-fault and run several times slower
        if i >= warmup:
            runs.append(res)
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in KEYS}


def _line(name: str, label: str, s: dict[str, float]) -> None:
    print(f"[{name}] {label}: {s['bytes'] / 1e6:.1f} MB in {s['seconds'] * 1e3:.1f} ms = "
          f"{s['gb_per_s']:.2f} GB/s ({int(s['buckets'])} buckets; pack {s['pack_s'] * 1e3:.1f} "
          f"ms, put {s['put_s'] * 1e3:.1f} ms, push+load+verify {s['push_s'] * 1e3:.1f} ms; "
          f"worker verify {s['worker_verify_s_max'] * 1e3:.1f} ms, learner verify "
          f"{s['learner_verify_s'] * 1e3:.1f} ms)")


def _pool(path, args, **kw):
    from posrft.rollout import RolloutPool

    return RolloutPool(path, num_workers=args.workers, num_cpus_per_worker=1.0,
                       ray_address=args.address, placement_strategy=args.strategy, **kw)


def _bench_full(name: str, path: Path, args, bucket_sweep: list[float]) -> dict[str, object]:
    from posrft.policy import PosePolicy
    from posrft.rollout import merged_state_dict

    learner = PosePolicy.from_pretrained(path)
    state = merged_state_dict(learner, trainable_only=False)
    params = sum(p.numel() for p in learner.parameters())
    out: dict[str, object] = {"params": params}
    start = time.perf_counter()
    with _pool(path, args) as pool:
        print(f"[{name}] {params / 1e6:.1f}M parameters, {args.workers} workers ready in "
              f"{time.perf_counter() - start:.1f} s")
        for mb in bucket_sweep:
            out[f"bucket_{mb:g}mb"] = s = _sync_stats(pool, state, mb, args.repeats, args.warmup)
            _line(name, f"full, bucket {mb:g} MB, verified", s)
        pool.verify = False
        out["unverified"] = s = _sync_stats(pool, state, args.bucket_mb, args.repeats, args.warmup)
        _line(name, f"full, bucket {args.bucket_mb:g} MB, not verified", s)
    return out


def _bench_lora(path: Path, args) -> dict[str, dict[str, float]]:
    """One LoRA learner, three ways to get its update to the workers; times include building
    the state dict on the learner (the merge's matmuls for ``merged``)."""
    from posrft.policy import PosePolicy, apply_lora
    from posrft.rollout import adapter_state_dict, merged_state_dict

    learner = apply_lora(PosePolicy.from_pretrained(path), r=args.lora_r, alpha=2 * args.lora_r)
    learner.eval()
    total = sum(p.numel() for p in learner.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in learner.parameters() if p.requires_grad)
    print(f"[lora] r={args.lora_r}: {trainable / 1e6:.2f}M trainable on {total / 1e6:.1f}M frozen")
    lora = learner.config.lora
    out = {}
    for mode, state_of, kw in (
            ("merged", merged_state_dict, {}),
            ("adapter", adapter_state_dict, {"lora": lora}),  # folded into the kept base
            ("adapter_unmerged", adapter_state_dict, {"lora": lora, "merge_adapter": False})):
        start = time.perf_counter()
        with _pool(path, args, **kw) as pool:
            print(f"[lora/{mode}] {args.workers} workers ready in "
                  f"{time.perf_counter() - start:.1f} s")
            out[mode] = s = _sync_stats(pool, None, args.bucket_mb, args.repeats, args.warmup,
                                        prepare=lambda: state_of(learner))
            _line("lora", f"{mode} sync, verified", s)
            print(f"[lora] {mode}: learner's state dict {s['prepare_s'] * 1e3:.1f} ms + sync "
                  f"{s['seconds'] * 1e3:.1f} ms = {s['total_s'] * 1e3:.1f} ms per update")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--two-nodes", action="store_true",
                    help="run on a 2-node cluster on this machine, workers SPREAD")
    ap.add_argument("--m100-hidden", type=int, default=768)
    ap.add_argument("--m100-layers", type=int, default=15)
    ap.add_argument("--m100-intermediate", type=int, default=2048)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # to join the 2-node cluster

    import contextlib

    import ray

    from posrft.policy import build_tiny_model
    from posrft.rollout import init_ray
    from posrft.rollout.devcluster import DevCluster

    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), cores: {os.cpu_count()}")
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="posrft-bench-", dir="/tmp") as tmp:
        with contextlib.ExitStack() as stack:
            if args.two_nodes:
                nodes = [{"num_cpus": 1, "resources": {"nodeA": 1}},
                         {"num_cpus": 1, "resources": {"nodeB": 1}}]
                cluster = stack.enter_context(DevCluster(nodes, Path(tmp) / "cluster", env=env))
                args.address, args.strategy = cluster.address, "SPREAD"
                ray.init(address=cluster.address, log_to_driver=False)
            else:
                args.address, args.strategy = None, "PACK"
                init_ray(None, {"CPU": args.workers}, log_to_driver=False,
                         runtime_env={"env_vars": env})
            stack.callback(ray.shutdown)
            tiny = build_tiny_model(Path(tmp) / "tiny", seed=0)
            big = build_tiny_model(Path(tmp) / "m100", seed=0, hidden_size=args.m100_hidden,
                                   num_layers=args.m100_layers, num_heads=12, num_kv_heads=4,
                                   intermediate_size=args.m100_intermediate)
            res_tiny = _bench_full("tiny", tiny, args, [args.bucket_mb])
            sweep = sorted({16.0, args.bucket_mb, 256.0})
            res_big = _bench_full("m100", big, args, sweep)
            res_lora = _bench_lora(big, args)
    key = f"bucket_{args.bucket_mb:g}mb"
    tiny_s, big_s, raw = res_tiny[key], res_big[key], res_big["unverified"]
    merged, adapter = res_lora["merged"], res_lora["adapter"]
    load = os.getloadavg()[0]
    unmerged = res_lora["adapter_unmerged"]
    print(f"verification adds {100 * (big_s['seconds'] / raw['seconds'] - 1):.0f}% to a full "
          f"100M sync; adapter-only sync: {adapter['bytes'] / 1e6:.1f} MB vs merged "
          f"{merged['bytes'] / 1e6:.1f} MB; per update {merged['total_s'] * 1e3:.0f} ms merged, "
          f"{adapter['total_s'] * 1e3:.0f} ms adapter folded on the workers, "
          f"{unmerged['total_s'] * 1e3:.0f} ms adapter unmerged (load after: {load:.2f})")
    print(json.dumps({
        "tiny_gb_per_s": tiny_s["gb_per_s"], "m100_gb_per_s": big_s["gb_per_s"],
        "tiny_bytes": tiny_s["bytes"], "m100_bytes": big_s["bytes"],
        "tiny_params": res_tiny["params"], "m100_params": res_big["params"],
        "tiny_seconds": tiny_s["seconds"], "m100_seconds": big_s["seconds"],
        "m100_unverified_seconds": raw["seconds"],
        "m100_verify_overhead": big_s["seconds"] / raw["seconds"] - 1,
        "m100_phases_s": {k: big_s[k] for k in ("pack_s", "put_s", "push_s", "worker_load_s_max",
                                                "worker_verify_s_max", "learner_verify_s")},
        "m100_gb_per_s_by_bucket_mb": {f"{mb:g}": res_big[f"bucket_{mb:g}mb"]["gb_per_s"]
                                       for mb in sweep},
        "lora_r": args.lora_r, "lora_merged_bytes": merged["bytes"],
        "lora_adapter_bytes": adapter["bytes"],
        "lora_sync_seconds": {k: v["seconds"] for k, v in res_lora.items()},
        "lora_update_seconds": {k: v["total_s"] for k, v in res_lora.items()},
        "lora_prepare_seconds": {k: v["prepare_s"] for k, v in res_lora.items()},
        "lora_gb_per_s": {k: v["gb_per_s"] for k, v in res_lora.items()},
        "lora_adapter_speedup": merged["total_s"] / adapter["total_s"],
        "lora_unmerged_adapter_speedup": merged["total_s"] / unmerged["total_s"],
        "lora_bytes_ratio": merged["bytes"] / adapter["bytes"],
        "bucket_mb": args.bucket_mb, "workers": args.workers, "two_nodes": args.two_nodes,
        "repeats": args.repeats, "load_after": load,
    }))


if __name__ == "__main__":
    main()
