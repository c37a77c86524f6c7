"""Train and evaluate the text–pose retrieval model (:mod:`posrft.eval.retrieval`).

Data: a text2pose ``DatasetDict`` folder (``datasets.load_from_disk``; e.g. written by
``posrft data synth``) with columns ``caption`` (str), ``gt_pose_6d`` (22 x 6 = 132 floats) and
``pose_id`` (int). Training uses the ``train`` split, evaluation the held-out ``test`` split
(``validation`` if there is no ``test``).

Two independent instances
    The semantic reward's model and the evaluator must not be the same network (the policy
    could otherwise learn the reward model's blind spots and be scored by them). Train them on
    disjoint halves of the train split — ``subset="a"``: even ``pose_id``, ``"b"``: odd
    ``pose_id`` (every caption of one pose lands on the same side) — with different seeds::

        posrft retrieval train --data DATA --out models/retrieval_reward --seed 0 --subset a
        posrft retrieval train --data DATA --out models/retrieval_eval   --seed 1 --subset b

Objective (symmetric InfoNCE, learnable temperature τ = 1/exp(s), s ≤ log 100)::

    L = ½ [ CE(exp(s) T Pᵀ, Y) + CE(exp(s) P Tᵀ, Yᵀ) ]

with unit text / pose embeddings ``T, P`` of a batch and soft targets ``Y`` (row-normalised):
``Y_ij = 1`` where pairs ``i`` and ``j`` share the caption or the pose (they are not negatives
of each other), so duplicates do not fight. Sentence embeddings and pose features are computed
once before training; an epoch is then a few milliseconds of MLP work per batch.

Augmentation: every pair is also used mirrored (pose mirrored left-right, "left" <-> "right" in
the caption; on by default), and optionally with ``recaption`` more captions per pose drawn
from the synthetic captioner. Measured on ``posrft data synth --task text2pose --n 4000``
(subset a = 1,600 training poses, seed 0; 400 test pairs), text->pose R@1 / R@10:
0.07 / 0.52 without mirroring, 0.095 / 0.54 with it (the default), 0.18 / 0.71 with
``recaption=3`` as well (chance: 0.0025 / 0.025).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from posrft.body.pose import pad_pose6d
from posrft.body.rotations import axis_angle_to_pose6d, pose6d_to_axis_angle
from posrft.data.limits import MIRROR_PERM, mirror_pose
from posrft.data.prior import single_thread
from posrft.eval.retrieval import RetrievalConfig, RetrievalModel

SUBSETS = ("a", "b")
REQUIRED_COLUMNS = ("caption", "gt_pose_6d")
LOGIT_SCALE_MAX = math.log(100.0)
RECAPTION_SALT = 7919


@dataclass
class PairSet:
    """Paired captions and poses: ``pose6d`` (N, J*6), ``captions`` (N), ``pose_ids`` (N,),
    optionally the ground-truth ``joints`` (N, 24, 3) (needed only by :func:`recaption_pairs`)."""

    pose6d: Tensor
    captions: list[str]
    pose_ids: Tensor
    joints: Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.captions)
        if self.pose6d.ndim != 2 or self.pose6d.shape[0] != n or self.pose_ids.shape != (n,):
            raise ValueError(
                f"PairSet: {n} captions, poses {tuple(self.pose6d.shape)}, pose_ids "
                f"{tuple(self.pose_ids.shape)}: expected (N, J*6) poses and (N,) ids"
            )
        if self.joints is not None and self.joints.shape != (n, 24, 3):
            raise ValueError(f"PairSet: joints {tuple(self.joints.shape)}, expected ({n}, 24, 3)")

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, which: str | None) -> "PairSet":
        """The half ``"a"`` (even pose_id) or ``"b"`` (odd pose_id); ``None``: everything."""
        if which is None:
            return self
        if which not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS} or None, got {which!r}")
        keep = (self.pose_ids % 2 == (0 if which == "a" else 1)).nonzero()[:, 0]
        return self.take(keep)

    def take(self, idx: Tensor | Sequence[int]) -> "PairSet":
        idx = torch.as_tensor(idx, dtype=torch.long)
        joints = None if self.joints is None else self.joints[idx]
        captions = [self.captions[i] for i in idx.tolist()]
        return PairSet(self.pose6d[idx], captions, self.pose_ids[idx], joints)


_SIDE = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "Left": "Right", "LEFT": "RIGHT"}
_SWAP.update({v: k for k, v in _SWAP.items()})


def mirror_caption(text: str) -> str:
    """Swap the words left and right (whole words, case kept)."""
    return _SIDE.sub(lambda m: _SWAP[m.group(0)], text)


def mirror_pairs(pairs: PairSet) -> PairSet:
    """Left-right mirror images of ``pairs`` (:func:`posrft.data.limits.mirror_pose` on the
    pose, left <-> right in the caption) with fresh pose ids (a mirrored pose is another pose;
    its caption is the same text only when the caption names no side)."""
    n, d = pairs.pose6d.shape
    aa = pose6d_to_axis_angle(pad_pose6d(pairs.pose6d, 24), 24).reshape(n, 24, 3)
    mirrored = axis_angle_to_pose6d(mirror_pose(aa).reshape(n, 72), 24)[:, :d]
    offset = int(pairs.pose_ids.max()) + 1 if n else 0
    joints = None
    if pairs.joints is not None:  # the mirror x -> -x of the world (the body's left axis)
        joints = pairs.joints[:, torch.as_tensor(MIRROR_PERM)] * torch.tensor([-1.0, 1.0, 1.0])
    captions = [mirror_caption(c) for c in pairs.captions]
    return PairSet(mirrored, captions, pairs.pose_ids + offset, joints)


def recaption_pairs(pairs: PairSet, k: int, seed: int = 0) -> PairSet:
    """``k`` more captions of every pose by :mod:`posrft.data.captioner` (the generator of the
    synthetic datasets; rng ``[RECAPTION_SALT, seed, i, r]``), as extra pairs with the same
    pose ids. Only meaningful for data captioned that way; needs ``pairs.joints``."""
    if pairs.joints is None:
        raise ValueError("recaption needs the ground-truth joints (dataset column 'gt_joints')")
    from posrft.data.captioner import caption_from_codes
    from posrft.data.posecodes import extract

    codes = extract(pairs.joints.double().numpy())
    out = []
    for r in range(k):
        caps = [caption_from_codes(c, np.random.default_rng([RECAPTION_SALT, seed, i, r])).text
                for i, c in enumerate(codes)]  # fmt: skip
        out.append(PairSet(pairs.pose6d, caps, pairs.pose_ids, pairs.joints))
    return concat_pairs(*out) if out else pairs.take([])


def concat_pairs(*parts: PairSet) -> PairSet:
    joints = None if any(p.joints is None for p in parts) else torch.cat([p.joints for p in parts])
    return PairSet(torch.cat([p.pose6d for p in parts]), [c for p in parts for c in p.captions],
                   torch.cat([p.pose_ids for p in parts]), joints)  # fmt: skip


def _dataset_dict(data_dir: str | Path):
    from datasets import DatasetDict, load_from_disk

    root = Path(data_dir).expanduser()
    for cand in (root, root / "text2pose"):
        if (cand / "dataset_dict.json").is_file():
            ds = load_from_disk(str(cand))
            if isinstance(ds, DatasetDict):
                return ds, cand
    raise FileNotFoundError(
        f"{str(root)!r} is not a text2pose DatasetDict folder (no dataset_dict.json in it or in "
        "its text2pose/ sub-folder); create one with `posrft data synth`"
    )


def load_pairs(data_dir: str | Path, split: str) -> PairSet:
    """Captions, 6D poses and pose ids of one split of a text2pose dataset folder."""
    ds, where = _dataset_dict(data_dir)
    if split not in ds:
        raise KeyError(f"{str(where)!r} has no split {split!r} (splits: {sorted(ds)})")
    d = ds[split]
    missing = [c for c in REQUIRED_COLUMNS if c not in d.column_names]
    if missing:
        raise KeyError(
            f"{str(where)!r} split {split!r} lacks columns {missing} (has {d.column_names})"
        )
    poses = np.asarray(d.with_format("numpy")["gt_pose_6d"], dtype=np.float32)
    if poses.ndim != 2 or poses.shape[1] % 6:
        raise ValueError(
            f"{str(where)!r} split {split!r}: gt_pose_6d is {poses.shape}, expected (N, J*6)"
        )
    ids = d["pose_id"] if "pose_id" in d.column_names else list(range(len(d)))
    joints = None
    if "gt_joints" in d.column_names:
        joints = torch.from_numpy(np.asarray(d.with_format("numpy")["gt_joints"], dtype=np.float32))
    captions = [str(c) for c in d["caption"]]
    ids = torch.as_tensor(ids, dtype=torch.long)
    return PairSet(torch.from_numpy(poses), captions, ids, joints)


def heldout_split(data_dir: str | Path) -> str:
    ds, _ = _dataset_dict(data_dir)
    for name in ("test", "validation"):
        if name in ds:
            return name
    raise KeyError(
        f"{str(data_dir)!r} has neither a 'test' nor a 'validation' split (splits: {sorted(ds)})"
    )


@dataclass
class TrainSettings:
    """Optimisation settings of :func:`fit` (recorded in the model's config ``meta``)."""

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05


def _soft_targets(caption_ids: Tensor, pose_ids: Tensor) -> Tensor:
    same = (caption_ids[:, None] == caption_ids[None]) | (pose_ids[:, None] == pose_ids[None])
    same = same.float()
    return same / same.sum(1, keepdim=True)


def infonce_loss(
    text: Tensor, pose: Tensor, logit_scale: Tensor, targets: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE of unit embeddings ``(B, D)`` (module docstring); ``targets`` (B, B)
    row-normalised (default: the identity)."""
    logits = logit_scale.exp() * text @ pose.T
    if targets is None:
        labels = torch.arange(text.shape[0], device=text.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    t2p = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    p2t = -(targets.T * F.log_softmax(logits.T, 1)).sum(1).mean()
    return 0.5 * (t2p + p2t)


def fit(
    model: RetrievalModel,
    pairs: PairSet,
    seed: int = 0,
    settings: TrainSettings | None = None,
    log_every: int = 0,
    single_threaded: bool = True,
) -> list[float]:
    """Train ``model`` in place on ``pairs``; returns the mean loss of every epoch.

    ``single_threaded`` runs it on one intra-op thread (restored afterwards; as
    :func:`posrft.data.prior.single_thread`): the kernels are small, and on this busy 2-core
    machine a second thread made it slower — MiniLM on 400 captions 4.8 s (1 thread) vs
    8–10 s (2), the test's small training run 6 s vs 22 s.
    """
    with single_thread() if single_threaded else contextlib.nullcontext():
        return _fit(model, pairs, seed, settings or TrainSettings(), log_every)


def _fit(
    model: RetrievalModel, pairs: PairSet, seed: int, s: TrainSettings, log_every: int
) -> list[float]:
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 training pairs, got {len(pairs)}")
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        sent = model.sentence_embedder()(pairs.captions)
        feats = model.features(pairs.pose6d)
    _, caption_ids = np.unique(np.asarray(pairs.captions, dtype=object), return_inverse=True)
    caption_ids = torch.as_tensor(caption_ids.reshape(-1), dtype=torch.long)
    n, bs = len(pairs), min(s.batch_size, len(pairs))
    steps_per_epoch = max(1, n // bs)  # drop the ragged tail: tiny batches give noisy InfoNCE
    total = s.epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    warm = max(1, int(s.warmup_frac * total))
    def lr_factor(k: int) -> float:  # linear warm-up, then cosine decay to 0
        return min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, total) / total))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    model.train()
    history = []
    for epoch in range(s.epochs):
        perm = torch.randperm(n, generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * bs : (b + 1) * bs]
            t = model.encode_sentence_embeddings(sent[idx])
            p = model.encode_pose_features(feats[idx])
            targets = _soft_targets(caption_ids[idx], pairs.pose_ids[idx])
            loss = infonce_loss(t, p, model.logit_scale, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(max=LOGIT_SCALE_MAX)
            losses.append(float(loss.detach()))
        history.append(sum(losses) / len(losses))
        if log_every and (epoch + 1) % log_every == 0:
            print(f"epoch {epoch + 1}/{s.epochs} loss {history[-1]:.4f} "
                  f"temperature {model.temperature:.4f}", flush=True)  # fmt: skip
    model.eval()
    return history


def augment(train: PairSet, mirror: bool = True, recaption: int = 0, seed: int = 0) -> PairSet:
    """``train`` plus ``recaption`` extra captions per pose, then all of it mirrored."""
    if recaption:
        train = concat_pairs(train, recaption_pairs(train, recaption, seed))
    return concat_pairs(train, mirror_pairs(train)) if mirror else train


def train_on_pairs(
    train: PairSet,
    seed: int = 0,
    config: RetrievalConfig | None = None,
    settings: TrainSettings | None = None,
    log_every: int = 0,
) -> RetrievalModel:
    """A fresh :class:`RetrievalModel` (initialised from ``seed``) trained on ``train`` as given."""
    torch.manual_seed(int(seed))
    model = RetrievalModel(config or RetrievalConfig())
    fit(model, train, seed=seed, settings=settings, log_every=log_every)
    return model


def train_retrieval(
    data_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    subset: str | None = None,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 1e-3,
    embed_dim: int = 256,
    hidden: int = 256,
    dropout: float = 0.3,
    mirror: bool = True,
    recaption: int = 0,
    text_encoder: str | None = None,
    eval_split: str | None = None,
    log_every: int = 10,
) -> tuple[RetrievalModel, dict[str, float]]:
    """Train one instance and save it to ``out_dir``; returns ``(model, held-out metrics)``.

    Data: the ``train`` split (its half ``subset``: ``"a"`` even / ``"b"`` odd pose_id),
    augmented by ``mirror`` (left-right mirror images, :func:`mirror_pairs`) and ``recaption``
    extra captions per pose (:func:`recaption_pairs`; synthetic data only, off by default).
    Evaluation: recalls R@1/5/10 (full and pools of 32, both directions) on ``eval_split``
    (default ``test``). The config's ``meta`` records data, seed, subset, settings, timing and
    those metrics.
    """
    if subset not in (None, *SUBSETS):
        raise ValueError(f"subset must be one of {SUBSETS} or None, got {subset!r}")
    if recaption < 0:
        raise ValueError(f"recaption must be >= 0, got {recaption}")
    t0 = time.perf_counter()
    base = load_pairs(data_dir, "train").subset(subset)
    train = augment(base, mirror, recaption, seed)
    split = eval_split or heldout_split(data_dir)
    test = load_pairs(data_dir, split)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr)
    config = RetrievalConfig(embed_dim=embed_dim, hidden=hidden, dropout=dropout)
    if text_encoder is not None:
        config.text_encoder = str(text_encoder)
    model = train_on_pairs(train, seed, config, settings, log_every)
    train_s = time.perf_counter() - t0
    with single_thread():
        metrics = model.evaluate(test.captions, test.pose6d, ks=(1, 5, 10), pool=32, seed=0)
    model.config.meta = {
        "data": str(Path(data_dir).expanduser().resolve()), "seed": int(seed), "subset": subset,
        "train_poses": len(base), "train_pairs": len(train), "mirror": mirror,
        "recaption": recaption, "eval_split": split, "eval_pairs": len(test),
        "settings": asdict(settings), "train_seconds": round(train_s, 2),
        "temperature": model.temperature, "metrics": metrics,
    }  # fmt: skip
    model.save_pretrained(out_dir)
    return model, metrics


def evaluate_retrieval(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str | None = None,
    ks: Sequence[int] = (5, 10, 20),
    pool: int | None = 32,
) -> dict[str, float]:
    """Recalls of a saved model on a split (default: held-out) — the eval suite's mRecall uses
    R@5/10/20 in both directions."""
    model = RetrievalModel.from_pretrained(model_dir)
    pairs = load_pairs(data_dir, split or heldout_split(data_dir))
    with single_thread():
        return model.evaluate(pairs.captions, pairs.pose6d, ks=ks, pool=pool)


def main(argv: Sequence[str] | None = None) -> int:
    """``train`` / ``eval`` sub-commands (the lead wires them as ``posrft retrieval ...``)."""
    ap = argparse.ArgumentParser(prog="posrft retrieval", description="text-pose retrieval model")
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train one instance; prints held-out recalls")
    tr.add_argument("--data", required=True, help="text2pose DatasetDict folder")
    tr.add_argument("--out", required=True, help="output model folder (replaced atomically)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--subset", choices=SUBSETS, default=None,
                    help="train on half of the train split: a = even pose_id, b = odd")  # fmt: skip
    tr.add_argument("--epochs", type=int, default=60)
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--embed-dim", type=int, default=256)
    tr.add_argument("--hidden", type=int, default=256)
    tr.add_argument("--dropout", type=float, default=0.3)
    tr.add_argument("--no-mirror", action="store_true", help="no left-right mirror augmentation")
    tr.add_argument("--recaption", type=int, default=0,
                    help="extra captions per training pose from the synthetic captioner")
    tr.add_argument("--text-encoder", default=None,
                    help="sentence-transformers folder (default: the packaged MiniLM)")  # fmt: skip
    ev = sub.add_parser("eval", help="recalls of a saved model on a split")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default=None)
    ev.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20])
    args = ap.parse_args(argv)
    if args.command == "train":
        _, metrics = train_retrieval(
            args.data, args.out, seed=args.seed, subset=args.subset, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, embed_dim=args.embed_dim, hidden=args.hidden,
            dropout=args.dropout, mirror=not args.no_mirror, recaption=args.recaption,
            text_encoder=args.text_encoder,
        )  # fmt: skip
    else:
        metrics = evaluate_retrieval(args.model, args.data, args.split, args.ks)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
