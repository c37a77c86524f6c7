"""Tiny offline policy: parameter count, forward time, training-step time, rollout time, per core.

Builds the tiny LLaVA model (seed 0) in a temp folder, loads it as a ``PosePolicy`` and times,
as the median of ``--repeats`` runs after ``--warmup`` runs:

* forward: ``forward_logprobs`` (no grad) on ``--batch`` sequences of ``--prompt-len`` +
  ``--completion-len`` tokens (each completion holds one ``<POSE>``), without and with one image
  per sequence (+16 image tokens each);
* step: the same forward with grad + backward + Adam step over all parameters;
* rollout: ``rollout`` of ``--prompts`` prompts × ``--generations`` completions of up to
  ``--new-tokens`` tokens (one generate call + one scoring forward).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/policy_tiny.py

Prints readable lines, then as its last line one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _median_time(fn: Callable[[], None], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--completion-len", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from posrft.policy import PosePolicy, build_tiny_model
    from posrft.policy.prompts import encode_prompts

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = build_tiny_model(Path(tmp) / "tiny", seed=0)
        build_s = time.perf_counter() - start
        policy = PosePolicy.from_pretrained(path)

    n_model = sum(p.numel() for p in policy.model.parameters())
    n_head = sum(p.numel() for p in policy.pose_head.parameters())
    vocab = len(policy.tokenizer)
    g = torch.Generator().manual_seed(0)
    b, p_len, c_len = args.batch, args.prompt_len, args.completion_len
    prompt_ids = torch.randint(10, vocab, (b, p_len), generator=g)
    prompt_ids[prompt_ids == policy.suppressed_token_ids[0]] = 10
    completion = torch.randint(10, vocab, (b, c_len), generator=g)
    completion[completion == policy.suppressed_token_ids[0]] = 10
    completion[:, c_len // 2] = policy.pose_token_id
    ones_p, ones_c = torch.ones_like(prompt_ids), torch.ones_like(completion)
    poses = torch.zeros(b, policy.config.pose_dim)
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8))
    enc_img = encode_prompts(policy.processing, ["x " * (p_len - 24)] * b, [image] * b, True)

    def inputs(with_image: bool):
        if with_image:
            return (enc_img.input_ids, enc_img.attention_mask, completion, ones_c, poses,
                    enc_img.pixel_values)
        return prompt_ids, ones_p, completion, ones_c, poses, None

    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-5)

    def forward(with_image: bool) -> None:
        with torch.no_grad():
            policy.forward_logprobs(*inputs(with_image))

    def step(with_image: bool) -> None:
        out = policy.forward_logprobs(*inputs(with_image))
        loss = -(out.token_logps.mean() + out.pose_logp.mean())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    figures: dict[str, float | int | str] = {
        "model_params": n_model, "pose_head_params": n_head, "vocab": vocab,
        "build_s": round(build_s, 3), "batch": b, "tokens_per_seq": p_len + c_len,
        "image_tokens_per_seq": int((enc_img.input_ids == policy.suppressed_token_ids[0]).sum(1)[0]),
        "threads": args.threads, "torch": torch.__version__,
    }
    for with_image in (False, True):
        tag = "img" if with_image else "text"
        fwd = _median_time(lambda: forward(with_image), args.repeats, args.warmup)
        stp = _median_time(lambda: step(with_image), args.repeats, args.warmup)
        figures[f"forward_{tag}_ms"] = round(1e3 * fwd, 2)
        figures[f"step_{tag}_ms"] = round(1e3 * stp, 2)

    prompts = [f"Describe pose number {i}." for i in range(args.prompts)]
    images = [image] * args.prompts

    def do_rollout() -> None:
        policy.rollout(prompts, images, num_generations=args.generations,
                       max_new_tokens=args.new_tokens, seed=0)

    figures["rollout_ms"] = round(1e3 * _median_time(do_rollout, max(3, args.repeats // 3), 1), 1)
    figures["rollout_samples"] = args.prompts * args.generations
    figures["rollout_new_tokens"] = args.new_tokens

    print(f"tiny model: {n_model:,} params (+ pose head {n_head:,}), vocab {vocab}, "
          f"built in {build_s:.2f} s")
    for tag, label in (("text", "text only"), ("img", "1 image each")):
        print(f"{b} x {p_len + c_len} tokens, {label}: forward {figures[f'forward_{tag}_ms']} ms, "
              f"train step {figures[f'step_{tag}_ms']} ms")
    print(f"rollout {args.prompts} prompts x {args.generations} with images, up to {args.new_tokens} "
          f"new tokens: {figures['rollout_ms']} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
