"""Pictures people look at: image conversion, frame grids, GIFs and labelled pose grids.

- :func:`to_pil`: renderer output tensors to PIL images.
- :func:`frame_grid`: one clip's frames tiled into one image.
- :func:`render_clip_to_file` / :func:`render_npy`: a clip (array or ``.npy`` file) to a PNG
  frame grid or an animated GIF at the clip's speed, with a camera that follows the subject or
  a fixed one (backs ``posrft render CLIP.npy --format ntu25 --out x.gif``).
- :func:`render_pose_grid`: static poses, e.g. predicted vs ground truth side by side with
  captions underneath, for training logs and docs.

All rendering here uses a frozen, untrained :class:`~posrft.render.DrAction` in eval mode
(segment-middle frames), so pictures are deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from posrft.body.formats import SkeletonFormat, get_format
from posrft.files import atomic_save_image
from posrft.render.draction import DrAction


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def to_pil(images: torch.Tensor):
    """``(B, T, 3, H, W)`` -> ``list[list[Image]]``; ``(T, 3, H, W)`` -> ``list[Image]``;
    ``(3, H, W)`` -> ``Image``.  Values are clamped to [0, 1] and rounded to 8 bits."""
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"to_pil expects (..., 3, H, W) images, got {tuple(images.shape)}")
    if images.ndim == 3:
        return Image.fromarray(_to_uint8(images).transpose(1, 2, 0))
    if images.ndim in (4, 5):
        return [to_pil(x) for x in images]
    raise ValueError(f"to_pil expects at most 5 dims (B, T, 3, H, W), got {tuple(images.shape)}")


def frame_grid(
    frames, cols: int | None = None, pad: int = 2, pad_color=(40, 40, 40)
) -> Image.Image:
    """Tile frames (``(T, 3, H, W)`` tensor or a list of equal-size PIL images) row by row;
    ``cols`` defaults to ``ceil(sqrt(T))``."""
    if isinstance(frames, torch.Tensor):
        frames = to_pil(frames)
    if not frames:
        raise ValueError("frame_grid: no frames")
    w, h = frames[0].size
    cols = cols or math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    grid = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), pad_color)
    for i, im in enumerate(frames):
        r, c = divmod(i, cols)
        grid.paste(im, (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


#: A person's joints in one frame span about 0.3–2.5 m; a clip whose single frame spans more
#: than this is not in metres (millimetres: 1000x) or is garbage, and renders as an empty frame.
MAX_FRAME_EXTENT_M = 100.0
#: GIF players show frames for multiples of 10 ms and clamp very short ones (< 20 ms) to
#: 100 ms, so the default stride keeps a GIF at or below this rate.
MAX_GIF_FPS = 25.0


def check_metric_clip(x: torch.Tensor, what: str = "joints") -> None:
    """Refuse a clip ``(P, T, J, 3)`` that cannot be drawn: NaN/inf, or a single frame spanning
    more than :data:`MAX_FRAME_EXTENT_M` (not metres), naming the frame and the extent."""
    bad = ~torch.isfinite(x)
    if bad.any():
        p, t, j, _ = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{what} contain NaN/inf at person {p}, frame {t}, joint {j}")
    present = x.abs().flatten(2).amax(-1) > 0  # (P, T): an all-zero person is absent (NTU)
    present[0] = True
    extent = (x.amax(2) - x.amin(2)).amax(-1)  # (P, T) largest side of each frame's box
    extent = torch.where(present, extent, torch.zeros_like(extent))
    worst = float(extent.max())
    if not worst <= MAX_FRAME_EXTENT_M:
        p, t = (int(i) for i in (extent == extent.max()).nonzero()[0])
        raise ValueError(
            f"{what} span {worst:.3g} m in one frame (person {p}, frame {t}); expected metres (a "
            "person is about 1–2 m): convert the units first, e.g. scale=0.001 (--scale 0.001) "
            "for millimetres"
        )


def follow_subject(x: torch.Tensor, up: Sequence[float]) -> torch.Tensor:
    """``(P, T, J, 3)`` with each frame shifted so that the subjects' centroid stays where it is
    on average, along the ground only (motion along ``up`` — a jump — is kept): a camera that
    tracks a walking person, so the figure keeps its size and place in the frame.

        x'_t = x_t - Π(c_t - mean_t c_t),    Π = I - u uᵀ,  c_t = mean over present joints
    """
    u = torch.as_tensor(up, dtype=x.dtype)
    u = u / u.norm()
    present = (x.abs().flatten(2).amax(-1) > 0).to(x.dtype)  # (P, T)
    present[0] = 1.0
    w = present[:, :, None]  # (P, T, 1)
    centroid = (x.mean(2) * w).sum(0) / w.sum(0).clamp_min(1)  # (T, 3)
    offset = centroid - centroid.mean(0)
    offset = offset - (offset @ u)[:, None] * u
    return x - offset[None, :, None, :] * present[:, :, None, None]


def render_clip_to_file(
    joints: torch.Tensor | np.ndarray,
    fmt: str | SkeletonFormat,
    out_path: str | Path,
    *,
    frames: int | None = None,
    size: int = 224,
    fps: float = 30.0,
    stride: int | None = None,
    camera: str = "follow",
    scale: float = 1.0,
    cols: int | None = None,
    person_mask: Sequence[bool] | None = None,
) -> Path:
    """Render one clip to ``out_path``: ``.png``/``.jpg`` a frame grid, ``.gif`` an animation.

    Args:
        joints: ``(T, J, 3)`` (one person) or ``(P, T, J, 3)`` (``P <= 2`` people), metres
            (after multiplying by ``scale``).
        frames: frames spread evenly over the clip (segment middles). Default: 12 for a grid;
            for a GIF every ``stride``-th frame, so it plays at the clip's speed.
        fps: the clip's frame rate; a GIF shows frame ``k`` for ``stride / fps`` seconds (or
            ``T / (frames · fps)`` when ``frames`` is given).
        stride: GIF frame step (default: the smallest keeping the GIF at <= 25 fps).
        camera: ``"follow"`` (a camera that tracks the subject along the ground: the figure stays
            centred and keeps its size while it walks) or ``"fixed"`` (one camera framing the
            whole clip: the path travelled is visible, the figure is smaller).
        scale: multiplies the coordinates first (0.001 for millimetres).
    """
    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg", ".gif"):
        raise ValueError(f"out_path {str(out)!r}: expected a .png, .jpg or .gif file name")
    if camera not in ("follow", "fixed"):
        raise ValueError(f"camera must be 'follow' or 'fixed', got {camera!r}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be > 0, got {fps}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be > 0, got {scale}")
    x = torch.as_tensor(np.asarray(joints) if not isinstance(joints, torch.Tensor) else joints)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"joints must be (T, J, 3) or (P, T, J, 3) for one clip, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.double()
    clip = (x if x.ndim == 4 else x[None]).double() * scale  # (P, T, J, 3)
    if clip.shape[1] == 0 or clip.shape[-1] != 3:
        raise ValueError(f"joints must be (T, J, 3) with T >= 1, got {tuple(x.shape)}")
    check_metric_clip(clip)
    T = clip.shape[1]
    index = None
    if suffix == ".gif" and frames is None:
        stride = stride or max(1, math.ceil(fps / MAX_GIF_FPS - 1e-9))
        index = torch.arange(0, T, stride)[None]
        frames, duration_ms = index.shape[1], 1000.0 * stride / fps
    else:
        frames = frames or 12
        duration_ms = 1000.0 * T / (frames * fps)
    renderer = DrAction(fmt, image_size=size, num_frames=frames, learnable=False).eval()
    # The camera frames the subject wherever it is: centring in float64 first keeps far-away
    # coordinates (a clip in a 1e6 m world frame) from losing their detail in float32.
    present = (clip.abs().flatten(2).amax(-1) > 0).to(clip.dtype)  # (P, T)
    present[0] = 1.0
    w = present[:, :, None, None]
    centre = (clip * w).sum((0, 1, 2)) / (w.sum() * clip.shape[2])
    clip = clip - centre * w
    if camera == "follow":
        clip = follow_subject(clip, renderer.up)
    x = clip.float() if x.ndim == 4 else clip[0].float()
    mask = None if person_mask is None else torch.as_tensor(person_mask, dtype=torch.bool)[None]
    with torch.no_grad():
        images = renderer(x[None], person_mask=mask, frame_index=index)[0]
    pils = to_pil(images)
    if suffix == ".gif":
        return atomic_save_image(out, pils[0], save_all=True, append_images=pils[1:],
                                 duration=max(20, int(round(duration_ms / 10.0)) * 10), loop=0)
    return atomic_save_image(out, frame_grid(pils, cols))


def render_npy(npy_path: str | Path, fmt: str, out: str | Path, frames: int | None = None, size: int = 224,
               **kwargs) -> Path:  # fmt: skip
    """``render_clip_to_file`` for a ``.npy`` clip (loaded without pickle); ``kwargs``: ``fps``,
    ``stride``, ``camera``, ``scale``."""
    path = Path(npy_path)
    if not path.is_file():
        raise FileNotFoundError(f"clip file {str(path)!r} does not exist")
    try:
        joints = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not a plain numeric .npy array: {err}") from None
    try:
        return render_clip_to_file(joints, fmt, out, frames=frames, size=size, **kwargs)
    except ValueError as err:
        raise ValueError(f"{str(path)!r}: {err}") from None


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split():
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def _as_tensor(v) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))


def _pose_groups(joints) -> dict[str, torch.Tensor]:
    """Normalise the accepted ``joints`` forms to ``{name: (N, J, 3)}``."""
    if isinstance(joints, Mapping):
        groups = {str(k): _as_tensor(v) for k, v in joints.items()}
    elif isinstance(joints, (list, tuple)):
        items = [_as_tensor(v) for v in joints]
        if items and all(t.ndim == 2 for t in items):
            groups = {"": torch.stack(items)}  # a list of single poses
        else:
            groups = {f"#{k}": t for k, t in enumerate(items)}
    else:
        groups = {"": _as_tensor(joints)}
    if not groups:
        raise ValueError("render_pose_grid: no poses given")
    shapes = {k: tuple(v.shape) for k, v in groups.items()}
    sizes = {v.shape[0] if v.ndim == 3 else -1 for v in groups.values()}
    if len(sizes) != 1 or min(sizes) < 1 or any(v.shape[-1] != 3 for v in groups.values()):
        raise ValueError(
            f"render_pose_grid: every group must be (N, J, 3) with the same N >= 1, got {shapes}"
        )
    return {k: v.float() for k, v in groups.items()}


def render_pose_grid(
    joints,
    captions: Sequence[str] | None = None,
    fmt: str | SkeletonFormat = "smpl24",
    *,
    size: int = 160,
    cols: int | None = None,
    font_size: int = 12,
) -> Image.Image:
    """Static poses as a labelled grid.

    ``joints``: ``(N, J, 3)``, a list of ``N`` poses ``(J, 3)``, a list of groups
    ``(N, J, 3)``, or a dict ``name -> (N, J, 3)`` (e.g. ``{"pred": ..., "gt": ...}``).  Sample
    ``i`` of every group is drawn side by side (group names above, ``captions[i]`` wrapped
    underneath), all from one camera framed on that sample's poses of every group so they are
    directly comparable.  ``J = 24`` SMPL joints are converted when ``fmt`` is another format.
    """
    fmt = get_format(fmt)
    groups = _pose_groups(joints)
    for k, v in groups.items():
        if v.shape[1] == 24 and fmt.num_joints != 24 and fmt.smpl_map is not None:
            groups[k] = fmt.from_smpl(v)
    names = list(groups)
    stacked = torch.stack([groups[k] for k in names], dim=1)  # (N, K, J, 3)
    N, K = stacked.shape[:2]
    if captions is not None and len(captions) != N:
        raise ValueError(f"captions has {len(captions)} entries, expected one per pose ({N})")
    renderer = DrAction(fmt, image_size=size, num_frames=1, learnable=False, nfm=False).eval()
    clip = stacked[:, :, None]  # (N, K, 1, J, 3): groups as "people" only for framing
    camera = renderer.frame_camera(clip, torch.ones(N, K, 1, dtype=torch.bool))
    with torch.no_grad():
        # one (N, 3, H, W) panel stack per group
        panels = [renderer(stacked[:, k, None], camera=camera)[:, 0] for k in range(K)]

    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = font_size + 3
    cell_w = K * size + (K - 1) * 2
    head = line_h + 2 if any(names) else 0
    wrapped = [_wrap(measure, c, font, cell_w - 4) for c in captions] if captions else [[]] * N
    foot = max(len(w) for w in wrapped) * line_h + (4 if captions else 0)
    cols = cols or min(N, max(1, 6 // K))
    rows = math.ceil(N / cols)
    gap = 8
    cell_h = head + size + foot
    canvas_size = (cols * cell_w + (cols + 1) * gap, rows * cell_h + (rows + 1) * gap)
    canvas = Image.new("RGB", canvas_size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i in range(N):
        r, c = divmod(i, cols)
        x0, y0 = gap + c * (cell_w + gap), gap + r * (cell_h + gap)
        for k in range(K):
            xk = x0 + k * (size + 2)
            if names[k]:
                draw.text((xk + 2, y0), names[k], fill=(0, 0, 0), font=font)
            canvas.paste(to_pil(panels[k][i]), (xk, y0 + head))
        for j, line in enumerate(wrapped[i]):
            draw.text((x0 + 2, y0 + head + size + 2 + j * line_h), line, fill=(0, 0, 0), font=font)
    return canvas
