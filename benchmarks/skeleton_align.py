"""Word alignment of the fresh projector (posrft.skeleton.align): what the aligned tokens name.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/skeleton_align.py \\
        --model WORK/base --steps 200 --save runs/skalign/aligned --out runs/skalign/align.json

Loads ``--model`` (an init-pretrained folder, the skeleton table's ``WORK/base``) with the
table's reading (112 px, T' = 6, the start's renderer), computes the projector's inputs for
the seen training clips and every val clip once (``--cache`` keeps them), aligns the projector
for ``--steps`` steps on the training clips and scores, before and after, the read-out with no
language model: each val clip's bag of words over the vocabulary (the alignment's own ``p``)
names the class whose name it gives the highest mean log-probability, among the 25 seen
classes, the 5 novel unseen classes and the 4 mirror unseen classes. ``--save`` writes the
aligned model, ready for ``benchmarks/skeleton_pilot.py --model``. The last line is one JSON
object; CPU seconds of the tower pass and of the alignment are reported side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from skeleton_table import COMMON, PLANS  # noqa: E402


def read_out(model, inputs, labels, groups, targets, scale) -> dict[str, float]:
    """Top-1 (%) of the word read-out within each ``{name: classes}`` group, over the clips
    whose label is in the group; ``targets`` rows follow :func:`all_classes`."""
    from posrft.skeleton.align import word_class_scores

    scores = word_class_scores(model, inputs, targets, scale)
    order = [c for cls in groups.values() for c in cls]
    out = {}
    for name, cls in groups.items():
        rows = [i for i, y in enumerate(labels) if y in cls]
        cols = [order.index(c) for c in cls]
        pred = scores[rows][:, cols].argmax(-1).tolist()
        out[name] = round(100 * sum(cls[p] == labels[i] for p, i in zip(pred, rows)) / len(rows), 1)
        out[f"{name}_n"] = len(rows)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="init-pretrained folder (the skeleton table's WORK/base)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="file for the projector inputs (reused if present)")
    ap.add_argument("--save", default=None, help="write the aligned model here")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    import torch

    from posrft.data.action_classes import zero_shot_split
    from posrft.skeleton import align
    from posrft.skeleton.config import SkeletonConfig
    from posrft.skeleton.data import load_action_data
    from posrft.skeleton.train import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    plan = PLANS["full"]
    data = load_action_data("", formats=[COMMON["skeleton_format"]], class_split=COMMON["class_split"],
                            clips_per_class=plan["clips_per_class"], num_frames=48, seed=0,
                            val_fraction=COMMON["val_fraction"], test_fraction=COMMON["test_fraction"])  # fmt: skip
    cfg = SkeletonConfig(**{**COMMON, "model_name_or_path": args.model, "output_dir": "unused",
                            "seed": args.seed})  # fmt: skip
    model = load_model(cfg)
    train = data.get("train", COMMON["skeleton_format"]).subset(data.seen)
    val = data.get("val", COMMON["skeleton_format"])
    t, tower_s = time.process_time(), None
    if args.cache and Path(args.cache).is_file():
        train_in, val_in = torch.load(args.cache, weights_only=True)
    else:
        train_in, val_in = align.projector_inputs(model, train.clips), align.projector_inputs(model, val.clips)
        if args.cache:
            torch.save((train_in, val_in), args.cache)
        tower_s = time.process_time() - t
    groups = {"seen": list(data.seen), "novel_unseen": list(data.unseen),
              "mirror_unseen": zero_shot_split("novel/mirror")[1]}
    order = [c for cls in groups.values() for c in cls]
    targets = align.word_targets(align.class_word_ids(model.tokenizer, order),
                                 model.hf_model.get_input_embeddings().weight.shape[0])
    before = read_out(model, val_in, val.labels, groups, targets, 1 / 0.07)
    print("before", json.dumps(before), flush=True)
    t = time.process_time()
    res = align.align_projector(model, train.clips, train.labels, data.seen, steps=args.steps,
                                learning_rate=args.learning_rate, seed=args.seed, inputs=train_in)
    align_s = time.process_time() - t
    after = read_out(model, val_in, val.labels, groups, targets, res.logit_scale)
    print("after", json.dumps(after), flush=True)
    if args.save:
        model.settings.projector_aligned_steps = res.steps
        model.save_pretrained(args.save)
    out = {"steps": args.steps, "learning_rate": args.learning_rate, "seed": args.seed,
           "chance": {"seen": 100 / len(groups["seen"]), "novel_unseen": 100 / len(groups["novel_unseen"]),
                      "mirror_unseen": 100 / len(groups["mirror_unseen"])},
           "val_before": before, "val_after": after, "train_top1": round(100 * res.train_top1, 1),
           "loss_first": round(res.loss_first, 3), "loss_last": round(res.loss_last, 3),
           "logit_scale": round(res.logit_scale, 1), "align_cpu_s": round(align_s, 1),
           "tower_cpu_s": None if tower_s is None else round(tower_s, 1),  # None: read from --cache
           "align_to_tower": None if tower_s is None else round(align_s / tower_s, 2)}  # fmt: skip
    if args.out:
        from posrft.files import atomic_write_json

        atomic_write_json(Path(args.out), out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
