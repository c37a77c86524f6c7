"""A short SFT with the pretrained table's settings plus overrides, scored on val: a setting's pilot.

    python benchmarks/sft_pilot.py --start WORK/image2pose/start --data WORK/image2pose/data \\
        --out runs/pilot/joint10 --steps 200 pose_joint_loss_weight=10

Overrides are ``SFTConfig`` fields as ``name=JSON`` (``lora_layers=null``, ``pose_loss="l2"``).
Resumable (checkpoints every 50 steps; a larger ``--steps`` continues a finished pilot). Prints
the val pose metrics (100 rows; greedy answers, pose = μ) as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from pose_rft_table import SETTINGS


def parse_overrides(items: list[str]) -> dict:
    """``["name=JSON", ...]`` → ``{name: value}``; an item without ``=`` stops the run, naming it."""
    over = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r}: expected FIELD=JSON")
        over[key] = json.loads(value)
    return over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", required=True, help="policy folder to fine-tune")
    ap.add_argument("--data", required=True, help="DatasetDict with train and val")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval", type=int, default=100, help="val rows scored")
    ap.add_argument("--max-new-tokens", type=int, default=32,
                    help="answer length at eval (answers that describe the body need ~96)")
    ap.add_argument("overrides", nargs="*", metavar="FIELD=JSON")
    args = ap.parse_args()

    from posrft.eval.pose_eval import evaluate_pose_policy
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    over = parse_overrides(args.overrides)
    cfg = {**SETTINGS["pretrained"]["sft"], "max_steps": args.steps, **over}
    t = time.perf_counter()
    run_sft(SFTConfig(model_name_or_path=args.start, dataset_path=args.data, output_dir=args.out, seed=0,
                      report_to=["none"], logging_steps=25, save_steps=50, save_total_limit=1,
                      resume_from_checkpoint="latest", **cfg))  # fmt: skip
    train_s = time.perf_counter() - t
    val = evaluate_pose_policy(os.path.join(args.out, "final"), args.data, split="val", num_samples=args.eval,
                               max_new_tokens=args.max_new_tokens)  # fmt: skip
    print(json.dumps({"overrides": over, "steps": args.steps, "train_s": round(train_s, 1), "val": val}))


if __name__ == "__main__":
    main()
