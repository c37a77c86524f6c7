"""Benchmark DrAction's fast (windowed) rasteriser against the dense reference on CPU.

Setting: batch 1, NTU-25 (10 samples per bone: 25 + 24 * 10 = 265 Gaussians), 12 frames of
224 x 224, a 64-frame "walk in place" action clip (:func:`posrft.data.actions.make_clip`,
default performer) with small seeded jitter, the full renderer (skinning, projection,
appearance MLP + neural feature modulator, compositing).

Measured (median over ``--reps`` after a warm-up):
- ``fast_fps`` / ``dense_fps``: rendered frames per second of the forward pass under
  ``torch.no_grad()`` (inference), ``ratio = fast_fps / dense_fps``;
- ``backward_over_forward``: fast path, ``time(forward + backward) / time(forward)``, both with
  autograd on (the forward records the graph, as in training); the backward is
  ``images.mul(g).sum().backward()`` and reaches the joints and every renderer parameter;
- ``backward_over_nograd_forward``: the same numerator over the inference forward (stricter).

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/render.py [--threads 1]``.
The last line printed is one JSON object with these figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from posrft.data.actions import Subject, make_clip
from posrft.render import DrAction


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up: allocator and kernel caches
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both paths)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dense-reps", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument(
        "--dense-backward",
        action="store_true",
        help="also time the dense forward+backward (needs ~5 GB of memory at 224x224)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    clip = make_clip("walk in place", fmt="ntu25", num_frames=64, subject=Subject())
    clip = torch.from_numpy(clip)
    clip = clip + 0.005 * torch.randn(clip.shape, generator=gen)
    joints = clip[None].clone().requires_grad_(True)  # (1, 64, 25, 3)

    renderer = DrAction("ntu25", image_size=args.size, num_frames=args.frames).eval()
    n_frames = args.frames
    print(f"DrAction benchmark: ntu25, {renderer.num_primitives} Gaussians, {n_frames} frames "
          f"of {args.size}x{args.size}, batch 1, {torch.get_num_threads()} thread(s)")  # fmt: skip

    def forward(mode: str, grad: bool):
        renderer.rasterizer = mode
        with torch.set_grad_enabled(grad):
            return renderer(joints)

    g = torch.randn(1, n_frames, 3, args.size, args.size, generator=gen)

    def fwd_bwd(mode: str = "fast"):
        renderer.zero_grad(set_to_none=True)
        joints.grad = None
        forward(mode, True).mul(g).sum().backward()

    # glibc adapts its mmap threshold as large buffers are freed, so the first few calls of a
    # process pay page faults that later ones do not: warm every fast variant up first
    for _ in range(3):
        forward("fast", False)
        fwd_bwd()
    t_fast = _median_time(lambda: forward("fast", False), args.reps)
    t_fast_grad = _median_time(lambda: forward("fast", True), args.reps)
    t_fast_bwd = _median_time(fwd_bwd, args.reps)
    t_dense = _median_time(lambda: forward("dense", False), args.dense_reps)
    with torch.no_grad():
        diff = (forward("fast", False) - forward("dense", False)).abs().max().item()
    t_dense_bwd = None
    if args.dense_backward:
        t_dense_bwd = _median_time(lambda: fwd_bwd("dense"), 1)

    result = {
        "fast_fps": n_frames / t_fast,
        "dense_fps": n_frames / t_dense,
        "ratio": t_dense / t_fast,
        "backward_over_forward": t_fast_bwd / t_fast_grad,
        "backward_over_nograd_forward": t_fast_bwd / t_fast,
        "fast_forward_s": t_fast,
        "fast_forward_grad_s": t_fast_grad,
        "fast_forward_backward_s": t_fast_bwd,
        "dense_forward_s": t_dense,
        "dense_forward_backward_s": t_dense_bwd,
        "max_abs_diff_fast_vs_dense": diff,
        "gaussians": renderer.num_primitives,
        "frames": n_frames,
        "size": args.size,
        "threads": torch.get_num_threads(),
    }
    print(f"fast  forward (no grad): {t_fast * 1e3:8.1f} ms  -> {result['fast_fps']:7.1f} frames/s")
    print(f"fast  forward (grad)   : {t_fast_grad * 1e3:8.1f} ms")
    print(f"fast  forward+backward : {t_fast_bwd * 1e3:8.1f} ms  "
          f"({result['backward_over_forward']:.2f}x the grad forward)")  # fmt: skip
    print(f"dense forward (no grad): {t_dense * 1e3:8.1f} ms  -> "
          f"{result['dense_fps']:7.1f} frames/s")  # fmt: skip
    if t_dense_bwd is not None:
        print(f"dense forward+backward : {t_dense_bwd * 1e3:8.1f} ms")
    print(f"fast / dense speed-up  : {result['ratio']:.1f}x   max |fast - dense| = {diff:.2e}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
