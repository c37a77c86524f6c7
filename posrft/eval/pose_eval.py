"""Evaluate a pose policy on a dataset split: answer format, valid-``<POSE>`` rate, pose error.

Greedy text and pose = μ (the evaluation mode of the Gaussian head). Pose errors are in mm over
the samples whose answer contains ``<POSE>`` (``valid_rate`` says how many):

    MPJPE    = mean_i mean_j ‖(J_ij − J_i0) − (Ĵ_ij − Ĵ_i0)‖        (pelvis-aligned)
    PA-MPJPE = the same after a similarity Procrustes alignment (roma)

and the heading (:func:`posrft.data.views.facing_yaw_deg`, the hips' facing about the vertical):
``heading_within_45`` is the share of valid samples whose predicted heading is within 45° of the
truth. When the answers state the view (data built with ``view_text``), ``view_text_accuracy`` is
the share of answers that contain the true view sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor

from posrft.body.pose import pose_to_joints
from posrft.data.splits import load_split
from posrft.data.views import VIEW_PHRASES, facing_yaw_deg, view_phrases
from posrft.eval.answer_format import format_ok
from posrft.eval.metrics import mpjpe, pa_mpjpe


@dataclass
class Predictions:
    """Greedy answers for N rows: ``pose6d`` (N, D) μ, ``valid`` (N,) bool, ``joints`` (N, 24, 3)
    predicted, ``gt_joints`` (N, 24, 3), ``texts`` the completions."""

    pose6d: Tensor
    valid: Tensor
    joints: Tensor
    gt_joints: Tensor
    texts: list[str]


@torch.no_grad()
def predict_poses(policy: Any, data: Dataset, n: int, batch_size: int = 16, max_new_tokens: int = 32,
                  body_model_dir: str | None = None) -> Predictions:  # fmt: skip
    """Greedy rollouts of ``policy`` on the first ``n`` rows of ``data``."""
    joints_of = pose_to_joints(body_model_dir)
    valid, texts, pose, pred, gt = [], [], [], [], []
    for lo in range(0, n, batch_size):
        rows = data.select(range(lo, min(lo + batch_size, n)))
        images = rows["images"] if "images" in rows.column_names else None
        out = policy.rollout(rows["prompt"], images, greedy=True, max_new_tokens=max_new_tokens)
        valid.append(out.pose_valid.cpu())
        texts += out.completion_texts
        mu = out.pose[:, 0].float().cpu()  # greedy: the one pose is μ
        pose.append(mu)
        pred.append(joints_of(mu))
        gt.append(torch.tensor(rows["gt_joints"], dtype=torch.float32))
    return Predictions(torch.cat(pose), torch.cat(valid), torch.cat(pred), torch.cat(gt), texts)


def pose_metrics(pred: Predictions) -> dict[str, Any]:
    """valid rate, format accuracy, MPJPE and PA-MPJPE (mm, over valid samples) of ``pred``."""
    n = len(pred.texts)
    result: dict[str, Any] = {"num_samples": n, "valid_rate": float(pred.valid.float().mean()),
                              "format_accuracy": sum(format_ok(t) for t in pred.texts) / max(n, 1)}  # fmt: skip
    v = pred.valid
    if v.any():
        p, g = pred.joints.double()[v], pred.gt_joints.double()[v]
        result["mpjpe_mm"] = float(mpjpe(p, g).mean()) * 1000
        result["pa_mpjpe_mm"] = float(pa_mpjpe(p, g).mean()) * 1000
        err = (facing_yaw_deg(p) - facing_yaw_deg(g) + 180.0) % 360.0 - 180.0
        result["heading_within_45"] = float((err.abs() < 45.0).float().mean())
    else:
        result["mpjpe_mm"] = result["pa_mpjpe_mm"] = result["heading_within_45"] = float("nan")
    if any(phrase in t for t in pred.texts for phrase in VIEW_PHRASES.values()):
        truth = view_phrases(pred.gt_joints)
        result["view_text_accuracy"] = sum(v in t for v, t in zip(truth, pred.texts)) / max(n, 1)
    return result


def evaluate_pose_policy(
    model_dir: str,
    data_dir: str,
    split: str = "test",
    num_samples: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    body_model_dir: str | None = None,
) -> dict[str, Any]:
    """Metrics of ``model_dir`` on ``data_dir[split]`` (first ``num_samples`` rows)."""
    from posrft.policy.model import PosePolicy

    policy = PosePolicy.from_pretrained(model_dir).eval()
    data = load_split(data_dir, split, ("prompt", "gt_joints"))
    n = len(data) if num_samples is None else min(num_samples, len(data))
    return pose_metrics(predict_poses(policy, data, n, batch_size, max_new_tokens, body_model_dir))


def mean_pose_metrics(data_dir: str, split: str = "test", num_samples: int | None = None) -> dict[str, float]:
    """The reference every pose model must beat: always answering the training split's mean
    (pelvis-aligned) joints. ``{"mpjpe_mm", "pa_mpjpe_mm"}`` on ``data_dir[split]``."""
    train = torch.tensor(load_split(data_dir, "train", ("gt_joints",))["gt_joints"], dtype=torch.float64)
    rows = load_split(data_dir, split, ("gt_joints",))
    n = len(rows) if num_samples is None else min(num_samples, len(rows))
    gt = torch.tensor(rows.select(range(n))["gt_joints"], dtype=torch.float64)
    mean = (train - train[:, :1]).mean(0, keepdim=True).expand_as(gt)
    return {"mpjpe_mm": float(mpjpe(mean, gt).mean()) * 1000, "pa_mpjpe_mm": float(pa_mpjpe(mean, gt).mean()) * 1000}
