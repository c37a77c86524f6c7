"""Joints-only FK throughput: posrft.body.fk vs smplx.lbs.batch_rigid_transform, per core.

Both get the same inputs (random SMPL rotations, the stand-in's rest skeleton, the SMPL tree) at
the same batch size and thread count; each timing is the median of ``--repeats`` runs after
``--warmup`` runs, the two methods interleaved so that machine drift hits both alike.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fk.py --batch 4096

Prints readable lines, then as its last line one JSON object (poses/s of both, their ratio,
the max abs difference of the joints, batch, threads, dtype, order).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--order",
        choices=["interleaved", "blocked"],
        default="interleaved",
        help="alternate the two methods every repeat, or time all smplx runs then all posrft runs",
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import roma
    import torch
    from smplx.lbs import batch_rigid_transform

    from posrft.body.fk import JointFK
    from posrft.body.formats import SMPL24_PARENTS
    from posrft.body.standin import standin_rest_joints

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    rotmats = roma.random_rotmat((args.batch, 24), dtype=dtype, generator=gen)  # uniform on SO(3)
    rest = torch.as_tensor(standin_rest_joints(), dtype=dtype)
    parents = torch.tensor(SMPL24_PARENTS)
    rest_b = rest.expand(args.batch, 24, 3)
    fk = JointFK(SMPL24_PARENTS, rest).to(dtype)

    def run_smplx() -> torch.Tensor:
        return batch_rigid_transform(rotmats, rest_b, parents, dtype=dtype)[0]

    def run_posrft() -> torch.Tensor:
        return fk(rotmats)

    with torch.no_grad():
        err = (run_posrft() - run_smplx()).abs().max().item()
        for _ in range(args.warmup):
            run_smplx()
            run_posrft()
        times: dict[str, list[float]] = {"smplx": [], "posrft": []}
        methods = (("smplx", run_smplx), ("posrft", run_posrft))
        if args.order == "interleaved":
            schedule = [m for _ in range(args.repeats) for m in methods]
        else:
            schedule = [m for m in methods for _ in range(args.repeats)]
        for name, fn in schedule:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: args.batch / v for k, v in med.items()}
    print(
        f"batch {args.batch}, {args.threads} thread(s), {args.dtype}, "
        f"median of {args.repeats} ({args.order})"
    )
    for name, label in (("smplx", "smplx.lbs.batch_rigid_transform"), ("posrft", "posrft JointFK")):
        print(f"{label:32s} {med[name] * 1e3:8.3f} ms {rate[name]:12.0f} poses/s")
    print(f"speed-up {rate['posrft'] / rate['smplx']:.2f}x, max |joints difference| {err:.2e} m")
    print(json.dumps({
        "posrft_poses_per_s": round(rate["posrft"], 1),
        "smplx_poses_per_s": round(rate["smplx"], 1),
        "ratio": round(rate["posrft"] / rate["smplx"], 3),
        "max_abs_err": err,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "order": args.order,
        "torch": torch.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
