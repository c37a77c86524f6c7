"""What each HyGRPO pose-learning option buys, on the tiny offline text→pose benchmark.

    python benchmarks/hygrpo_study.py --out docs/results [--work runs/hygrpo_study] [--quick]

Stages (each resumable: a finished run leaves ``WORK/<run>/result.json`` and is not redone):

1. data: ``posrft data synth --task text2pose`` (6,000 poses, seed 0);
2. SFT start: the tiny text-only model, Gaussian head trained with ``pose_loss: l2_nll`` (μ as
   a deterministic head would learn it, σ fitted to μ's error); also ``nll`` and ``l2`` starts
   for the SFT-loss comparison;
3. RL: every variant below × every seed, from the same SFT start (the seeds vary the RL run:
   rollout sampling, pose noise, prompt order), evaluated on val (used to choose settings) and
   test (reported);
4. control: supervised L2 on μ continued from the same start with the same prompts (as many
   prompt visits as the RL runs make), at two learning rates, the better on val reported.

Each variant changes one thing relative to ``base`` (K = 16 pose samples per text rollout,
per-joint credit, fixed σ, no KL), so its row shows what that option is worth:

    base                K 16, per-joint credit, σ fixed 0.05, β 0, pose groups over the prompt
    K1 / K4             nested pose samples per text rollout (K 1 is the paper)
    no_credit           one advantage per pose sample (no per-joint credit)
    siblings            pose advantages normalised over the K siblings, not the prompt's V×K
    sigma_learned       exploration σ as the SFT head predicts it
    sigma_free          one learned σ per dimension (state independent), starting at 0.05
    kl_gaussian         + pose KL β_p 0.04, closed-form Gaussian (scales as 1/σ²)
    kl_mean_l2          + pose KL β_p 0.04, (μ−μ_ref)²/(2·0.1²)

Writes ``OUT/hygrpo_study.json`` and ``OUT/hygrpo_study.md`` (tables with mean ± std over
seeds, step times, the gradient-direction diagnostic, criteria) and prints the markdown; the
last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

REWARDS = [
    {"func": "format", "target": "text"},
    {"func": "joint", "name": "joint_pelvis", "target": "pose",
     "kwargs": {"kind": "neg_mean", "per_joint": True, "tau": 0.1}},
    {"func": "joint", "name": "joint_pa", "target": "pose",
     "kwargs": {"kind": "neg_mean", "align": "procrustes", "per_joint": True, "tau": 0.1}},
]  # fmt: skip

SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "data": 6000, "eval_val": 200, "eval_test": 400, "seeds": [0, 1, 2],
        "sft": {"max_steps": 2000, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0},
        "rl": {"max_steps": 100, "learning_rate": 1e-4, "per_device_train_batch_size": 64,
               "num_generations": 4, "num_pose_samples": 16, "max_completion_length": 32,
               "beta": 0.0, "pose_beta": 0.0, "pose_sigma": "fixed", "pose_sigma_value": 0.05,
               "per_joint_credit": True, "logging_steps": 10, "pose_grad_check_samples": 256},
        "control_lrs": [1e-4, 1e-3],
    },
    "quick": {
        "data": 400, "eval_val": 32, "eval_test": 40, "seeds": [0, 1],
        "sft": {"max_steps": 60, "learning_rate": 1e-3, "per_device_train_batch_size": 16,
                "pose_loss_weight": 10.0},
        "rl": {"max_steps": 6, "learning_rate": 1e-4, "per_device_train_batch_size": 16,
               "num_generations": 4, "num_pose_samples": 8, "max_completion_length": 32,
               "beta": 0.0, "pose_beta": 0.0, "pose_sigma": "fixed", "pose_sigma_value": 0.05,
               "per_joint_credit": True, "logging_steps": 2, "pose_grad_check_samples": 64},
        "control_lrs": [1e-4, 1e-3],
    },
}

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "K1": {"num_pose_samples": 1},
    "K4": {"num_pose_samples": 4},
    "no_credit": {"per_joint_credit": False},
    "siblings": {"pose_advantage_group": "siblings"},
    "sigma_learned": {"pose_sigma": "learned", "pose_sigma_value": None},
    "sigma_free": {"pose_sigma": "state_independent"},
    "kl_gaussian": {"pose_beta": 0.04, "pose_kl": "gaussian"},
    "kl_mean_l2": {"pose_beta": 0.04, "pose_kl": "mean_l2", "pose_kl_scale": 0.1},
}
SFT_LOSSES = ("l2_nll", "nll", "l2")
METRICS = ("mpjpe_mm", "pa_mpjpe_mm")


def _evaluate(model: Path, data: Path, s: dict[str, Any]) -> dict[str, dict[str, float]]:
    from posrft.eval.evaluate import evaluate_model

    out = {}
    for split, n in (("val", s["eval_val"]), ("test", s["eval_test"])):
        res = evaluate_model(str(model), str(data), "text2pose", split=split, num_samples=n)
        out[split] = {k: float(res[k]) for k in ("mpjpe_mm", "pa_mpjpe_mm", "valid_rate", "format_accuracy")}
    return out


def _done(path: Path) -> dict[str, Any] | None:
    f = path / "result.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _save(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    from posrft.files import atomic_write_json

    atomic_write_json(path / "result.json", result)
    return result


def sft_stage(work: Path, data: Path, base: Path, loss: str, s: dict[str, Any]) -> dict[str, Any]:
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    out = work / f"sft_{loss}"
    if (r := _done(out)) is not None:
        return r
    t = time.perf_counter()
    run_sft(SFTConfig(model_name_or_path=str(base), dataset_path=str(data), output_dir=str(out),
                      pose_loss=loss, seed=0, report_to=["none"], logging_steps=100, **s["sft"]))
    return _save(out, {"train_s": time.perf_counter() - t, **_evaluate(out / "final", data, s)})


def rl_stage(work: Path, data: Path, start: Path, name: str, seed: int, s: dict[str, Any],
             tag: str = "") -> dict[str, Any]:
    from posrft.train.config import HyGRPOConfig
    from posrft.train.hygrpo import run_hygrpo

    out = work / f"rl_{name}{tag}_s{seed}"
    if (r := _done(out)) is not None:
        return r
    cfg = {**s["rl"], **VARIANTS[name]}
    t = time.perf_counter()
    run_hygrpo(HyGRPOConfig(model_name_or_path=str(start), dataset_path=str(data), output_dir=str(out),
                            seed=seed, rewards=REWARDS, num_rollout_workers=0, report_to=["none"],
                            log_completions=False, resume_from_checkpoint="latest",
                            save_steps=max(1, cfg["max_steps"] // 3), **cfg))  # fmt: skip
    train_s = time.perf_counter() - t
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    cos = [r["grad/pose_cosine"] for r in log if "grad/pose_cosine" in r]
    return _save(out, {"train_s": train_s, "step_s": statistics.median(r["time/step"] for r in log),
                       "pose_samples_per_step": statistics.mean(r["pose/samples"] for r in log),
                       "grad_cosine": statistics.mean(cos) if cos else None,
                       "prompts": cfg["max_steps"] * cfg["per_device_train_batch_size"] // cfg["num_generations"],
                       **_evaluate(out / "final", data, s)})  # fmt: skip


def control_stage(work: Path, data: Path, start: Path, lr: float, seed: int, prompts: int,
                  s: dict[str, Any], tag: str = "") -> dict[str, Any]:
    """Supervised L2 on μ from the RL start with the RL runs' prompt count (bs 16 per step)."""
    from posrft.train.config import SFTConfig
    from posrft.train.sft import run_sft

    out = work / f"control{tag}_lr{lr:g}_s{seed}"
    if (r := _done(out)) is not None:
        return r
    t = time.perf_counter()
    bs = s["sft"]["per_device_train_batch_size"]
    run_sft(SFTConfig(model_name_or_path=str(start), dataset_path=str(data), output_dir=str(out),
                      pose_loss="l2", pose_loss_weight=s["sft"]["pose_loss_weight"], learning_rate=lr,
                      per_device_train_batch_size=bs, max_steps=max(1, prompts // bs), seed=seed,
                      report_to=["none"], logging_steps=100))  # fmt: skip
    return _save(out, {"train_s": time.perf_counter() - t, **_evaluate(out / "final", data, s)})


def _stats(rows: list[dict[str, Any]], split: str, key: str) -> tuple[float, float]:
    vals = [r[split][key] for r in rows]
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _summary(rows: list[dict[str, Any]], s0: dict[str, float]) -> dict[str, Any]:
    (m, ms), (p, ps) = _stats(rows, "test", "mpjpe_mm"), _stats(rows, "test", "pa_mpjpe_mm")
    return {"mpjpe": [m, ms], "pa_mpjpe": [p, ps],
            "rel_mpjpe": m / s0["mpjpe_mm"] - 1, "rel_pa_mpjpe": p / s0["pa_mpjpe_mm"] - 1}


def _criteria(b: dict[str, Any], c: dict[str, Any]) -> dict[str, bool]:
    return {
        "mpjpe_down_7pct": b["rel_mpjpe"] <= -0.07,
        "pa_mpjpe_down_7pct": b["rel_pa_mpjpe"] <= -0.07,
        "beats_control_mpjpe": c["mpjpe"][0] - b["mpjpe"][0] > 2 * max(b["mpjpe"][1], c["mpjpe"][1]),
        "beats_control_pa_mpjpe": c["pa_mpjpe"][0] - b["pa_mpjpe"][0] > 2 * max(b["pa_mpjpe"][1], c["pa_mpjpe"][1]),
    }


def _from_l2_section(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Base and the control again, from the deterministic SFT start (μ by L2 alone)."""
    s0 = {k: results["sft"]["l2"]["test"][k] for k in METRICS}
    part = results["from_l2"]
    ctrl = part["control"]
    best_lr = min(ctrl, key=lambda lr: statistics.mean(r["val"]["mpjpe_mm"] for r in ctrl[lr]))
    b, c = _summary(part["rl"], s0), {**_summary(ctrl[best_lr], s0), "lr": float(best_lr)}
    crit = _criteria(b, c)
    summary["from_l2"] = {"base": b, "control": c, "criteria": crit}
    lines = ["", "## From the deterministic SFT start (μ trained by L2 alone; RL's σ is fixed, so the head's σ is unused)", "",
             "The l2_nll start above was trained before `run_sft` stopped σ's NLL gradient at the "
             "pose head's shared features; σ's NLL then reached the trunk and the backbone and left "
             "μ behind l2's. With the stop-gradient, l2_nll trains μ, the trunk and the backbone "
             "exactly as l2 does (tests/test_pose_credit.py), so this is the start l2_nll gives now.", "",
             "| run | MPJPE | Δ vs start | PA-MPJPE | Δ vs start |", "|---|---|---|---|---|",
             f"| SFT start (l2) | {s0['mpjpe_mm']:.1f} | – | {s0['pa_mpjpe_mm']:.1f} | – |"]
    for name, r in ((f"base ({len(part['rl'])} seeds)", b), (f"supervised L2 control (lr {best_lr} chosen on val)", c)):
        lines.append(f"| {name} | {r['mpjpe'][0]:.1f} ± {r['mpjpe'][1]:.1f} | {100 * r['rel_mpjpe']:+.1f} % | "
                     f"{r['pa_mpjpe'][0]:.1f} ± {r['pa_mpjpe'][1]:.1f} | {100 * r['rel_pa_mpjpe']:+.1f} % |")
    lines += ["", "Criteria from this start:", ""]
    lines += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in crit.items()]
    return lines


def report(results: dict[str, Any], s: dict[str, Any], out: Path, wall_s: float) -> dict[str, Any]:
    from posrft.files import atomic_write_json, atomic_write_text

    start = results["sft"]["l2_nll"]
    compute = sum(r["train_s"] for r in results["sft"].values())
    compute += sum(r["train_s"] for rows in results["rl"].values() for r in rows)
    compute += sum(r["train_s"] for rows in results["control"].values() for r in rows)
    if "from_l2" in results:
        compute += sum(r["train_s"] for r in results["from_l2"]["rl"])
        compute += sum(r["train_s"] for rows in results["from_l2"]["control"].values() for r in rows)
    lines = ["# HyGRPO pose learning on the tiny text→pose benchmark", "",
             "Regenerate: `python benchmarks/hygrpo_study.py --out docs/results` "
             f"(training time of the runs below: {compute / 3600:.1f} h on a 2-core CPU shared with "
             "other jobs; finished runs are reused). Data: 6,000 text→pose poses, prior and captioner "
             "version 1. Settings were chosen on val; "
             f"the tables report **test** ({s['eval_test']} samples), mean ± std over seeds "
             f"{s['seeds']} of the RL run, all from one SFT start.", "",
             "## SFT starts (one seed)", "", "| SFT pose loss | val MPJPE | val PA-MPJPE | test MPJPE | test PA-MPJPE |",
             "|---|---|---|---|---|"]
    for loss, r in results["sft"].items():
        lines.append(f"| {loss} | {r['val']['mpjpe_mm']:.1f} | {r['val']['pa_mpjpe_mm']:.1f} | "
                     f"{r['test']['mpjpe_mm']:.1f} | {r['test']['pa_mpjpe_mm']:.1f} |")
    lines += ["", "## RL variants (test)", "",
              "| run | MPJPE | Δ vs start | PA-MPJPE | Δ vs start | grad cos | pose samples/step | s/step |",
              "|---|---|---|---|---|---|---|---|"]
    s0 = {k: start["test"][k] for k in METRICS}
    lines.append(f"| SFT start (l2_nll) | {s0['mpjpe_mm']:.1f} | – | {s0['pa_mpjpe_mm']:.1f} | – | – | – | – |")
    summary: dict[str, Any] = {}
    for name, rows in results["rl"].items():
        (m, ms), (p, ps) = _stats(rows, "test", "mpjpe_mm"), _stats(rows, "test", "pa_mpjpe_mm")
        cos = [r["grad_cosine"] for r in rows if r.get("grad_cosine") is not None]
        summary[name] = {"mpjpe": [m, ms], "pa_mpjpe": [p, ps],
                         "rel_mpjpe": m / s0["mpjpe_mm"] - 1, "rel_pa_mpjpe": p / s0["pa_mpjpe_mm"] - 1}
        lines.append(f"| {name} | {m:.1f} ± {ms:.1f} | {100 * (m / s0['mpjpe_mm'] - 1):+.1f} % | "
                     f"{p:.1f} ± {ps:.1f} | {100 * (p / s0['pa_mpjpe_mm'] - 1):+.1f} % | "
                     f"{statistics.mean(cos):.3f} | {rows[0]['pose_samples_per_step']:.0f} | "
                     f"{statistics.mean(r['step_s'] for r in rows):.2f} |" if cos else
                     f"| {name} | {m:.1f} ± {ms:.1f} | {100 * (m / s0['mpjpe_mm'] - 1):+.1f} % | "
                     f"{p:.1f} ± {ps:.1f} | {100 * (p / s0['pa_mpjpe_mm'] - 1):+.1f} % | – | "
                     f"{rows[0]['pose_samples_per_step']:.0f} | {statistics.mean(r['step_s'] for r in rows):.2f} |")
    ctrl = results["control"]
    best_lr = min(ctrl, key=lambda lr: statistics.mean(r["val"]["mpjpe_mm"] for r in ctrl[lr]))
    (m, ms), (p, ps) = _stats(ctrl[best_lr], "test", "mpjpe_mm"), _stats(ctrl[best_lr], "test", "pa_mpjpe_mm")
    summary["control"] = {"mpjpe": [m, ms], "pa_mpjpe": [p, ps], "lr": float(best_lr),
                          "rel_mpjpe": m / s0["mpjpe_mm"] - 1, "rel_pa_mpjpe": p / s0["pa_mpjpe_mm"] - 1}
    lines.append(f"| supervised L2 control (same prompts, lr {best_lr} chosen on val) | {m:.1f} ± {ms:.1f} | "
                 f"{100 * (m / s0['mpjpe_mm'] - 1):+.1f} % | {p:.1f} ± {ps:.1f} | "
                 f"{100 * (p / s0['pa_mpjpe_mm'] - 1):+.1f} % | – | – | – |")
    b, c = summary["base"], summary["control"]
    crit = _criteria(b, c)
    lines += ["", "## Criteria (base row; 'beats' = mean difference > 2 seed-std)", ""]
    lines += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in crit.items()]
    if "from_l2" in results:
        lines += _from_l2_section(results, summary)
    payload = {"settings": s, "variants": VARIANTS, "results": results, "summary": summary,
               "criteria": crit, "wall_s": wall_s}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "hygrpo_study.json", payload)
    atomic_write_text(out / "hygrpo_study.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"base_rel_mpjpe": b["rel_mpjpe"], "base_rel_pa_mpjpe": b["rel_pa_mpjpe"],
            "control_rel_mpjpe": c["rel_mpjpe"], "control_rel_pa_mpjpe": c["rel_pa_mpjpe"], **crit}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("runs/hygrpo_study"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline (minutes)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="*", default=None,
                    help="RL/control seeds (default: the settings'); processes can split them")
    ap.add_argument("--from-l2", action="store_true",
                    help="also run base and the control from the deterministic (l2) SFT start")
    ap.add_argument("--sft-losses", nargs="*", default=list(SFT_LOSSES[1:]), choices=SFT_LOSSES[1:],
                    help="SFT pose losses compared with l2_nll (two processes can split the work)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from posrft.data.synth import synth_dataset
    from posrft.policy.tiny import build_tiny_text_model

    s = SETTINGS["quick" if args.quick else "full"]
    if args.seeds is not None:
        s = {**s, "seeds": args.seeds}
    work = args.work / ("quick" if args.quick else "full")
    t0 = time.perf_counter()
    data, base = work / "data", work / "tiny_text"
    if not (data / "dataset_dict.json").is_file():
        # the prior and captioner this study was measured with (v1, before issue 20's v2)
        synth_dataset("text2pose", n=s["data"], out=data, seed=0, prior_version=1, captioner_version=1)
    if not (base / "config.json").is_file():
        build_tiny_text_model(base, seed=0)
    results: dict[str, Any] = {"sft": {"l2_nll": sft_stage(work, data, base, "l2_nll", s)}, "rl": {}}
    start = work / "sft_l2_nll" / "final"
    prompts = s["rl"]["max_steps"] * s["rl"]["per_device_train_batch_size"] // s["rl"]["num_generations"]
    # the criteria first (base and the control), then the ablations; the report is rewritten
    # after every stage, so a long run can be read (and resumed) part way
    results["rl"]["base"] = [rl_stage(work, data, start, "base", seed, s) for seed in s["seeds"]]
    results["control"] = {lr: [control_stage(work, data, start, lr, seed, prompts, s) for seed in s["seeds"]]
                          for lr in s["control_lrs"]}  # fmt: skip
    headline = report(results, s, args.out, time.perf_counter() - t0)
    for name in [v for v in args.variants if v != "base"]:
        results["rl"][name] = [rl_stage(work, data, start, name, seed, s) for seed in s["seeds"]]
        headline = report(results, s, args.out, time.perf_counter() - t0)
    for loss in args.sft_losses:
        results["sft"][loss] = sft_stage(work, data, base, loss, s)
        headline = report(results, s, args.out, time.perf_counter() - t0)
    if args.from_l2:
        # the criteria again from the best SFT start: μ trained by L2 alone (σ is fixed in RL)
        results["sft"]["l2"] = sft_stage(work, data, base, "l2", s)
        start2, tag = work / "sft_l2" / "final", "_from_l2"
        results["from_l2"] = {
            "rl": [rl_stage(work, data, start2, "base", seed, s, tag) for seed in s["seeds"]],
            "control": {lr: [control_stage(work, data, start2, lr, seed, prompts, s, tag) for seed in s["seeds"]]
                        for lr in s["control_lrs"]},
        }  # fmt: skip
        headline = report(results, s, args.out, time.perf_counter() - t0)
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
