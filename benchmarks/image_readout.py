"""Can a small reader learn the pose from the 16 image tokens the language model receives?

    python benchmarks/image_readout.py --start WORK/image2pose/start --data WORK/image2pose/data \
        [--layers -1 0 8 16 21 29] [--norm layer feature none] [--steps 900] [--cache FILE] \
        [--pose-head l2_nll nll+10 ...]

The image→pose SFT does not learn the heading (docs/pretrained.md), while a ridge probe on the
start's image tokens, concatenated, does. This separates "the tokens lack it" from "the language
model does not route it": the states at the ``<image>`` positions (``--layers``: -1 is the
projector's output, L ≥ 0 the output of decoder layer L, prompt only, frozen) are computed once,
and readers are trained on them with the SFT's budget (AdamW, batch 16, ``--steps``) and loss
(L2 on the 6D pose), then scored on val (MPJPE / PA-MPJPE in mm and the share of headings within
45°):

* ``mean``: an MLP on the mean token (position-agnostic);
* ``concat``: an MLP on the 16 tokens concatenated (position-specific weights, as the ridge);
* ``attend``: one attention layer with a learned query over the tokens, then the MLP — what a
  ``<POSE>`` position can do in one decoder layer, whose value vectors carry no position;
* ``attend+pos``: the same with a learned embedding per token position added first.

``--pose-head LOSS[+W] ...`` also trains the product's own head on the same tokens: a
:class:`~posrft.policy.pose_head.GaussianPoseHead` that reads the image (its
:class:`~posrft.policy.image_reader.ImageTokenReader`, standardisation fitted on the first 256
training pictures), the ``<POSE>`` state held at zero so only the picture informs it, trained
with SFT's pose loss ``LOSS`` (×10, as the table) plus ``W`` × the joint-space loss
(``pose_joint_loss_weight``), raw 6D targets: what ``head_reads_image`` can learn from a frozen
projector, without the language model.

Each reader's input is normalised as ``--norm`` says: ``layer`` (LayerNorm per token, as the
LM's own norms do), ``feature`` (each channel standardised with the training set's statistics)
or ``none``. Closed-form reference: ridge on the concatenated tokens (λ on val), and the training
set's mean pose. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn


class _Stop(Exception):
    pass


@torch.no_grad()
def image_states(policy: Any, rows: Any, layers: list[int], batch: int = 16) -> dict[int, torch.Tensor]:
    """``{L: (N, T, D)}``: each row's states at its ``<image>`` positions, after decoder layer
    ``L`` (``-1``: the projector's output, as the language model receives it). Only the prompt
    runs, and only up to the deepest layer asked for."""
    from posrft.policy.prompts import encode_prompts

    tok = getattr(policy.processing, "tokenizer", policy.processing)
    image_id = tok.convert_tokens_to_ids("<image>")
    decoder = policy.model.get_decoder()
    seen: dict[int, torch.Tensor] = {}

    def keep(i: int) -> Any:
        return lambda _m, _a, o: seen.__setitem__(i, (o[0] if isinstance(o, tuple) else o).float())

    def stop(*_a: Any, **_k: Any) -> None:
        raise _Stop

    hooks = [decoder.layers[0].register_forward_pre_hook(
        lambda _m, a, kw: seen.__setitem__(-1, (a[0] if a else kw["hidden_states"]).float()), with_kwargs=True)]
    hooks += [decoder.layers[i].register_forward_hook(keep(i)) for i in layers if i >= 0]
    deepest = max(layers)
    if deepest + 1 < len(decoder.layers):
        hooks.append(decoder.layers[deepest + 1].register_forward_pre_hook(stop, with_kwargs=True))
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    try:
        for s in range(0, len(rows), batch):
            part = rows.select(range(s, min(s + batch, len(rows))))
            enc = encode_prompts(policy.processing, part["prompt"], list(part["images"]), True, policy.family)
            seen.clear()
            try:
                policy.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                             **policy.model_inputs(enc.mm_inputs, None))
            except _Stop:
                pass
            mask = enc.input_ids == image_id
            for i in layers:
                out[i].append(torch.stack([seen[i][k][mask[k]] for k in range(mask.shape[0])]))
    finally:
        for h in hooks:
            h.remove()
    return {i: torch.cat(v) for i, v in out.items()}


class Reader(nn.Module):
    """Tokens (B, T, D) → 6D pose (B, P)."""

    def __init__(self, kind: str, tokens: int, dim: int, out: int, norm: str = "layer", width: int = 512) -> None:
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(dim) if norm == "layer" else nn.Identity()
        if kind.startswith("attend"):
            self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
            self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.pos = nn.Parameter(torch.zeros(tokens, dim)) if kind.endswith("+pos") else None
        inp = dim * tokens if kind == "concat" else dim
        self.mlp = nn.Sequential(nn.Linear(inp, width), nn.GELU(), nn.Linear(width, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.kind == "mean":
            h = x.mean(1)
        elif self.kind == "concat":
            h = x.flatten(1)
        else:
            if self.pos is not None:
                x = x + self.pos
            w = torch.softmax(self.key(x) @ self.query / math.sqrt(x.shape[-1]), dim=1)
            h = (w.unsqueeze(-1) * self.value(x)).sum(1)
        return self.mlp(h)


def score(pose6d: torch.Tensor, gt_joints: torch.Tensor, fk: Any) -> dict[str, float]:
    from probe_vision import _errors

    from posrft.data.views import facing_yaw_deg

    with torch.no_grad():
        joints = fk(pose6d.float())
    mpjpe, pa = _errors(joints, gt_joints)
    err = (facing_yaw_deg(joints.double()) - facing_yaw_deg(gt_joints) + 180) % 360 - 180
    return {"mpjpe": round(mpjpe, 1), "pa_mpjpe": round(pa, 1),
            "heading_within_45": round(float((err.abs() < 45).double().mean()), 3)}


def train_reader(kind: str, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, steps: int,
                 lr: float, seed: int, norm: str = "layer") -> torch.Tensor:
    """``norm``: "layer" (LayerNorm per token, learned affine), "feature" (each feature
    standardised with the training set's statistics), "none"."""
    torch.manual_seed(seed)
    mu, sd = y.mean(0), y.std(0) + 1e-6
    if norm == "feature":
        xm, xs = x.mean((0, 1)), x.std((0, 1)) + 1e-6
        x, xv = (x - xm) / xs, (xv - xm) / xs
    model = Reader(kind, x.shape[1], x.shape[2], y.shape[1], norm)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(x), (16,), generator=g)
        loss = ((model(x[i]) - (y[i] - mu) / sd) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return model(xv) * sd + mu


def train_pose_head(spec: str, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, steps: int, lr: float,
                    seed: int, fk: Any) -> torch.Tensor:
    """The product's pose head with an image reader on tokens ``(N, T, D)``; ``spec`` is
    ``LOSS`` or ``LOSS+W`` (module docstring). Returns μ on ``xv``."""
    from posrft.policy.pose_head import GaussianPoseHead
    from posrft.train.sft import joint_loss, pose_loss_per_sample

    loss_kind, _, weight = spec.partition("+")
    joint_weight = float(weight or 0)
    torch.manual_seed(seed)
    dim = x.shape[-1]
    head = GaussianPoseHead(dim, y.shape[1] // 6, image_token_size=dim)
    head.sigma_stops_gradient = loss_kind == "l2_nll"  # as run_sft
    head.image_reader.fit_normalization(x[:256].reshape(-1, dim))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(16, x.shape[1], dtype=torch.bool)
    for _ in range(steps):
        i = torch.randint(len(x), (16,), generator=g)
        dist = head(torch.zeros(16, dim), x[i], mask)
        loss = 10.0 * pose_loss_per_sample(dist, y[i], loss_kind).mean()
        if joint_weight:
            loss = loss + joint_weight * joint_loss(dist.mean, y[i], torch.ones(16, dtype=torch.bool), fk)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return head(torch.zeros(len(xv), dim), xv, torch.ones(len(xv), x.shape[1], dtype=torch.bool)).mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", required=True, help="policy folder whose projector emits the tokens")
    ap.add_argument("--data", required=True)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--norm", nargs="+", default=["layer"], choices=("layer", "feature", "none"),
                    help="input normalisation of the trained readers (each is run)")
    ap.add_argument("--layers", type=int, nargs="+", default=[-1], help="read the image positions' "
                    "states after these decoder layers (-1: the projector's output)")
    ap.add_argument("--cache", help="a .pt file for the states (written on the first run)")
    ap.add_argument("--pose-head", nargs="*", default=[], metavar="LOSS[+W]",
                    help="also train the product's reading pose head with these SFT losses")
    ap.add_argument("--readers", nargs="*", default=["mean", "concat", "attend", "attend+pos"],
                    choices=("mean", "concat", "attend", "attend+pos"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from datasets import load_from_disk
    from probe_vision import LAMBDAS, DualRidge

    from posrft.body.pose import pose_to_joints
    from posrft.policy.model import PosePolicy

    data = load_from_disk(args.data)
    rows = {"train": data["train"].select(range(min(args.train, len(data["train"])))),
            "val": data["val"].select(range(args.val))}  # fmt: skip
    t0 = time.perf_counter()
    if args.cache and os.path.isfile(args.cache):
        cached = torch.load(args.cache, weights_only=True)
        # a cache of the projector's output only: {"train": (N, T, D), "val": ...}
        states = {int(k): v for k, v in cached.items()} if "train" not in cached else {-1: cached}
    else:
        policy = PosePolicy.from_pretrained(args.start).eval()
        by_split = {k: image_states(policy, v, args.layers) for k, v in rows.items()}
        states = {i: {k: by_split[k][i] for k in rows} for i in args.layers}
        if args.cache:
            torch.save({str(i): v for i, v in states.items()}, args.cache)
    extract_s = time.perf_counter() - t0
    y = torch.tensor(np.asarray(rows["train"]["gt_pose_6d"], dtype=np.float32))
    gt = torch.tensor(np.asarray(rows["val"]["gt_joints"]), dtype=torch.float64)
    fk = pose_to_joints()
    report: dict[str, Any] = {"extract_s": round(extract_s, 1),
                              "mean_pose": score(y.mean(0).expand(len(gt), -1), gt, fk)}  # fmt: skip
    for layer in args.layers:
        tokens = states[layer]
        tag = "projector" if layer < 0 else f"layer {layer}"
        ridge = DualRidge(tokens["train"].flatten(1).double().numpy(), [tokens["val"].flatten(1).double().numpy()])
        best = min((score(torch.as_tensor(ridge.predict(y.double().numpy(), lam)[0]), gt, fk) for lam in LAMBDAS),
                   key=lambda r: r["mpjpe"])  # fmt: skip
        report[f"{tag}: ridge_concat (λ on val)"] = best
        print(tag, "ridge", json.dumps(best), flush=True)
        x, xv = tokens["train"], tokens["val"]
        jobs = [(f"{kind} ({norm})", lambda k=kind, n=norm: train_reader(k, x, y, xv, args.steps, args.lr, seed=0, norm=n))
                for norm in args.norm for kind in args.readers]
        jobs += [(f"pose head ({spec})", lambda s=spec: train_pose_head(s, x, y, xv, args.steps, args.lr, seed=0, fk=fk))
                 for spec in args.pose_head]  # fmt: skip
        for label, train in jobs:
            t = time.perf_counter()
            pred = train()
            name = f"{tag}: {label}"
            report[name] = {**score(pred, gt, fk), "seconds": round(time.perf_counter() - t, 1)}
            print(name, json.dumps(report[name]), flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
