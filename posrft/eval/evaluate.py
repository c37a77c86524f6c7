"""``posrft eval``: every metric of one pose policy on one split, as JSON and a markdown table.

Pose: MPJPE and PA-MPJPE in mm (pelvis-aligned; Procrustes via roma), valid-``<POSE>`` rate,
answer-format accuracy (:mod:`posrft.eval.pose_eval`).

Retrieval (text→pose tasks with a ``caption`` column, given an *evaluation* retrieval model —
never the one the semantic reward used, DESIGN §1): the policy's pose for caption ``i`` is the
gallery item of caption ``i``; recalls R@k (k = 1, 5, 10, 20) text→pose and pose→text over the
full split and over random pools of 32 (:func:`posrft.eval.metrics.retrieval_recalls`). The
papers average different recalls into their "mRecall"; each convention is reported by name:

    mrecall_posescript = mean(t2p, p2t × R@1, R@5, R@10)          (PoseScript)
    mrecall_poserft    = mean(t2p, p2t × R@5, R@10, R@20)         (Pose-RFT; also ``mrecall``)
    mrecall_unipose    = mean(t2p, p2t × R@1, R@5, R@10, R@20)    (UniPose)
    mrecall_pool32     = mean of the pooled recalls (R@1/5/10/20, both directions)

Several retrieval models can score the same predictions (``retrieval_model`` as a mapping
name → model): e.g. the independent evaluator *and* the semantic reward's own model, to measure
how much of a gain is the reward model being fitted rather than the poses improving.

A sample without a valid ``<POSE>`` keeps its place in the gallery with the rest pose (it is a
miss, not dropped). ``reference`` holds the same recalls for the ground-truth poses: the
evaluator's own ceiling on this split.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from posrft.body.rotations import identity_pose6d
from posrft.data.splits import load_split
from posrft.eval.metrics import retrieval_recalls
from posrft.eval.pose_eval import Predictions, pose_metrics, predict_poses
from posrft.files import atomic_write_json, atomic_write_text

TASKS = ("text2pose", "image2pose")
RETRIEVAL_KS = (1, 5, 10, 20)
#: Which recalls each paper averages into its mRecall (both directions, full split).
CONVENTIONS = {"posescript": (1, 5, 10), "poserft": (5, 10, 20), "unipose": (1, 5, 10, 20)}
POOL = 32


@torch.no_grad()
def retrieval_metrics(retrieval: Any, captions: Sequence[str], galleries: Mapping[str, torch.Tensor],
                      ks: Sequence[int] = RETRIEVAL_KS, pool: int = POOL, seed: int = 0) -> dict[str, dict[str, float]]:  # fmt: skip
    """Recalls of ``retrieval`` (a :class:`~posrft.eval.retrieval.RetrievalModel`) of the
    captions against each gallery of paired poses ``(N, D)``, with the PoseScript mRecall under
    ``mrecall``. The captions are embedded once for all galleries."""
    was = retrieval.training
    retrieval.eval()
    try:
        text = retrieval.embed_texts(list(captions))
        out = {}
        for name, pose6d in galleries.items():
            if len(captions) != pose6d.shape[0]:
                raise ValueError(f"{len(captions)} captions but {pose6d.shape[0]} poses in {name!r}")
            r = retrieval_recalls(text, retrieval.embed_poses(pose6d.float()), ks, pool, seed)
            m = {k.replace("_R@", "_r@").lower(): v for k, v in r.items() if k.startswith(("t2p", "p2t"))}
            for conv, conv_ks in CONVENTIONS.items():
                vals = [m[f"{d}_r@{k}"] for d in ("t2p", "p2t") for k in conv_ks if f"{d}_r@{k}" in m]
                if len(vals) == 2 * len(conv_ks):
                    m[f"mrecall_{conv}"] = sum(vals) / len(vals)
            m["mrecall"] = m.get("mrecall_poserft", r["mRecall_full"])
            pooled = [v for k, v in r.items() if "pool" in k]
            if pooled:
                m[f"mrecall_pool{pool}"] = sum(pooled) / len(pooled)
            out[name] = m
        return out
    finally:
        retrieval.train(was)


def _gallery(pred: Predictions) -> torch.Tensor:
    """Predicted poses with the rest pose where the answer had no valid ``<POSE>``."""
    rest = identity_pose6d(pred.pose6d.shape[1] // 6, pred.pose6d.shape[0]).to(pred.pose6d)
    return torch.where(pred.valid[:, None], pred.pose6d, rest)


def evaluate_model(
    model_dir: str | Path,
    data_dir: str | Path,
    task: str,
    *,
    split: str = "test",
    num_samples: int | None = None,
    retrieval_model: str | Path | Any | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    body_model_dir: str | None = None,
    seed: int = 0,
    policy: Any = None,
    pictures: str | Path | None = None,
    num_pictures: int = 6,
) -> dict[str, Any]:
    """All metrics of ``model_dir`` (or an already loaded ``policy``) on ``data_dir[split]``.

    ``retrieval_model``: a folder written by ``posrft retrieval train`` or a loaded model, or a
    mapping ``{name: folder or model}`` (the first is the primary, reported under ``retrieval``;
    all of them under ``retrieval_by_model``); the retrieval block is skipped
    (``"retrieval": null``) without one. ``pictures``: also write a PNG of the first
    ``num_pictures`` predictions next to the ground truth (:func:`write_prediction_grid`).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    start = time.perf_counter()
    columns = ("prompt", "gt_joints") + (("images",) if task == "image2pose" else ())
    data = load_split(data_dir, split, columns)
    n = len(data) if num_samples is None else min(num_samples, len(data))
    if policy is None:
        from posrft.policy.model import PosePolicy

        policy = PosePolicy.from_pretrained(model_dir).eval()
    pred = predict_poses(policy, data, n, batch_size, max_new_tokens, body_model_dir)
    result: dict[str, Any] = {"model": str(model_dir), "data": str(data_dir), "task": task, "split": split,
                              **pose_metrics(pred), "retrieval": None, "reference": None}  # fmt: skip
    if retrieval_model is not None and "caption" in data.column_names:
        from posrft.eval.retrieval import RetrievalModel

        models = retrieval_model if isinstance(retrieval_model, Mapping) else {"retrieval": retrieval_model}
        rows = data.select(range(n))
        gt = torch.tensor(rows["gt_pose_6d"], dtype=torch.float32)
        by_model = {}
        for name, model in models.items():
            loaded = RetrievalModel.from_pretrained(model) if isinstance(model, (str, Path)) else model
            by_model[name] = retrieval_metrics(loaded, rows["caption"],
                                               {"retrieval": _gallery(pred), "reference": gt}, seed=seed)  # fmt: skip
        primary = next(iter(models))
        result.update(by_model[primary])
        result["retrieval_by_model"] = by_model
        first = models[primary]
        result["retrieval_model"] = str(first) if isinstance(first, (str, Path)) else None
    if pictures is not None:
        result["pictures"] = str(write_prediction_grid(pred, data.select(range(n)), pictures, num_pictures))
    result["wall_s"] = time.perf_counter() - start
    return result


def write_prediction_grid(pred: Predictions, rows: Any, out: str | Path, num: int = 6) -> Path:
    """PNG of the first ``num`` valid predictions (μ at greedy text) next to the ground truth,
    each captioned with the prompt's caption (text→pose) and its MPJPE / PA-MPJPE."""
    from posrft.eval.metrics import mpjpe, pa_mpjpe
    from posrft.files import atomic_save_image
    from posrft.render import render_pose_grid

    idx = [i for i in range(len(pred.texts)) if bool(pred.valid[i])][:num]
    if not idx:
        raise ValueError("no prediction has a valid <POSE>: nothing to draw")
    p, g = pred.joints[idx].double(), pred.gt_joints[idx].double()
    e, pa = mpjpe(p, g) * 1000, pa_mpjpe(p, g) * 1000
    caps = rows["caption"] if "caption" in rows.column_names else [""] * len(rows)
    captions = [f"{caps[i][:90]} — MPJPE {a:.0f} mm, PA {b:.0f} mm" for i, a, b in zip(idx, e.tolist(), pa.tolist())]
    grid = render_pose_grid({"prediction": p.float(), "ground truth": g.float()}, captions, size=160, cols=2)
    return atomic_save_image(out, grid, optimize=True)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.1f}"


def results_markdown(result: dict[str, Any]) -> str:
    """A two-column markdown table of one :func:`evaluate_model` result."""
    rows = [("MPJPE (mm)", _fmt(result["mpjpe_mm"])), ("PA-MPJPE (mm)", _fmt(result["pa_mpjpe_mm"])),
            ("valid `<POSE>` (%)", _fmt(result["valid_rate"], True)),
            ("format accuracy (%)", _fmt(result["format_accuracy"], True))]  # fmt: skip
    ret, ref = result.get("retrieval") or {}, result.get("reference") or {}
    for key in ret:
        label = key.replace("_", " ").replace("t2p", "text→pose").replace("p2t", "pose→text")
        rows.append((f"{label} (%)", _fmt(ret[key], True) + (f" (GT poses: {_fmt(ref[key], True)})" if key in ref else "")))
    head = f"**{result['model']}** on `{result['data']}` [{result['split']}], {result['num_samples']} samples, task {result['task']}\n\n"
    return head + "| metric | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def write_results(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out`` (JSON) and the same name with ``.md``, both written atomically."""
    out = Path(out)
    md = out.with_suffix(".md")
    return atomic_write_json(out, result), atomic_write_text(md, results_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """``posrft eval --model DIR --data DIR --task text2pose|image2pose [--out results.json]``."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="posrft eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="policy folder (save_pretrained + pose_head)")
    p.add_argument("--data", required=True, help="DatasetDict folder (posrft data synth)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--split", default="test")
    p.add_argument("--num-samples", type=int, default=None, help="first N rows (default: all)")
    p.add_argument("--retrieval-model", default=None, help="the EVALUATION retrieval model folder "
                   "(posrft retrieval train ... --subset b); retrieval metrics are skipped without it")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--body-model-dir", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the random retrieval pools")
    p.add_argument("--out", default=None, help="results JSON path (a .md table is written beside it)")
    p.add_argument("--pictures", default=None, help="also write a PNG of predictions next to the ground truth")
    p.add_argument("--num-pictures", type=int, default=6)
    a = p.parse_args(argv)
    result = evaluate_model(a.model, a.data, a.task, split=a.split, num_samples=a.num_samples,
                            retrieval_model=a.retrieval_model, batch_size=a.batch_size,
                            max_new_tokens=a.max_new_tokens, body_model_dir=a.body_model_dir, seed=a.seed,
                            pictures=a.pictures, num_pictures=a.num_pictures)  # fmt: skip
    print(results_markdown(result))
    if a.out:
        paths = write_results(result, a.out)
        print("written:", *map(str, paths))
    else:
        print(json.dumps(result, indent=2))
    return 0
