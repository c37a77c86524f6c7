"""What one SkeletonLLM training step costs on the pretrained start, per setting.

One optimizer step = render B clips (DrAction, T' frames) -> resize/normalise -> DINOv2-small
(frozen; the backward still runs through it to reach the renderer) -> pixel-shuffle projector
-> SmolLM2-135M with LoRA -> answer loss -> backward -> AdamW. Questions are the warm-up's
4-way multiple choice. Every row is timed in this run against the baseline row (measured first
and again last, to see drift from other jobs on the machine); phases: render, tower (+
projector), LM forward, backward, optimizer.

Rows: T' in {4, 6, 12}; vision input 224 vs 112 px; 16 vs 4 tokens per frame (224 px with the
16 tokens average-pooled 2×2, or 112 px whose 8×8 patches shuffle into 2×2 tokens); renderer
trained vs frozen (the refinement stage); LoRA on all 30 LM layers vs the top 8; fp32 vs bf16
autocast.

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/skeleton_step.py --model runs/smol-dino \
        --out docs/results/skeleton_step.json

Times are CPU seconds of this process (``time.process_time``; run it with one thread so that
other jobs on a shared machine do not inflate them) and wall seconds; the ratio to the baseline
is of CPU seconds. Last line: one JSON object (seconds per step and ratio for every row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE = dict(frames=6, vision=224, pool=1, renderer=True, lora_layers=None, bf16=False)
ROWS = {
    "baseline T'6 224px 16tok": {},
    "T'4": dict(frames=4),
    "T'12": dict(frames=12),
    "224px pooled to 4 tok": dict(pool=2),
    "112px (4 tok)": dict(vision=112),
    "T'4 112px (4 tok)": dict(frames=4, vision=112),
    "renderer frozen (refine)": dict(renderer=False),
    "renderer frozen, LoRA top 8": dict(renderer=False, lora_layers=8),
    "LoRA top 8 (renderer trains)": dict(lora_layers=8),
    "bf16 autocast": dict(bf16=True),
    "bf16 T'4 112px": dict(bf16=True, frames=4, vision=112),
    "baseline again": {},
}


def build(model_dir: str, cfg: dict):
    import torch

    from posrft.skeleton.model import RendererSettings, SkeletonLLM

    settings = RendererSettings(num_frames=cfg["frames"], vision_size=cfg["vision"],
                                token_pool=cfg["pool"])
    m = SkeletonLLM.from_pretrained(model_dir, settings)
    parts = {"projector", "lora"} | ({"renderer"} if cfg["renderer"] else set())
    m.set_train_parts(parts, lora_layers=cfg["lora_layers"])
    groups = [{"params": m.renderer_parameters(), "lr": 5e-2}] if cfg["renderer"] else []
    groups.append({"params": m.model_parameters(), "lr": 2e-4})
    return m, torch.optim.AdamW(groups)


def one_step(m, opt, joints, enc, bf16: bool) -> dict:
    import torch

    from posrft.skeleton.reader import decoder_of, embed_with_images, run_decoder, target_logprobs

    t = {}
    c0 = time.process_time()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        pix = m.pixels(joints)
        t1 = time.perf_counter()
        images = m.image_tokens(pix)
        t2 = time.perf_counter()
        embeds = embed_with_images(m.hf_model, enc.input_ids, images)
        hidden = run_decoder(decoder_of(m.hf_model), embeds, enc.attention_mask)
        total, count = target_logprobs(m.hf_model, hidden, enc.input_ids, enc.target_mask)
        loss = -(total / count).mean()
    t3 = time.perf_counter()
    loss.backward()
    t4 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t5 = time.perf_counter()
    t.update(render=t1 - t0, tower=t2 - t1, lm_forward=t3 - t2, backward=t4 - t3, optimizer=t5 - t4,
             step=t5 - t0, cpu=time.process_time() - c0)
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="init-pretrained folder (DINOv2 + SmolLM2)")
    ap.add_argument("--batch", type=int, default=8, help="clips per step")
    ap.add_argument("--steps", type=int, default=1, help="timed steps per row (after 1 warm-up)")
    ap.add_argument("--rows", nargs="*", default=None, help="subset of the row names")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    import torch

    from posrft.data.action_classes import zero_shot_split
    from posrft.data.actions import make_clip
    from posrft.skeleton.inputs import encode_targets
    from posrft.skeleton.questions import multiple_choice

    seen, _ = zero_shot_split("16/4")
    rng = np.random.default_rng(0)
    labels = [seen[i % len(seen)] for i in range(args.batch)]
    joints = torch.from_numpy(np.stack([make_clip(y, seed=i) for i, y in enumerate(labels)]))
    qs = multiple_choice(range(args.batch), labels, seen, 4, rng)
    results = {}
    for name, change in ROWS.items():
        if args.rows and name not in args.rows:
            continue
        cfg = {**BASE, **change}
        m, opt = build(args.model, cfg)
        m.train()
        enc = encode_targets(m.processor, [q.prompt for q in qs], [q.target for q in qs],
                             cfg["frames"], m.image_seq_length, 64)
        one_step(m, opt, joints, enc, cfg["bf16"])  # warm-up
        times = [one_step(m, opt, joints, enc, cfg["bf16"]) for _ in range(args.steps)]
        best = min(times, key=lambda d: d["cpu"])
        results[name] = {"config": cfg, "tokens_per_frame": m.image_seq_length,
                         "prompt_tokens": int(enc.attention_mask.sum(1).float().mean()),
                         **{k: round(v, 3) for k, v in best.items()}}
        print(f"{name:34s} cpu {best['cpu']:6.2f} s wall {best['step']:6.2f} s  render {best['render']:.2f} tower "
              f"{best['tower']:.2f} lm {best['lm_forward']:.2f} backward {best['backward']:.2f} "
              f"opt {best['optimizer']:.2f}  ({m.image_seq_length} tok/frame, "
              f"{results[name]['prompt_tokens']} tokens/row)", flush=True)
        del m, opt
    base = [results[k]["cpu"] for k in ("baseline T'6 224px 16tok", "baseline again") if k in results]
    ref = min(base) if base else None
    for r in results.values():
        r["ratio_to_baseline"] = round(r["cpu"] / ref, 3) if ref else None
    out = {"batch_clips": args.batch, "threads": torch.get_num_threads(),
           "load_avg": os.getloadavg(), "rows": results}
    if args.out:
        from posrft.files import atomic_write_json

        atomic_write_json(Path(args.out), out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
