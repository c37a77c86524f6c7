"""What nested pose samples cost: HyGRPO step time and pose samples/s against K.

    python benchmarks/pose_samples.py [--k 1 4 16 64] [--steps 4] [--rounds 2]

One process, one thread, the tiny offline text→pose model after a short SFT (so answers carry a
``<POSE>``), in-process rollouts. Every K runs the same text work (``--prompts`` × G
``--generations`` completions per step); only the number of poses drawn from each answer's
Gaussian, scored by the joint rewards (body-model FK, Procrustes) and entered in the pose
surrogate changes. The K values run in alternating order over ``--rounds`` rounds (other jobs
share the cores) and each keeps its fastest round; a round's time is the median of
``time/step`` over its steps after the first. Ratios are against K = 1 measured in the same run.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from hygrpo_study import REWARDS  # the study's rewards: format, pelvis and Procrustes joints

PHASES = ("time/step", "time/rollout", "time/reward", "time/update")


def _run(start: Path, data: Path, out: Path, k: int, args: argparse.Namespace) -> dict[str, float]:
    from posrft.train.config import HyGRPOConfig
    from posrft.train.hygrpo import run_hygrpo

    run_hygrpo(HyGRPOConfig(
        model_name_or_path=str(start), dataset_path=str(data), output_dir=str(out), seed=0,
        rewards=REWARDS, num_rollout_workers=0, report_to=["none"], log_completions=False,
        max_steps=args.steps + 1, learning_rate=1e-4, logging_steps=1, save_steps=10_000,
        per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
        num_pose_samples=k, max_completion_length=32, beta=0.0, pose_beta=0.0, pose_sigma="fixed",
        pose_sigma_value=0.05, per_joint_credit=True))  # fmt: skip
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    row = {p: statistics.median(r[p] for r in log) for p in PHASES}
    row["pose_samples"] = statistics.mean(r["pose/samples"] for r in log)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--generations", type=int, default=4)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from posrft.data.synth import synth_dataset
    from posrft.policy.tiny import build_tiny_text_model
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data, base, start = work / "data", work / "tiny", work / "sft"
        synth_dataset("text2pose", n=400, out=data, seed=0)
        build_tiny_text_model(base, seed=0)
        run_sft(SFTConfig(model_name_or_path=str(base), dataset_path=str(data), output_dir=str(start),
                          max_steps=60, learning_rate=1e-3, per_device_train_batch_size=16,
                          report_to=["none"], logging_steps=100))  # fmt: skip
        best: dict[int, dict[str, float]] = {}
        for rnd in range(args.rounds):
            for k in args.k if rnd % 2 == 0 else reversed(args.k):
                row = _run(start / "final", data, work / f"rl_k{k}_r{rnd}", k, args)
                if k not in best or row["time/step"] < best[k]["time/step"]:
                    best[k] = row
    base_k = args.k[0]
    print(f"{'K':>4} {'pose samples/step':>18} {'s/step':>8} {'ratio':>6} {'pose samples/s':>15} "
          f"{'rollout s':>10} {'reward s':>9} {'update s':>9}")
    rows = {}
    for k in args.k:
        r = best[k]
        rows[k] = {**r, "step_ratio": r["time/step"] / best[base_k]["time/step"],
                   "pose_samples_per_s": r["pose_samples"] / r["time/step"]}
        print(f"{k:>4} {r['pose_samples']:>18.0f} {r['time/step']:>8.2f} {rows[k]['step_ratio']:>6.2f} "
              f"{rows[k]['pose_samples_per_s']:>15.1f} {r['time/rollout']:>10.2f} {r['time/reward']:>9.2f} "
              f"{r['time/update']:>9.2f}")
    print(json.dumps({"baseline_k": base_k, "text_rollouts_per_step": args.prompts * args.generations,
                      "rows": rows}))


if __name__ == "__main__":
    main()
