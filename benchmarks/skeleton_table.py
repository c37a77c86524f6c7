"""SkeletonLLM results table on the pretrained start: does zero-shot recognition transfer?

Model: ``posrft model init-pretrained`` with SmolLM2-135M-Instruct + DINOv2-small (AyaVision
layout, 4×4 pixel-shuffle projector; LoRA on the LM only, DINOv2 frozen, gradients reach the
renderer through it). Data: the procedural action clips, split by subject (val for tuning,
test for reporting) and by class with the ``novel`` zero-shot split (unseen classes are
verb × body-part compositions none of which mirrors a seen class) plus ``novel/mirror`` (mirror
images of seen classes, same seen classes: one training run, two zero-shot tests).

Every warm-up starts by word-aligning the fresh projector (``align`` steps,
:mod:`posrft.skeleton.align`: the frame tokens of the seen training clips are taught to read as
their class name's words, with no LM forward). On val it lifted the 150-step warm-up's seen
top-1 from 38.7 to 74.7–82.7 % in two runs (docs/pretrained.md).

Variants per seed (stages in-process, one after the other, shared stages trained once):

* ``fixed_renderer``: warm-up + refinement with ``renderer_learnable=False``;
* ``draction``: warm-up (renderer learning) + refinement;
* ``draction+discft``: warm-up -> Disc-FT (YES/NO, hard negatives) -> refinement;
* ``draction+discft+crdistill``: warm-up -> Disc-FT -> CR-Distill (kinematic teacher,
  renderer frozen: ``PARTS``) -> refinement.

Metrics per final model (:func:`posrft.skeleton.evaluate.evaluate_all`): novel unseen top-1
(options = the 5 novel classes), mirror unseen top-1 (the 4 mirror classes), seen top-1 (4-way),
cross-format top-1 (NTU-25 clips, renderer carried over from SMPL-24), and captions scored by
sentence similarity (MiniLM) to the class description, for seen and for unseen clips.

Resumable: every stage checkpoints (``save_steps``) and resumes from its latest checkpoint;
a stage whose ``final`` exists and an evaluation whose JSON exists are skipped. Compute time
(wall and CPU seconds, summed over resumed runs) is recorded per stage and evaluation.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/skeleton_table.py --quick --out /tmp/sk
    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/skeleton_table.py --work runs/skeleton_table --out docs/results
    PYTHONPATH=. .venv/bin/python benchmarks/skeleton_table.py --work runs/skeleton_table --out docs/results --render-only

Writes ``OUT/skeleton.json``, ``OUT/skeleton.md`` and ``OUT/skeleton_frames.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from skeleton_report import METRICS, VARIANTS, render_markdown, summarise  # noqa: E402

FINAL_DIRS = {"fixed_renderer": "fixed_refine", "draction": "draction_refine",
              "draction+discft": "discft_refine", "draction+discft+crdistill": "crdistill_refine"}
#: Settings: the recipes' (recipes/skeleton/*.yaml), on one process with batch 8 (the recipes:
#: 2 processes × 4). Steps are optimizer steps of ``batch`` clips; the reading (112 px, 4 tokens
#: per frame, T' = 6, bf16 autocast) is what the step-cost benchmark found affordable
#: (benchmarks/skeleton_step.py: docs/results/skeleton_step.json).
PLANS = {
    "full": dict(clips_per_class=30, align=200, warmup=150, discft=60, crdistill=60, refine=50, seeds=(0, 1, 2),
                 eval_unseen=10, eval_seen=3, eval_captions=2, caption_tokens=32),
    "quick": dict(clips_per_class=6, align=10, warmup=8, discft=4, crdistill=4, refine=4, seeds=(0,),
                  eval_unseen=2, eval_seen=1, eval_captions=1, caption_tokens=12),
}
COMMON = dict(skeleton_format="smpl24", cross_format="ntu25", num_render_frames=6,
              vision_size=112, num_choices=4, class_split="novel",
              eval_unseen_splits=["novel/mirror"], learning_rate=5e-4, renderer_learning_rate=5e-2,
              per_device_train_batch_size=8, lora_r=16, lora_alpha=32, bf16=True,
              val_fraction=0.2, test_fraction=0.2, max_target_tokens=72,
              logging_steps=10, report_to=["none"], save_steps=25, save_total_limit=1)
# CR-Distill keeps the renderer frozen: trained by the long rationales it moved so far that the
# refinement could not re-learn to read its frames (val, seed 0: seen top-1 23.3 % after the
# refinement, 54.7 % with the renderer frozen); Disc-FT moved it harmlessly (75.3 vs 74.7 %)
PARTS = {"warmup": "renderer+projector+lora", "discft": "renderer+projector+lora",
         "crdistill": "projector+lora", "refine": "projector+lora"}


def base_model(work: Path, given: str | None) -> Path:
    """The pretrained start: ``given``, or built once under ``work/base``."""
    if given:
        return Path(given)
    base = work / "base"
    if not (base / "config.json").is_file():
        from posrft.policy.pretrained import init_pretrained

        tmp = work / "base.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        init_pretrained(tmp, "smollm2", "dinov2-small", seed=0)
        os.replace(tmp, base)
    return base


class Clock:
    """Wall and CPU seconds per named job, added up over resumed runs (``times.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, name: str, wall: float, cpu: float) -> None:
        from posrft.files import atomic_write_json

        t = self.times.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
        t["wall_s"] += wall
        t["cpu_s"] += cpu
        atomic_write_json(self.path, self.times)


def stage_config(kind: str, steps: int, model: Path, out: Path, seed: int, learnable: bool,
                 align_steps: int = 0):
    from posrft.skeleton.config import SkeletonConfig

    return SkeletonConfig(stage=kind, train_parts=PARTS[kind], model_name_or_path=str(model),
                          output_dir=str(out), max_steps=steps, seed=seed,
                          align_projector_steps=align_steps if kind == "warmup" else 0,
                          renderer_learnable=learnable, eval_at_end=False,
                          caption_fraction=0.25 if kind == "refine" else 0.0,
                          resume_from_checkpoint="latest", **COMMON)  # fmt: skip


def run_stage(name: str, kind: str, model: Path, root: Path, seed: int, plan: dict, data, clock,
              log, learnable: bool = True) -> Path:
    from posrft.skeleton.train import run_skeleton

    out = root / name
    final = out / "final"
    if (final / "config.json").is_file():
        parts = json.loads((out / "config.json").read_text()).get("train_parts")
        if parts != PARTS[kind]:
            raise SystemExit(f"{out}: trained {parts}, the table's settings train {PARTS[kind]}; "
                             "move the stage's folder (and the stages after it) aside")
        return final
    w0, c0 = time.perf_counter(), time.process_time()
    run_skeleton(stage_config(kind, plan[kind], model, out, seed, learnable, plan["align"]), data)
    clock.add(name, time.perf_counter() - w0, time.process_time() - c0)
    for ckpt in out.glob("checkpoint-*"):  # the final folder is what later stages read
        shutil.rmtree(ckpt, ignore_errors=True)
    log.info("seed %d: %s done in %.0f s", seed, name, time.perf_counter() - w0)
    return final


def train_seed(seed: int, plan: dict, data, work: Path, base: Path, log) -> dict[str, Path]:
    root = work / f"seed{seed}"
    clock = Clock(root / "times.json")

    def stage(name, kind, model, learnable=True):
        return run_stage(name, kind, model, root, seed, plan, data, clock, log, learnable)

    fixed_w = stage("fixed_warmup", "warmup", base, learnable=False)
    warm = stage("warmup", "warmup", base)
    disc = stage("discft", "discft", warm)
    crd = stage("crdistill", "crdistill", disc)
    finals = {"fixed_renderer": stage(FINAL_DIRS["fixed_renderer"], "refine", fixed_w, False),
              "draction": stage(FINAL_DIRS["draction"], "refine", warm),
              "draction+discft": stage(FINAL_DIRS["draction+discft"], "refine", disc),
              "draction+discft+crdistill": stage(FINAL_DIRS["draction+discft+crdistill"], "refine", crd)}
    return finals


def evaluate_seed(seed: int, finals: dict[str, Path], plan: dict, data, work: Path, split: str,
                  log) -> dict[str, dict]:
    """Metrics of every variant (cached in ``seed<k>/eval_<split>_<variant>.json``)."""
    import torch

    from posrft.files import atomic_write_json
    from posrft.skeleton.evaluate import evaluate_all
    from posrft.skeleton.model import SkeletonLLM
    from posrft.skeleton.train import extra_unseen_sets
    from posrft.skeleton.config import SkeletonConfig

    root = work / f"seed{seed}"
    clock = Clock(root / "times.json")
    extra = extra_unseen_sets(SkeletonConfig(**{k: v for k, v in COMMON.items()
                                                if k in ("class_split", "eval_unseen_splits")}))
    # unseen classes were never trained on: report on every subject except the val ones
    unseen_from = ("val",) if split == "val" else ("train", "test")
    out = {}
    for v in VARIANTS:
        path = root / f"eval_{split}_{v.replace('+', '_')}.json"
        if path.is_file():
            out[v] = json.loads(path.read_text())
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        torch.manual_seed(seed)
        model = SkeletonLLM.from_pretrained(finals[v])
        res = evaluate_all(model, data, split=split, fmt=COMMON["skeleton_format"],
                           cross_format=COMMON["cross_format"], num_choices=COMMON["num_choices"],
                           seed=seed, captions=True, max_clips_per_class=plan["eval_seen"],
                           unseen_splits=unseen_from, extra_unseen=extra, bf16=COMMON["bf16"],
                           caption_clips_per_class=plan["eval_captions"],
                           max_new_tokens=plan["caption_tokens"],
                           unseen_clips_per_class=plan["eval_unseen"])  # fmt: skip
        atomic_write_json(path, res)
        clock.add(f"eval_{split}_{v}", time.perf_counter() - w0, time.process_time() - c0)
        log.info("seed %d %s (%s): %s", seed, v, split,
                 json.dumps({m: round(res[m], 3) for m in METRICS if m in res}))
        out[v] = res
    return out


def tokens_per_frame(model_dir: Path) -> int:
    from posrft.skeleton.model import SkeletonLLM

    return SkeletonLLM.from_pretrained(model_dir).image_seq_length


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, a few steps, small data (≤ 10 min)")
    ap.add_argument("--out", required=True, help="folder for skeleton.json/.md/_frames.png")
    ap.add_argument("--work", default=None, help="models, evaluations and times (resumable; "
                    "default: a temp dir removed at the end)")
    ap.add_argument("--model", default=None, help="init-pretrained folder (default: built in WORK/base)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--split", default="test", choices=("val", "test"),
                    help="report on test; tune on val")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite OUT/skeleton.md from OUT/skeleton.json only")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        from posrft.files import atomic_write_text

        result = json.loads((out / "skeleton.json").read_text())
        atomic_write_text(out / "skeleton.md", render_markdown(result))
        return 0
    import logging

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("posrft.train", "transformers", "datasets", "accelerate", "posrft.skeleton"):
        logging.getLogger(name).setLevel(logging.WARNING)
    log = logging.getLogger("skeleton_table")
    plan = dict(PLANS["quick" if args.quick else "full"])
    seeds = tuple(args.seeds) if args.seeds else plan["seeds"]
    w0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    temp = args.work is None
    work = Path(args.work) if args.work else Path(__import__("tempfile").mkdtemp(prefix="skeleton_table_"))
    work.mkdir(parents=True, exist_ok=True)
    base = base_model(work, args.model)
    from posrft.skeleton.data import load_action_data

    data = load_action_data("", formats=[COMMON["skeleton_format"], COMMON["cross_format"]],
                            class_split=COMMON["class_split"], clips_per_class=plan["clips_per_class"],
                            num_frames=48, seed=0, val_fraction=COMMON["val_fraction"],
                            test_fraction=COMMON["test_fraction"])  # fmt: skip
    log.info("data: %s", {f"{k[0]}/{k[1]}": len(v) for k, v in data.sets.items()})
    per_seed, finals = {}, {}
    for seed in seeds:
        finals[seed] = train_seed(seed, plan, data, work, base, log)
        per_seed[seed] = evaluate_seed(seed, finals[seed], plan, data, work, args.split, log)
    from skeleton_report import renderer_study

    times = {s: json.loads((work / f"seed{s}" / "times.json").read_text()) for s in seeds}
    result = {
        "variants": summarise(per_seed),
        "config": {"seeds": list(seeds), "quick": args.quick, "split": args.split,
                   "steps": {k: plan[k] for k in ("align", "warmup", "discft", "crdistill", "refine")},
                   "plan": plan, "seen": data.seen, "unseen": data.unseen,
                   "mirror": __import__("posrft.data.action_classes", fromlist=["x"]).zero_shot_split("novel/mirror")[1],
                   "teacher": "kinematic", "train_parts": PARTS, "model": "SmolLM2-135M-Instruct + DINOv2-small "
                   "(init-pretrained, AyaVision layout, pool 4)", **COMMON},
        "renderer": renderer_study(base, finals[seeds[0]]["draction+discft+crdistill"], data,
                                   COMMON["skeleton_format"], out / "skeleton_frames.png"),
        "times": times,
        "tokens_per_frame": tokens_per_frame(finals[seeds[0]]["draction"]),
        "wall_s_this_run": time.perf_counter() - w0,
        "command": " ".join(["PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/skeleton_table.py"]
                            + (["--quick"] if args.quick else []) + [f"--out {args.out}"]
                            + ([f"--work {args.work}"] if args.work else [])
                            + ([f"--seeds {' '.join(map(str, seeds))}"] if args.seeds else [])
                            + ([f"--split {args.split}"] if args.split != "test" else [])),
    }  # fmt: skip
    from posrft.files import atomic_write_json, atomic_write_text

    atomic_write_json(out / "skeleton.json", result)
    atomic_write_text(out / "skeleton.md", render_markdown(result))
    if temp:
        shutil.rmtree(work, ignore_errors=True)
    v = result["variants"]
    print(json.dumps({name: {m: round(v[name][m], 4) for m in METRICS if m in v[name]}
                      for name in VARIANTS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
