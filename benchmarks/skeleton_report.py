"""Tables, criteria and the renderer study of ``skeleton_table.py`` (no claim typed in by hand:
every sentence is computed from the numbers it reports)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VARIANTS = ("fixed_renderer", "draction", "draction+discft", "draction+discft+crdistill")
#: unseen_top1 is the novel split's zero-shot top-1; novel_mirror_top1 the mirror split's
METRICS = ("unseen_top1", "novel_mirror_top1", "seen_top1", "cross_format_top1", "caption_cos",
           "unseen_caption_cos", "caption_acc", "unseen_caption_acc")
TITLES = {"unseen_top1": "novel unseen top-1", "novel_mirror_top1": "mirror unseen top-1",
          "seen_top1": "seen top-1", "cross_format_top1": "cross-format top-1",
          "caption_cos": "caption cos (seen)", "unseen_caption_cos": "caption cos (unseen)",
          "caption_acc": "caption acc (seen)", "unseen_caption_acc": "caption acc (unseen)"}
CHANCE_KEY = {"unseen_top1": "unseen", "novel_mirror_top1": "novel_mirror", "seen_top1": "seen",
              "cross_format_top1": "cross_format", "caption_acc": "caption",
              "unseen_caption_acc": "unseen_caption"}
STEPS = list(zip(VARIANTS, VARIANTS[1:]))


def summarise(per_seed: dict[int, dict[str, dict]]) -> dict:
    """Per variant: mean, std (population, over seeds) and per-seed values of every metric,
    chance levels, clip counts, confusions summed over seeds, caption examples of the first seed."""
    seeds = sorted(per_seed)
    out = {}
    for v in VARIANTS:
        runs = [per_seed[s][v] for s in seeds]
        entry: dict = {"chance": runs[0]["chance"], "n": runs[0]["n"]}
        for m in METRICS:
            vals = [r[m] for r in runs if m in r]
            if len(vals) == len(runs):
                entry[m], entry[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals))
                entry[f"{m}_per_seed"] = vals
        confusion: dict = {}
        for r in runs:
            for name, table in r.get("confusion", {}).items():
                for y, row in table.items():
                    for p, c in row.items():
                        cell = confusion.setdefault(name, {}).setdefault(y, {})
                        cell[p] = cell.get(p, 0) + c
        entry["confusion"] = confusion
        entry["caption_examples"] = runs[0].get("caption_examples", [])
        entry["unseen_caption_examples"] = runs[0].get("unseen_caption_examples", [])
        out[v] = entry
    return out


# ----------------------------------------------------------------------------- criteria


def _pp(v: dict, name: str, m: str) -> tuple[float, float]:
    return 100 * v[name][m], 100 * v[name][f"{m}_std"]


def paired(v: dict, a: str, b: str, m: str) -> tuple[float, float]:
    """Mean and std over seeds of the same-seed difference ``b - a`` (pp)."""
    d = 100 * (np.array(v[b][f"{m}_per_seed"]) - np.array(v[a][f"{m}_per_seed"]))
    return float(d.mean()), float(d.std())


def criteria(v: dict) -> list[dict]:
    """The issue's three criteria, each with its numbers and a verdict."""
    out = []
    for m in ("unseen_top1", "seen_top1", "cross_format_top1"):
        (f, fs), (d, ds) = _pp(v, "fixed_renderer", m), _pp(v, "draction", m)
        bar = 2 * max(fs, ds)
        out.append({"criterion": f"learnable DrAction beats the fixed renderer by > 2 seed-std ({TITLES[m]})",
                    "value": f"{d:.1f} ± {ds:.1f} vs {f:.1f} ± {fs:.1f}: {d - f:+.1f} pp (bar {bar:.1f})",
                    "pass": d - f > bar})
    chance = 100 * v["draction"]["chance"]["unseen"]
    for name in VARIANTS:
        u, us = _pp(v, name, "unseen_top1")
        out.append({"criterion": f"novel unseen top-1 ≥ 2× chance ({name})",
                    "value": f"{u:.1f} ± {us:.1f} vs 2 × {chance:.1f} = {2 * chance:.1f}",
                    "pass": u >= 2 * chance})
    for a, b in STEPS[1:]:
        (x, xs), (y, ys) = _pp(v, a, "unseen_top1"), _pp(v, b, "unseen_top1")
        spread = max(xs, ys)
        dm, dsd = paired(v, a, b, "unseen_top1")
        out.append({"criterion": f"{b.rsplit('+', 1)[-1]} adds ≥ 1 pt beyond the seed spread "
                                 f"(novel unseen top-1, {a} → {b})",
                    "value": f"{y - x:+.1f} pp (seed spread {spread:.1f}; paired per seed "
                             f"{dm:+.1f} ± {dsd:.1f})",
                    "pass": y - x >= 1.0 + spread})
    return out


# ----------------------------------------------------------------------------- analysis


def _top_answer(table: dict, y: str) -> tuple[str, float]:
    row = table.get(y, {})
    if not row:
        return "-", 0.0
    p = max(row, key=row.get)
    return p, row[p] / sum(row.values())


def _one_answer(table: dict, share: float = 0.6) -> str | None:
    counts: dict = {}
    for row in table.values():
        for p, c in row.items():
            counts[p] = counts.get(p, 0) + c
    total = sum(counts.values())
    if not total:
        return None
    p = max(counts, key=counts.get)
    return p if counts[p] >= share * total else None


def analysis(result: dict) -> list[str]:
    v = result["variants"]
    ch = {k: 100 * c for k, c in v["draction"]["chance"].items()}
    lines = []
    u = {k: _pp(v, k, "unseen_top1") for k in VARIANTS}
    mi = {k: _pp(v, k, "novel_mirror_top1") for k in VARIANTS}
    s = {k: _pp(v, k, "seen_top1") for k in VARIANTS}
    lines.append(
        f"Seen top-1 ({result['config']['num_choices']}-way, chance {ch['seen']:.0f}%): "
        + ", ".join(f"{k} {s[k][0]:.1f}" for k in VARIANTS) + ". "
        f"Novel zero-shot top-1 ({len(result['config']['unseen'])}-way, chance {ch['unseen']:.0f}%): "
        + ", ".join(f"{k} {u[k][0]:.1f} ± {u[k][1]:.1f}" for k in VARIANTS) + ". "
        f"Mirror zero-shot top-1 ({len(result['config']['mirror'])}-way, chance "
        f"{ch['novel_mirror']:.0f}%): " + ", ".join(f"{k} {mi[k][0]:.1f}" for k in VARIANTS) + ".")
    gap = [k for k in VARIANTS if u[k][0] - mi[k][0] > 2 * max(u[k][1], mi[k][1])]
    if gap:
        lines.append("The mirror split is harder than the novel one (by more than twice the seed "
                     "std) for " + ", ".join(gap) + ": telling an unseen mirror image from the "
                     "other unseen options needs the side, which the seen names teach only as "
                     "part of a whole name.")
    for name in ("unseen", "novel_mirror"):
        collapsed = [(k, _one_answer(v[k]["confusion"].get(name, {}))) for k in VARIANTS]
        collapsed = [(k, a) for k, a in collapsed if a]
        if collapsed:
            lines.append(f"On the {'novel' if name == 'unseen' else 'mirror'} split these variants "
                         "give one answer to ≥ 60% of all clips (the option text's own likelihood "
                         "outweighs the frames): " + ", ".join(f"{k} ('{a}')" for k, a in collapsed) + ".")
    for a, b in STEPS:
        dm, dsd = paired(v, a, b, "unseen_top1")
        ds, dss = paired(v, a, b, "seen_top1")
        lines.append(f"{a} → {b}: novel unseen {dm:+.1f} ± {dsd:.1f} pp, seen {ds:+.1f} ± {dss:.1f} pp "
                     "(same-seed differences, mean ± std over seeds).")
    c = {k: _pp(v, k, "caption_cos") for k in VARIANTS}
    cu = {k: _pp(v, k, "unseen_caption_cos") for k in VARIANTS}
    lines.append("Captions (cosine to the true class description ×100, MiniLM): seen "
                 + ", ".join(f"{k} {c[k][0]:.1f}" for k in VARIANTS) + "; unseen "
                 + ", ".join(f"{k} {cu[k][0]:.1f}" for k in VARIANTS) + ".")
    return lines


# ----------------------------------------------------------------------------- markdown


def _table(v: dict, metrics) -> list[str]:
    lines = ["| variant | " + " | ".join(TITLES[m] for m in metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for name in VARIANTS:
        cells = [f"{100 * v[name][m]:.1f} ± {100 * v[name][m + '_std']:.1f}" if m in v[name] else "–"
                 for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    chance = v["draction"]["chance"]
    lines.append("| chance | " + " | ".join(
        f"{100 * chance[CHANCE_KEY[m]]:.1f}" if CHANCE_KEY.get(m) in chance else "–" for m in metrics) + " |")
    return lines


def _confusion_table(v: dict, name: str, classes: list[str]) -> list[str]:
    lines = ["| true class | " + " | ".join(VARIANTS) + " |", "|---" * (len(VARIANTS) + 1) + "|"]
    for y in classes:
        cells = []
        for k in VARIANTS:
            p, share = _top_answer(v[k]["confusion"].get(name, {}), y)
            cells.append(f"{p} ({100 * share:.0f}%)")
        lines.append(f"| {y} | " + " | ".join(cells) + " |")
    return lines


def _times(result: dict) -> list[str]:
    per: dict[str, list] = {}
    for seed_times in result["times"].values():
        for name, t in seed_times.items():
            key = "evaluation" if name.startswith("eval") else name
            per.setdefault(key, []).append(t)
    lines = ["| job | wall min (sum over seeds) | CPU min (sum over seeds) |", "|---|---|---|"]
    total_w = total_c = 0.0
    for name, ts in per.items():
        w, c = sum(t["wall_s"] for t in ts) / 60, sum(t["cpu_s"] for t in ts) / 60
        total_w, total_c = total_w + w, total_c + c
        lines.append(f"| {name} | {w:.1f} | {c:.1f} |")
    lines.append(f"| **total** | **{total_w:.1f}** | **{total_c:.1f}** |")
    return lines


def render_markdown(result: dict) -> str:
    v, cfg = result["variants"], result["config"]
    n = v["draction"]["n"]
    lines = [
        "# SkeletonLLM on the pretrained start (SmolLM2-135M + DINOv2-small, CPU)", "",
        f"Seeds {cfg['seeds']}, mean ± std over seeds, split **{cfg['split']}**. Zero-shot "
        f"split `novel`: {len(cfg['seen'])} seen classes; unseen = {', '.join(cfg['unseen'])} "
        f"({n['unseen']} clips, {len(cfg['unseen'])}-way); the mirror split shares the seen "
        f"classes and holds out {', '.join(cfg['mirror'])} ({n['novel_mirror']} clips, "
        f"{len(cfg['mirror'])}-way). Seen top-1 is {cfg['num_choices']}-way ({n['seen']} clips), "
        f"cross-format {cfg['num_choices']}-way on {cfg['cross_format']} clips "
        f"({n.get('cross_format', 0)}). Reading: T' = {cfg['num_render_frames']} frames at "
        f"{cfg['vision_size']} px, {result.get('tokens_per_frame', 4)} LM tokens per frame, "
        f"bf16 autocast (renderer in fp32). Steps: {cfg['steps']} (batch "
        f"{cfg['per_device_train_batch_size']} clips).", "",
    ]
    lines += _table(v, METRICS[:4]) + [""] + _table(v, METRICS[4:]) + [""]
    lines += ["## Criteria", ""] + [f"- {'**pass**' if c['pass'] else '**fail**'} — {c['criterion']}: "
                                     f"{c['value']}" for c in criteria(v)]
    lines += ["", "## Reading the numbers", ""] + [f"- {t}" for t in analysis(result)]
    lines += ["", "## What the unseen clips are taken for (all seeds)", "",
              "Most frequent answer per true class (share of its clips), novel split:", ""]
    lines += _confusion_table(v, "unseen", cfg["unseen"]) + ["", "Mirror split:", ""]
    lines += _confusion_table(v, "novel_mirror", cfg["mirror"])
    ex = v["draction+discft+crdistill"]
    lines += ["", "## Caption examples (seed of the first run, full curriculum)", ""]
    lines += [f"- seen '{e['label']}': {e['caption']!r}" for e in ex.get("caption_examples", [])[:4]]
    lines += [f"- unseen '{e['label']}': {e['caption']!r}" for e in ex.get("unseen_caption_examples", [])[:4]]
    r = result.get("renderer", {})
    if r:
        lines += ["", "## The renderer before vs after the curriculum", "", "![frames](skeleton_frames.png)",
                  "", renderer_note(r)]
    lines += ["", "## Compute", ""] + _times(result)
    lines += ["", "## Reproduce", "", "```", result["command"], "```", ""]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- renderer study


def _renderers(base: Path, trained: Path):
    from posrft.policy.checkpoint import load_module
    from posrft.skeleton.model import RENDERER_CONFIG, RENDERER_WEIGHTS, RendererSettings, build_renderer

    settings = RendererSettings.from_json_file(trained / RENDERER_CONFIG)
    size = settings.image_size or settings.vision_size or 224
    before = build_renderer(settings, size)
    after = build_renderer(settings, size)
    load_module(after, trained / RENDERER_WEIGHTS)
    return before.eval(), after.eval()


def renderer_study(base: Path, trained: Path, data, fmt: str, png: Path) -> dict:
    """Parameter change, image statistics and a before/after picture of one seen test clip."""
    import torch
    from PIL import Image, ImageDraw

    from posrft.render.pictures import frame_grid

    before, after = _renderers(base, trained)
    out = {"scales_before": torch.exp(before.log_scales).tolist(),
           "scales_after": torch.exp(after.log_scales).tolist(),
           "depth_mix_before": torch.sigmoid(before.appearance.depth_mix).item(),
           "depth_mix_after": torch.sigmoid(after.appearance.depth_mix).item()}
    rel = {}
    with torch.no_grad():
        for (name, pa), (_, pb) in zip(after.named_parameters(), before.named_parameters()):
            if pb.norm() > 1e-3:
                rel[name] = float((pa - pb).norm() / pb.norm())
    out["relative_change"] = rel
    test = data.get("test", fmt).subset(data.seen)
    x = torch.from_numpy(test.clips[:32])
    labels = test.labels[:32]
    rows = []
    with torch.no_grad():
        for tag, r in (("before", before), ("after", after)):
            img = r(x)
            out[f"lit_{tag}"] = float((img.amax(2) > 0.1).float().mean())
            out[f"mean_{tag}"] = float(img.mean())
            means = torch.stack([img[[i for i, y in enumerate(labels) if y == c]].mean(0)
                                 for c in sorted(set(labels))])
            out[f"class_contrast_{tag}"] = float((means - means.mean(0)).pow(2).mean())
            big = torch.nn.functional.interpolate(img[0], scale_factor=2, mode="nearest")
            grid = frame_grid(big, cols=img.shape[1])
            canvas = Image.new("RGB", (grid.width, grid.height + 18), (255, 255, 255))
            canvas.paste(grid, (0, 18))
            title = "initial DrAction" if tag == "before" else "after the curriculum"
            ImageDraw.Draw(canvas).text((4, 3), f"{title}: '{labels[0]}'", fill=(0, 0, 0))
            rows.append(canvas)
    pic = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        pic.paste(r, (0, y))
        y += r.height
    tmp = png.with_suffix(".tmp.png")
    pic.save(tmp)
    os.replace(tmp, png)
    return out


def renderer_note(r: dict) -> str:
    sb, sa = r["scales_before"], r["scales_after"]
    top = sorted(r.get("relative_change", {}).items(), key=lambda kv: -kv[1])[:3]
    return (f"Gaussian scales (joint, along-bone, across-bone) {sb[0]:.3f}/{sb[1]:.3f}/{sb[2]:.3f} → "
            f"{sa[0]:.3f}/{sa[1]:.3f}/{sa[2]:.3f}; depth-colour mix {r['depth_mix_before']:.3f} → "
            f"{r['depth_mix_after']:.3f}. On 32 seen test clips the lit-pixel share goes "
            f"{100 * r['lit_before']:.1f}% → {100 * r['lit_after']:.1f}%, mean brightness "
            f"{r['mean_before']:.3f} → {r['mean_after']:.3f}, between-class contrast (mean squared "
            f"difference of class-mean frames) {r['class_contrast_before']:.4f} → "
            f"{r['class_contrast_after']:.4f}. Parameters that moved most (relative L2): "
            + ", ".join(f"{k} {100 * c:.0f}%" for k, c in top) + ".")
