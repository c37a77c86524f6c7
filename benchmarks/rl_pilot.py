"""A HyGRPO run with the pretrained table's (c) settings plus overrides, scored on val: an RL setting's pilot.

    OMP_NUM_THREADS=2 PYTHONPATH=.:benchmarks python benchmarks/rl_pilot.py --task image2pose \\
        --start WORK/image2pose/sft_gaussian/final --data WORK/image2pose/data \\
        --out runs/pilot/lr4e-4 --steps 60 learning_rate=4e-4

Overrides are ``HyGRPOConfig`` fields as ``name=JSON`` (``pose_sigma_value=0.1``). The rewards are
the table's (``pose_rft_table.task_rewards``); text→pose needs ``--reward-model`` (the table's
``retrieval_reward``) and scores mRecall with ``--evaluator`` (its ``retrieval_eval``).

Resumable, and a larger ``--steps`` continues a finished pilot (the learning rate is constant), so
``--steps 60`` then ``--steps 120`` gives both points of one run. Prints the val metrics (100 rows,
greedy answers, pose = μ) as the last line, one JSON object. Tune with this on val only. Give it
the threads the table's stages get (``OMP_NUM_THREADS`` = the cores), or its time is not theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from pose_rft_table import SETTINGS, TASKS, compact, task_rewards
from sft_pilot import parse_overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=TASKS)
    ap.add_argument("--start", required=True, help="the SFT policy folder RL starts from")
    ap.add_argument("--data", required=True, help="DatasetDict with train and val")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, help="RL steps (default: the table's for --task)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reward-model", help="text→pose: the semantic reward's retrieval model")
    ap.add_argument("--evaluator", help="text→pose: the retrieval model that scores mRecall")
    ap.add_argument("--eval", type=int, default=SETTINGS["pretrained"]["eval_val"], help="val rows scored")
    ap.add_argument("overrides", nargs="*", metavar="FIELD=JSON")
    args = ap.parse_args()
    if args.task == "text2pose" and not args.reward_model:
        ap.error("--task text2pose needs --reward-model (the semantic reward's retrieval model)")

    from posrft.eval.evaluate import evaluate_model
    from posrft.train.config import HyGRPOConfig
    from posrft.train.hygrpo import run_hygrpo

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    over = parse_overrides(args.overrides)
    table = {**SETTINGS["pretrained"]["rl"], **SETTINGS["pretrained"].get(args.task, {}).get("rl", {})}
    steps = args.steps or table["max_steps"]
    cfg = {**table, "rewards": task_rewards(args.task, args.reward_model), "max_steps": steps, **over}
    t = time.perf_counter()
    run_hygrpo(HyGRPOConfig(model_name_or_path=args.start, dataset_path=args.data, output_dir=args.out,
                            seed=args.seed, num_rollout_workers=0, report_to=["none"], log_completions=False,
                            save_steps=20, save_total_limit=1, resume_from_checkpoint="latest", **cfg))  # fmt: skip
    train_s = time.perf_counter() - t
    retrieval = {"evaluator": args.evaluator} if args.evaluator else None
    val = evaluate_model(os.path.join(args.out, "final"), args.data, args.task, split="val",
                         num_samples=args.eval, retrieval_model=retrieval, max_new_tokens=24)  # fmt: skip
    print(json.dumps({"overrides": over, "steps": steps, "seed": args.seed, "train_s": round(train_s, 1),
                      "val": compact(val)}))  # fmt: skip


if __name__ == "__main__":
    main()
