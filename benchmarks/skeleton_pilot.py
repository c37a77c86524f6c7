"""One SkeletonLLM stage with the table's settings plus overrides, scored on val: a setting's pilot.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/skeleton_pilot.py \\
        --model WORK/base --out runs/skpilot/naming --steps 150 naming_fraction=0.5
    ... --stage crdistill --model WORK/seed0/discft/final --out runs/skpilot/crd --no-score \\
        train_parts='"projector+lora"'

A stage of ``benchmarks/skeleton_table.py`` (``--stage``, default the warm-up; same data, reading,
LoRA, renderer, projector word alignment in the warm-up, ``align_projector_steps=0`` turns it
off; the table's step count) from ``--model``, with ``SkeletonConfig`` overrides as
``name=JSON``. Resumable (checkpoints every 25 steps); an OUT whose ``final`` exists (e.g. a
table's ``seedK/warmup``) is only scored. Scored on the val subjects, which the table's test
figures never use: seen top-1 (4-way multiple choice by option likelihood) and zero-shot top-1
on the novel and mirror unseen classes. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sft_pilot import parse_overrides  # noqa: E402
from skeleton_table import COMMON, PLANS, stage_config  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="init-pretrained folder (the table's WORK/base)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage", default="warmup", choices=("warmup", "discft", "crdistill", "refine"))
    ap.add_argument("--steps", type=int, help="default: the table's for --stage")
    ap.add_argument("--no-score", action="store_true", help="train only (a stage that a refine follows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", metavar="FIELD=JSON")
    args = ap.parse_args(argv)
    import torch

    from posrft.skeleton.data import load_action_data
    from posrft.skeleton.evaluate import evaluate_all
    from posrft.skeleton.model import SkeletonLLM
    from posrft.skeleton.train import extra_unseen_sets, run_skeleton

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    over = parse_overrides(args.overrides)
    plan = PLANS["full"]
    data = load_action_data("", formats=[COMMON["skeleton_format"], COMMON["cross_format"]],
                            class_split=COMMON["class_split"], clips_per_class=plan["clips_per_class"],
                            num_frames=48, seed=0, val_fraction=COMMON["val_fraction"],
                            test_fraction=COMMON["test_fraction"])  # fmt: skip
    steps = args.steps or plan[args.stage]
    learnable = over.pop("renderer_learnable", True)
    table = stage_config(args.stage, steps, Path(args.model), Path(args.out), args.seed, learnable, plan["align"])
    cfg = dataclasses.replace(table, **over)
    t = time.perf_counter()
    if not (Path(args.out) / "final" / "config.json").is_file():  # a finished stage is only scored
        run_skeleton(cfg, data)
    train_s = time.perf_counter() - t
    if args.no_score:
        print(json.dumps({"overrides": over, "stage": args.stage, "steps": steps, "train_s": round(train_s, 1)}))
        return 0
    torch.manual_seed(args.seed)
    model = SkeletonLLM.from_pretrained(Path(args.out) / "final")
    res = evaluate_all(model, data, split="val", fmt=COMMON["skeleton_format"], cross_format=None,
                       num_choices=COMMON["num_choices"], seed=args.seed, captions=False,
                       extra_unseen=extra_unseen_sets(cfg), bf16=COMMON["bf16"])  # fmt: skip
    keep = {k: round(v, 4) for k, v in res.items() if k.endswith("top1")}
    print(json.dumps({"overrides": over, "stage": args.stage, "steps": steps, "train_s": round(train_s, 1),
                      "val": keep, "n": res.get("n")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
