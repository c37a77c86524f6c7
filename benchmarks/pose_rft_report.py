"""Turn ``benchmarks/pose_rft_table.py``'s per-task results into JSON, markdown and curves.

Aggregation: every metric is the mean over seeds (per-seed values under ``"seeds"``). Success
criteria (issue 7, relative like the paper):

    (c) vs (b), image→pose: MPJPE and PA-MPJPE each ≥ 10 % lower
    (c) vs (b), text→pose:  mRecall ≥ +10 points
    (d) vs (b):             image→pose MPJPE and PA-MPJPE within 2 %
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from posrft.files import atomic_write_json, atomic_write_text

B, C, D = "sft_gaussian", "sft_gaussian+hygrpo", "sft_gaussian+grpo_text_only"
POSE_COLS = (("mpjpe", "MPJPE mm"), ("pa_mpjpe", "PA-MPJPE mm"), ("valid_rate", "valid %"))
TEXT_COLS = (("mrecall", "mRecall"), ("r_t2p@5", "t2p R@5"), ("r_t2p@10", "R@10"), ("r_t2p@20", "R@20"),
             ("r_p2t@5", "p2t R@5"), ("r_p2t@10", "R@10"), ("r_p2t@20", "R@20"),
             ("mrecall_pool32", "mRecall (pools of 32)"), ("mpjpe", "MPJPE mm"), ("pa_mpjpe", "PA-MPJPE mm"))  # fmt: skip
PERCENT = {"valid_rate", "mrecall", "mrecall_pool32"}
CURVE_KEYS = {
    "image2pose": ("rewards/joint/mean", "rewards/reprojection/mean", "rewards/format/mean", "pose/sigma"),
    "text2pose": ("rewards/joint/mean", "rewards/semantic/mean", "rewards/format/mean", "pose/sigma"),
}


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(vals) if vals else float("nan")


def aggregate(results: dict[str, dict[int, Any]], split: str = "test") -> dict[str, dict[str, Any]]:
    """``{variant: {task: {metric: mean, ..., "seeds": {seed: {...}}}}}`` over every seed."""
    out: dict[str, dict[str, Any]] = {}
    for task, by_seed in results.items():
        for seed, res in by_seed.items():
            for name, row in res["variants"].items():
                if split in row:
                    out.setdefault(name, {}).setdefault(task, {"seeds": {}})["seeds"][str(seed)] = row[split]
    for tasks in out.values():
        for cell in tasks.values():
            keys = sorted({k for r in cell["seeds"].values() for k in r})
            for k in keys:
                cell[k] = _mean([r.get(k) for r in cell["seeds"].values()])
    return out


def criteria(v: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's success criteria, each with the measured value and whether it holds."""
    rows = []

    def rel(name: str, task: str, metric: str) -> float:
        return (v[name][task][metric] - v[B][task][metric]) / v[B][task][metric]

    if C in v and B in v and "image2pose" in v[C]:
        for m in ("mpjpe", "pa_mpjpe"):
            r = rel(C, "image2pose", m)
            rows.append({"criterion": f"(c) vs (b) image2pose {m}: ≥ 10 % lower", "value": f"{100 * r:+.1f} %",
                         "holds": r <= -0.10})  # fmt: skip
    if C in v and B in v and "text2pose" in v[C]:
        d = 100 * (v[C]["text2pose"]["mrecall"] - v[B]["text2pose"]["mrecall"])
        rows.append({"criterion": "(c) vs (b) text2pose mRecall: ≥ +10 points", "value": f"{d:+.1f} points",
                     "holds": d >= 10})  # fmt: skip
    if D in v and B in v and "image2pose" in v[D]:
        for m in ("mpjpe", "pa_mpjpe"):
            r = rel(D, "image2pose", m)
            rows.append({"criterion": f"(d) vs (b) image2pose {m}: within 2 %", "value": f"{100 * r:+.1f} %",
                         "holds": abs(r) <= 0.02})  # fmt: skip
    return rows


def _cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None or key not in row or row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
        return "–"
    val = row[key]
    if key in PERCENT or key.startswith("r_"):
        return f"{100 * val:.1f}"
    return f"{val:.1f}"


def _table(variants: dict[str, dict[str, Any]], task: str, cols, refs: dict[str, Any]) -> str:
    head = "| variant | " + " | ".join(label for _, label in cols) + " |\n"
    head += "|---" * (len(cols) + 1) + "|\n"
    lines = []
    for name, tasks in variants.items():
        if task in tasks:
            lines.append(f"| {name} | " + " | ".join(_cell(tasks[task], k) for k, _ in cols) + " |")
    for ref_name, ref in refs.items():
        lines.append(f"| *reference: {ref_name}* | " + " | ".join(_cell(ref, k) for k, _ in cols) + " |")
    return head + "\n".join(lines) + "\n"


def references(results: dict[str, dict[int, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for task, by_seed in results.items():
        refs: dict[str, Any] = {}
        names = {n for res in by_seed.values() for n in res["references"]}
        for n in names:
            keys = {k for res in by_seed.values() for k in res["references"].get(n, {})}
            refs[n] = {k: _mean([res["references"][n].get(k) for res in by_seed.values()]) for k in keys}
        gt = [res["variants"][B]["test"].get("reference_gt_mrecall") for res in by_seed.values() if B in res["variants"]]
        if any(g is not None for g in gt):
            refs["ground-truth poses"] = {"mrecall": _mean(gt)}
        out[task] = refs
    return out


def plot_curves(results: dict[str, dict[int, Any]], out: Path, smooth: int = 5) -> list[Path]:
    """One PNG per task: each RL row's reward curves (moving average over ``smooth`` logs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posrft.train.plots import read_metrics

    paths = []
    for task, by_seed in results.items():
        seed, res = sorted(by_seed.items())[0]
        keys = CURVE_KEYS[task]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
        for name, row in res["variants"].items():
            log = row.get("metrics_log")
            if not log or not Path(log).exists():
                continue
            rows = read_metrics(log)
            for ax, key in zip(axes, keys):
                alias = key.replace("rewards/format/", "rewards/format_reward/")  # TRL's name
                pts = [(r["step"], r.get(key, r.get(alias))) for r in rows if r.get(key, r.get(alias)) is not None]
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ys = [statistics.fmean(p[1] for p in pts[max(0, i - smooth + 1):i + 1]) for i in range(len(pts))]
                ax.plot(xs, ys, label=name.replace("sft_gaussian+", "+"), lw=1.2)
        for ax, key in zip(axes, keys):
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=6)
        fig.suptitle(f"{task}: reward curves per variant (seed {seed}, moving average of {smooth} logs)", fontsize=10)
        fig.tight_layout()
        path = out / f"curves_{task}.png"
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    return paths


def write_report(results: dict[str, dict[int, Any]], out: Path, *, settings: dict[str, Any], mode: str,
                 wall_s: float, command: str) -> dict[str, Path]:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    variants, val = aggregate(results, "test"), aggregate(results, "val")
    refs = references(results)
    crit = criteria(variants)
    timings = {t: {s: r["timings_s"] for s, r in by_seed.items()} for t, by_seed in results.items()}
    payload = {"variants": variants, "val": val, "references": refs, "criteria": crit, "settings": settings,
               "mode": mode, "seeds": sorted({s for r in results.values() for s in r}), "wall_s": round(wall_s, 1),
               "timings_s": timings, "command": command}  # fmt: skip
    curves = plot_curves(results, out)
    stage_min = {t: sum(sum(v.values()) for v in by_seed.values()) / 60 for t, by_seed in timings.items()}
    payload["stage_minutes"] = {t: round(v, 1) for t, v in stage_min.items()}
    cost = ", ".join(f"{t} {v:.1f} min" for t, v in stage_min.items())
    md = [f"# Pose-RFT results table ({mode})\n",
          f"Regenerate: `{command}`. Compute per task (all stages, the two tasks run in parallel, one "
          f"thread each): {cost}; this invocation's wall time {wall_s / 60:.1f} min (stages already in "
          "the work folder are reused).\n",
          "Test split; mean over seeds " + ", ".join(map(str, payload["seeds"])) + ". "
          "Retrieval: the evaluation retrieval model (never the reward's).\n",
          "## image→pose\n", _table(variants, "image2pose", POSE_COLS, refs.get("image2pose", {})),
          "\n## text→pose\n", _table(variants, "text2pose", TEXT_COLS, refs.get("text2pose", {})),
          "\n## Success criteria\n", "| criterion | measured | holds |\n|---|---|---|\n"
          + "\n".join(f"| {c['criterion']} | {c['value']} | {'yes' if c['holds'] else '**no**'} |" for c in crit) + "\n",
          "\n## Curves\n", "\n".join(f"![{p.stem}]({p.name})" for p in curves) + "\n"]  # fmt: skip
    md_path = atomic_write_text(out / "pose_rft.md", "\n".join(md))
    json_path = atomic_write_json(out / "pose_rft.json", payload)
    return {"json": json_path, "markdown": md_path, "curves": curves}  # type: ignore[dict-item]

