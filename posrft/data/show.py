"""A picture of dataset samples: ``posrft data show DIR --n 8 --out grid.png``.

text->pose rows: the ground-truth poses drawn by :func:`posrft.render.render_pose_grid` with
their captions underneath. image->pose rows: the input picture (enlarged) next to the
ground-truth skeleton rendered through the row's own camera (so the two line up when
``keypoints_2d``/``camera`` are right), the caption underneath.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from posrft.data.synth import load_dataset_dir
from posrft.files import atomic_save_image


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _camera_of(rows: list[dict], scale: float):
    from posrft.render import Camera

    c0 = rows[0]["camera"]
    R = torch.tensor([r["camera"]["R"] for r in rows], dtype=torch.float32)
    t = torch.tensor([r["camera"]["t"] for r in rows], dtype=torch.float32)
    return Camera(R, t, c0["fx"] * scale, c0["fy"] * scale, c0["cx"] * scale, c0["cy"] * scale,
                  round(c0["width"] * scale), round(c0["height"] * scale))  # fmt: skip


def _image_grid(rows: list[dict], size: int, cols: int, font_size: int) -> Image.Image:
    from posrft.render import DrAction, to_pil

    width = rows[0]["camera"]["width"]
    scale = size / width
    cam = _camera_of(rows, scale)
    joints = torch.tensor([r["gt_joints"] for r in rows], dtype=torch.float32)
    renderer = DrAction("smpl24", image_size=cam.height, num_frames=1, learnable=False, nfm=False)
    with torch.no_grad():
        skel = to_pil(renderer.eval()(joints[:, None], camera=cam)[:, 0])
    font = _font(font_size)
    chars = max(10, int(2 * size / (0.55 * font_size)))
    wrapped = [textwrap.wrap(f"[{r['key_pose']}] {r['caption']}", chars) for r in rows]
    line_h = font_size + 3
    cell_w, cell_h = 2 * size + 4, size + 6 + line_h * max(len(w) for w in wrapped)
    rows_n = math.ceil(len(rows) / cols)
    gap = 8
    canvas = Image.new("RGB", (cols * (cell_w + gap) + gap, rows_n * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, r in enumerate(rows):
        y0, x0 = gap + (i // cols) * (cell_h + gap), gap + (i % cols) * (cell_w + gap)
        canvas.paste(r["images"][0].convert("RGB").resize((size, size), Image.NEAREST), (x0, y0))
        canvas.paste(skel[i], (x0 + size + 4, y0))
        for k, line in enumerate(wrapped[i]):
            draw.text((x0, y0 + size + 4 + k * line_h), line, fill=(0, 0, 0), font=font)
    return canvas


def show_dataset(
    path: str | os.PathLike,
    n: int = 8,
    out: str | os.PathLike = "grid.png",
    *,
    split: str = "train",
    size: int = 160,
    cols: int | None = None,
    font_size: int = 11,
) -> Path:
    """Draw the first ``n`` rows of ``split`` of the dataset saved at ``path`` into ``out``."""
    from posrft.render import render_pose_grid

    dd = load_dataset_dir(path)
    if split not in dd:
        raise KeyError(f"{path} has no split {split!r}; splits: {list(dd)}")
    ds = dd[split]
    if n < 1 or len(ds) == 0:
        raise ValueError(f"nothing to show: n={n}, split {split!r} has {len(ds)} rows")
    rows = [ds[i] for i in range(min(n, len(ds)))]
    if "images" in ds.column_names:
        grid = _image_grid(rows, size, cols or min(len(rows), 4), font_size)
    else:
        joints = torch.tensor([r["gt_joints"] for r in rows], dtype=torch.float32)
        caps = [f"[{r['key_pose']}] {r['caption']}" for r in rows]
        grid = render_pose_grid(joints, caps, size=size, cols=cols or min(len(rows), 4),
                                font_size=font_size)  # fmt: skip
    return atomic_save_image(out, grid)
