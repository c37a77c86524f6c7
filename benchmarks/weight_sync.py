"""Weight-sync bandwidth of a RolloutPool: learner state dict → every worker via the object store.

Two models, both built offline with :func:`posrft.policy.build_tiny_model`: the tiny default one
and a ~100M-parameter one (``--m100-hidden`` / ``--m100-layers`` / ``--m100-intermediate``).
For each, the full state dict of a plain ``PosePolicy`` (fp32) is synced to ``--workers`` workers
(1 CPU each) in buckets of ``--bucket-mb``; after ``--warmup`` syncs, the median of
``--repeats`` syncs is reported. GB/s = state-dict bytes / wall seconds of ``sync_weights``
(pack into buckets → ``ray.put`` → all workers fetch zero-copy and copy into their
parameters), i.e. how fast one model update reaches *all* workers. Also swept: bucket sizes for the 100M model.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/weight_sync.py

Prints readable lines; the last line is one JSON object (tiny_gb_per_s, m100_gb_per_s, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _sync_stats(pool, state, bucket_mb: float, repeats: int, warmup: int) -> dict[str, float]:
    # warm-up also lets the object store touch its shared-memory pages once: a fresh Ray's
    # first puts of a few hundred MB page-fault and run several times slower
    for i in range(warmup):
        pool.sync_weights(state, 1 + i, bucket_mb=bucket_mb)
    runs = [pool.sync_weights(state, 1 + warmup + i, bucket_mb=bucket_mb)
            for i in range(repeats)]
    pick = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {k: pick(k) for k in ("seconds", "gb_per_s", "pack_s", "put_s", "push_s",
                                 "worker_load_s_max", "bytes", "buckets")}


def _bench(name: str, path: Path, args, bucket_sweep: list[float]) -> dict[str, object]:
    from posrft.policy import PosePolicy
    from posrft.rollout import RolloutPool, merged_state_dict

    learner = PosePolicy.from_pretrained(path)
    state = merged_state_dict(learner, trainable_only=False)
    params = sum(p.numel() for p in learner.parameters())
    out: dict[str, object] = {"params": params}
    start = time.perf_counter()
    with RolloutPool(path, num_workers=args.workers, num_cpus_per_worker=1.0) as pool:
        print(f"[{name}] {params / 1e6:.1f}M parameters, {args.workers} workers ready in "
              f"{time.perf_counter() - start:.1f} s")
        for mb in bucket_sweep:
            s = _sync_stats(pool, state, mb, args.repeats, args.warmup)
            out[f"bucket_{mb:g}mb"] = s
            print(f"[{name}] bucket {mb:g} MB: {s['bytes'] / 1e6:.1f} MB in "
                  f"{s['seconds'] * 1e3:.1f} ms = {s['gb_per_s']:.2f} GB/s "
                  f"({int(s['buckets'])} buckets; pack "
                  f"{s['pack_s'] * 1e3:.1f} ms, put {s['put_s'] * 1e3:.1f} ms, push+load "
                  f"{s['push_s'] * 1e3:.1f} ms)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--m100-hidden", type=int, default=768)
    ap.add_argument("--m100-layers", type=int, default=15)
    ap.add_argument("--m100-intermediate", type=int, default=2048)
    args = ap.parse_args()

    import ray

    from posrft.policy import build_tiny_model

    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), cores: {os.cpu_count()}")
    root = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1"}})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = build_tiny_model(Path(tmp) / "tiny", seed=0)
            big = build_tiny_model(Path(tmp) / "m100", seed=0, hidden_size=args.m100_hidden,
                                   num_layers=args.m100_layers, num_heads=12, num_kv_heads=4,
                                   intermediate_size=args.m100_intermediate)
            res_tiny = _bench("tiny", tiny, args, [args.bucket_mb])
            sweep = sorted({16.0, args.bucket_mb, 256.0})
            res_big = _bench("m100", big, args, sweep)
    finally:
        ray.shutdown()
    key = f"bucket_{args.bucket_mb:g}mb"
    tiny_s, big_s = res_tiny[key], res_big[key]
    load = os.getloadavg()[0]
    print(f"load after: {load:.2f}")
    print(json.dumps({
        "tiny_gb_per_s": tiny_s["gb_per_s"], "m100_gb_per_s": big_s["gb_per_s"],
        "tiny_bytes": tiny_s["bytes"], "m100_bytes": big_s["bytes"],
        "tiny_params": res_tiny["params"], "m100_params": res_big["params"],
        "tiny_seconds": tiny_s["seconds"], "m100_seconds": big_s["seconds"],
        "m100_phases_s": {k: big_s[k] for k in ("pack_s", "put_s", "push_s", "worker_load_s_max")},
        "m100_gb_per_s_by_bucket_mb": {f"{mb:g}": res_big[f"bucket_{mb:g}mb"]["gb_per_s"]
                                       for mb in sweep},
        "bucket_mb": args.bucket_mb, "workers": args.workers, "repeats": args.repeats,
        "load_after": load,
    }))


if __name__ == "__main__":
    main()
