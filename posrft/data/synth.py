"""Synthetic text->pose and image->pose datasets (HF ``DatasetDict``: train / val / test).

Rows come from one prior sample (:func:`posrft.data.prior.sample_poses`) of
``n_train + n_val + n_test`` poses; pose ``i`` gets ``pose_id = i`` and the splits are the
consecutive ranges ``[0, n_train)``, ``[n_train, n_train + n_val)``, ... so they are disjoint
by pose id and a larger build extends a smaller one with the same seed pose by pose.

Columns (both tasks):

* ``prompt`` -- TRL conversational: ``[{"role": "user", "content": [...]}]``; text->pose:
  one text part ``INSTRUCTION + caption``; image->pose: ``[{"type": "image"}, {"type": "text",
  "text": INSTRUCTION}]`` (the image part has ``text = None`` once stored in Arrow);
* ``completion`` -- ``[{"role": "assistant", "content": [{"type": "text", "text": RESPONSE}]}]``,
  RESPONSE holding exactly one ``<POSE>``;
* ``caption`` -- the posecode caption (:mod:`posrft.data.captioner`, version 2 by default:
  distinctive statements, measured against the body and the floor);
* ``gt_pose`` (72 float32, axis-angle: global orientation + 23 joints, hands identity),
  ``gt_pose_6d`` (132 float32: 22 joints x 6D, ``R[:, :2]`` row-major),
  ``gt_joints`` (24 x 3 float32, metres) = :func:`posrft.data.skeleton.pose_joints` of
  ``gt_pose``: FK of the stand-in body with zero betas and no translation, i.e. the pelvis at
  its rest position (the origin);
* ``pose_id`` (int64), ``key_pose`` (str: the prior's key-pose label);
* ``ground`` (float32) -- the floor's height in the frame of ``gt_joints`` (a joint touches it
  when ``y - SUPPORT_OFFSET`` equals it): the lowest support point, or below it for a pose in
  flight (:attr:`posrft.data.prior.PoseSamples.ground`); the caption's ``floor`` relations are
  measured against it.

``prior_version`` / ``captioner_version`` (both 2 by default) select the key-pose library and
the captioner; 1 and 1 rebuild the datasets of the first pipeline (``ground`` is then the
lowest support point, which is what that captioner measured against).

image->pose adds ``images`` (one PIL image, TRL's VLM column), ``camera`` (``fx, fy, cx, cy,
width, height, R (3x3), t (3)``: OpenCV, ``x_cam = R X + t``) and ``keypoints_2d`` (24 x 2
pixels, ``camera.project(gt_joints)``). Text->pose bodies face +z (``yaw_deg = 0``, the
canonical heading, as PoseScript normalises it); image->pose headings are uniform over
±``max_yaw_deg`` (180 by default: every viewpoint, see :mod:`posrft.data.views`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Features, Sequence as Seq, Value, load_from_disk
from datasets import Image as ImageFeature
from datasets.utils import logging as datasets_logging

from posrft.body.rotations import axis_angle_to_pose6d
from posrft.data.captioner import caption_poses
from posrft.data.posecodes import lowest_support
from posrft.data.prior import sample_poses, single_thread
from posrft.data.skeleton import pose_joints

POSE_TOKEN = "<POSE>"
SPLITS = ("train", "val", "test")
TASKS = ("text2pose", "image2pose")

T2P_INSTRUCTIONS = (
    "Generate the 3D body pose described here: ",
    "Produce the SMPL pose that matches this description. ",
    "Create a human pose from the following text. ",
    "Here is a description of a pose. Please generate it. ",
    "Give me the body pose for this description: ",
    "Turn this description into a 3D pose: ",
    "Which pose is this? Generate it. ",
    "Describe-to-pose: ",
)  # fmt: skip
I2P_INSTRUCTIONS = (
    "Estimate the 3D pose of the person in the image.",
    "What is the SMPL pose of this person?",
    "Recover the body pose shown in this picture.",
    "Give the 3D human pose of the person in the image.",
    "Predict the pose of the person.",
    "Look at the image and generate the person's 3D pose.",
)  # fmt: skip
RESPONSES = (
    "Sure, here is the pose: <POSE>.",
    "Here is the pose: <POSE>.",
    "The pose is <POSE>.",
    "<POSE>",
    "Okay, this is the pose: <POSE>",
    "Here you go: <POSE>.",
    "This is the requested pose: <POSE>.",
)  # fmt: skip
assert all(r.count(POSE_TOKEN) == 1 for r in RESPONSES)

_TEXT_PART = {"type": Value("string"), "text": Value("string")}
_MESSAGES = [{"role": Value("string"), "content": [_TEXT_PART]}]
_COMMON = {
    "prompt": _MESSAGES,
    "completion": _MESSAGES,
    "caption": Value("string"),
    "gt_pose": Seq(Value("float32"), length=72),
    "gt_pose_6d": Seq(Value("float32"), length=132),
    "gt_joints": Seq(Seq(Value("float32"), length=3), length=24),
    "pose_id": Value("int64"),
    "key_pose": Value("string"),
    "ground": Value("float32"),
}
TEXT2POSE_FEATURES = Features(_COMMON)
IMAGE2POSE_FEATURES = Features({
    "images": Seq(ImageFeature()),
    **_COMMON,
    "camera": {
        "fx": Value("float32"), "fy": Value("float32"), "cx": Value("float32"),
        "cy": Value("float32"), "width": Value("int32"), "height": Value("int32"),
        "R": Seq(Seq(Value("float32"), length=3), length=3), "t": Seq(Value("float32"), length=3),
    },
    "keypoints_2d": Seq(Seq(Value("float32"), length=2), length=24),
})  # fmt: skip


def _check_sizes(n_train: int, n_val: int, n_test: int) -> None:
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if n_train + n_val + n_test == 0:
        raise ValueError("n_train + n_val + n_test must be > 0")


def split_sizes(
    n: int, splits: Sequence[float] | Sequence[int] = (0.8, 0.1, 0.1)
) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` from fractions summing to 1 (rounded, the rest to train)
    or from three explicit sizes (``n`` is then ignored)."""
    if len(splits) != 3:
        raise ValueError(f"splits needs 3 entries (train, val, test), got {list(splits)}")
    if all(isinstance(s, (int, np.integer)) for s in splits):
        return int(splits[0]), int(splits[1]), int(splits[2])
    if any(s < 0 for s in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(splits)}")
    sizes = _fraction_sizes(n, splits)
    empty = [name for name, f, k in zip(("train", "val", "test"), splits, sizes) if f > 0 and k < 1]
    if empty:
        least = next(m for m in range(1, 10**6) if all(k >= 1 or f == 0 for f, k in
                                                      zip(splits, _fraction_sizes(m, splits))))  # fmt: skip
        raise ValueError(f"n={n} leaves the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} "
                         f"empty with split fractions {list(splits)}; use n >= {least} "
                         "(posrft data synth --n)")  # fmt: skip
    return sizes


def _fraction_sizes(n: int, splits: Sequence[float]) -> tuple[int, int, int]:
    val, test = round(n * splits[1]), round(n * splits[2])
    return n - val - test, val, test


def _user(parts: list[dict]) -> list[dict]:
    return [{"role": "user", "content": parts}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _base_rows(n_total: int, seed: int, yaw_deg: float, prior_version: int = 2,
               captioner_version: int = 2) -> tuple[dict, list]:  # fmt: skip
    """Poses, 6D, joints, labels and captions of ``n_total`` prior poses (one thread)."""
    with single_thread():
        s = sample_poses(n_total, seed=seed, yaw_deg=yaw_deg, version=prior_version)
        pose = torch.from_numpy(s.pose)
        joints = pose_joints(pose.double()).float()
        pose6d = axis_angle_to_pose6d(pose[:, :66])
        ground = s.ground if captioner_version == 2 else lowest_support(joints.numpy())
        captions = caption_poses(joints.numpy(), seed, ground=ground, version=captioner_version,
                                 salt=(0,))  # fmt: skip
    rows = {
        "caption": [c.text for c in captions],
        "gt_pose": s.pose.tolist(),
        "gt_pose_6d": pose6d.numpy().tolist(),
        "gt_joints": joints.numpy().tolist(),
        "pose_id": list(range(n_total)),
        "key_pose": list(s.key_pose),
        "ground": np.asarray(ground, dtype=np.float32).tolist(),
    }
    return rows, joints


def _choice(options: Sequence[str], seed: int, i: int, salt: int) -> str:
    return options[int(np.random.default_rng([seed, i, salt]).integers(len(options)))]


def split_rows(rows: dict, features: Features, sizes: tuple[int, int, int]) -> DatasetDict:
    """Consecutive ``train`` / ``val`` / ``test`` ranges of ``rows`` (sizes in that order)."""
    out, start = {}, 0
    for name, size in zip(SPLITS, sizes):
        part = {k: v[start : start + size] for k, v in rows.items()}
        out[name] = Dataset.from_dict(part, features=features)
        start += size
    return DatasetDict(out)


def add_text_prompts(rows: dict, seed: int) -> dict:
    """Text->pose ``prompt`` (instruction + caption) and ``completion`` columns, in place."""
    n = len(rows["caption"])
    rows["prompt"] = [
        _user([{"type": "text", "text": _choice(T2P_INSTRUCTIONS, seed, i, 1) + cap}])
        for i, cap in enumerate(rows["caption"])
    ]
    rows["completion"] = [_assistant(_choice(RESPONSES, seed, i, 2)) for i in range(n)]
    return rows


def add_pictures(rows: dict, joints: torch.Tensor, seed: int, image_size: int = 56,
                 style: str = "mesh", view_text: bool = False, describe: bool = False) -> dict:  # fmt: skip
    """Image->pose ``images``, ``prompt``, ``completion``, ``camera`` and ``keypoints_2d``
    columns for the poses ``rows["gt_pose"]`` with joints (N, 24, 3), in place. ``view_text``:
    each completion starts with the sentence of the body's heading
    (:func:`posrft.data.views.view_phrases`). ``describe``: the completion states the row's
    ``caption`` before ``<POSE>`` (after the heading sentence when both are on), so the answer
    reads the picture in words first and the pose token can attend to that reading."""
    from posrft.data.views import render_people, view_phrases

    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    n = len(rows["gt_pose"])
    with single_thread():
        images, cam = render_people(np.asarray(rows["gt_pose"], np.float32), joints, seed,
                                    image_size=image_size, style=style)  # fmt: skip
        uv, _ = cam.project(joints.double())
    rows["images"] = [[im] for im in images]
    rows["prompt"] = [
        _user([{"type": "image", "text": None},
               {"type": "text", "text": _choice(I2P_INSTRUCTIONS, seed, i, 1)}])
        for i in range(n)
    ]  # fmt: skip
    rows["completion"] = [_assistant(_choice(RESPONSES, seed, i, 2)) for i in range(n)]
    if describe:
        add_view_text(rows["completion"], rows["caption"])
    if view_text:
        add_view_text(rows["completion"], view_phrases(joints))
    rows["camera"] = [
        {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "width": cam.width,
         "height": cam.height, "R": cam.R[i].tolist(), "t": cam.t[i].tolist()}
        for i in range(n)
    ]  # fmt: skip
    rows["keypoints_2d"] = uv.float().numpy().tolist()
    return rows


def add_view_text(completions: list, phrases: list[str]) -> list:
    """Put ``phrases[i]`` in front of the text of completion ``i`` (chat messages), in place."""
    for msgs, phrase in zip(completions, phrases, strict=True):
        part = msgs[-1]["content"][-1]
        part["text"] = f"{phrase} {part['text']}"
    return completions


def build_text2pose(
    n_train: int, n_val: int, n_test: int, seed: int = 0, out_dir: str | os.PathLike | None = None,
    *, prior_version: int = 2, captioner_version: int = 2,
) -> DatasetDict:
    """The text->pose dataset (module docstring); saved to ``out_dir`` when given."""
    _check_sizes(n_train, n_val, n_test)
    n = n_train + n_val + n_test
    rows, _ = _base_rows(n, seed, 0.0, prior_version, captioner_version)
    add_text_prompts(rows, seed)
    dd = split_rows(rows, TEXT2POSE_FEATURES, (n_train, n_val, n_test))
    if out_dir is not None:
        save_dataset(dd, out_dir)
    return dd


def build_image2pose(
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 56,
    style: str = "mesh",
    view_text: bool = False,
    describe: bool = False,
    max_yaw_deg: float = 180.0,
    prior_version: int = 2,
    captioner_version: int = 2,
) -> DatasetDict:
    """The image->pose dataset (module docstring); pictures from :mod:`posrft.data.views`;
    ``view_text``: completions open with the heading sentence; ``describe``: they state the
    caption before ``<POSE>`` (:func:`add_pictures`); ``max_yaw_deg``: headings are drawn from
    U(-max, max) degrees about the camera's axis (180: every view; 90: the person never has
    their back to the camera, as in most photographs of people)."""
    _check_sizes(n_train, n_val, n_test)
    if not 0.0 <= max_yaw_deg <= 180.0:
        raise ValueError(f"max_yaw_deg must be in [0, 180] degrees, got {max_yaw_deg}")
    n = n_train + n_val + n_test
    rows, joints = _base_rows(n, seed, float(max_yaw_deg), prior_version, captioner_version)
    add_pictures(rows, joints, seed, image_size, style, view_text, describe)
    dd = split_rows(rows, IMAGE2POSE_FEATURES, (n_train, n_val, n_test))
    if out_dir is not None:
        save_dataset(dd, out_dir)
    return dd


def save_dataset(dd: DatasetDict, out_dir: str | os.PathLike) -> Path:
    """Write ``dd`` with ``save_to_disk`` into a temporary sibling folder, then rename it to
    ``out_dir`` (replacing an existing dataset there), so readers never see a partial dataset."""
    out = Path(out_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        dd.save_to_disk(str(tmp / "data"))
        if out.exists():
            if not (out / "dataset_dict.json").exists():
                raise FileExistsError(
                    f"{out} exists and is not a saved DatasetDict; refusing to replace it"
                )
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
            os.replace(tmp / "data", out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / "data", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if bars:
            datasets_logging.enable_progress_bar()
    return out


def synth_dataset(
    task: str,
    n: int,
    out: str | os.PathLike | None,
    seed: int = 0,
    splits: Sequence[float] | Sequence[int] = (0.8, 0.1, 0.1),
    **kw,
) -> DatasetDict:
    """``posrft data synth --task T --n N --out DIR --seed S``: build and save one dataset.

    ``splits``: train/val/test fractions of ``n``, or three explicit sizes. Extra keywords go
    to the builder (``image_size``, ``style``, ``view_text`` for image2pose).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    sizes = split_sizes(int(n), splits)
    build = build_text2pose if task == "text2pose" else build_image2pose
    return build(*sizes, seed=seed, out_dir=out, **kw)


def load_dataset_dir(path: str | os.PathLike) -> DatasetDict:
    """``load_from_disk`` with a clear error when ``path`` is not a saved DatasetDict."""
    p = Path(path)
    if not (p / "dataset_dict.json").exists():
        raise FileNotFoundError(
            f"{p} is not a dataset saved by save_dataset (no dataset_dict.json)"
        )
    return load_from_disk(str(p))
