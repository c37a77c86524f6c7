"""Evaluate a pose policy on a dataset split: answer format, valid-``<POSE>`` rate, pose error.

Greedy text and pose = μ (the evaluation mode of the Gaussian head). Pose errors are in mm over
the samples whose answer contains ``<POSE>`` (``valid_rate`` says how many):

    MPJPE    = mean_i mean_j ‖(J_ij − J_i0) − (Ĵ_ij − Ĵ_i0)‖        (pelvis-aligned)
    PA-MPJPE = the same after a similarity Procrustes alignment (roma)
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import DatasetDict, load_from_disk

from posrft.body.pose import pose_to_joints
from posrft.eval.answer_format import format_ok
from posrft.eval.metrics import mpjpe, pa_mpjpe


@torch.no_grad()
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
    data = load_from_disk(str(data_dir))
    if isinstance(data, DatasetDict):
        if split not in data:
            raise KeyError(f"dataset {data_dir!r} has no split {split!r}; splits: {sorted(data)}")
        data = data[split]
    for col in ("prompt", "gt_joints"):
        if col not in data.column_names:
            raise ValueError(f"dataset {data_dir!r} split {split!r} lacks column {col!r}")
    n = len(data) if num_samples is None else min(num_samples, len(data))
    joints_of = pose_to_joints(body_model_dir)
    valid_all, fmt_all, pred, gt = [], [], [], []
    for lo in range(0, n, batch_size):
        rows = data.select(range(lo, min(lo + batch_size, n)))
        images = rows["images"] if "images" in rows.column_names else None
        out = policy.rollout(rows["prompt"], images, greedy=True, max_new_tokens=max_new_tokens)
        valid_all.append(out.pose_valid.cpu())
        fmt_all += [format_ok(t) for t in out.completion_texts]
        pred.append(joints_of(out.pose.float().cpu()))
        gt.append(torch.tensor(rows["gt_joints"], dtype=torch.float32))
    valid = torch.cat(valid_all)
    pred_j, gt_j = torch.cat(pred).double(), torch.cat(gt).double()
    result: dict[str, Any] = {"num_samples": n, "valid_rate": float(valid.float().mean()),
                              "format_accuracy": sum(fmt_all) / max(n, 1)}  # fmt: skip
    if valid.any():
        result["mpjpe_mm"] = float(mpjpe(pred_j[valid], gt_j[valid]).mean()) * 1000
        result["pa_mpjpe_mm"] = float(pa_mpjpe(pred_j[valid], gt_j[valid]).mean()) * 1000
    else:
        result["mpjpe_mm"] = result["pa_mpjpe_mm"] = float("nan")
    return result
