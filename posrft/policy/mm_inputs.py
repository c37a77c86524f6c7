"""``MultimodalInputs``: the model inputs a processor returns besides ``input_ids`` and
``attention_mask``, with how each is laid out, so that selecting, concatenating and splitting
samples is generic over model families.

Layouts (``N`` samples, ``P`` prompt tokens):

* ``SAMPLE``: ``(N, ...)``, one entry per sample; trailing dims may differ between batches and
  are zero-padded when batches are joined (Idefics3's ``pixel_values (N, tiles, 3, H, W)`` and
  ``pixel_attention_mask``, where an all-zero tile is padding to the model too);
* ``PROMPT``: ``(N, P)``, one value per prompt token, left-padded like the prompt
  (``token_type_ids``, ``mm_token_type_ids``); over completion tokens it takes the value
  :attr:`InputSpec.completion_value` (PaliGemma's suffix is 1, every other family's 0);
* ``IMAGE``: ``(R, ...)``, rows of all samples' images in order, one or more rows per image
  (tiles/crops); sample ``i`` owns ``rows[key][i]`` consecutive rows (LLaVA ``pixel_values``,
  ``image_grid_thw``, ``image_sizes``, InternVL tiles);
* ``PATCH``: ``(R, D)``, flat patch rows (Qwen-VL ``pixel_values``): image ``k`` owns
  ``prod(image_grid_thw[k])`` rows; per-sample row counts are kept like ``IMAGE``'s and checked
  against ``image_grid_thw``.

Joining zero-pads trailing dims up to the largest (processors pad with 0 and mark it in a
mask or size: LLaVA-NeXT tiles, Idefics3 pixels).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


class Layout(str, enum.Enum):
    SAMPLE = "sample"
    PROMPT = "prompt"
    IMAGE = "image"
    PATCH = "patch"


@dataclass(frozen=True)
class InputSpec:
    """How one extra model input is laid out; ``completion_value`` is used by ``PROMPT`` keys
    for completion tokens."""

    layout: Layout
    completion_value: int = 0


PACKED = (Layout.IMAGE, Layout.PATCH)


def _pad_trailing(t: Tensor, shape: Sequence[int]) -> Tensor:
    """Zero-pad every dim after the first up to ``shape`` (at the end)."""
    pad: list[int] = []
    for have, want in reversed(list(zip(t.shape[1:], shape))):
        pad += [0, want - have]
    return torch.nn.functional.pad(t, pad) if any(pad) else t


def _cat_padded(parts: Sequence[Tensor]) -> Tensor:
    ranks = {p.dim() for p in parts}
    if len(ranks) != 1:
        raise ValueError(f"cannot join tensors of ranks {sorted(ranks)}")
    shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
    return torch.cat([_pad_trailing(p, shape) for p in parts])


def _left_pad(t: Tensor, width: int) -> Tensor:
    return torch.nn.functional.pad(t, (width - t.shape[1], 0)) if t.shape[1] < width else t


@dataclass
class MultimodalInputs:
    """Extra model inputs of ``num_samples`` samples (see the module docstring).

    tensors: key → tensor; specs: key → :class:`InputSpec`; rows: packed key → ``(N,)`` int64
    rows owned by each sample; image_counts: ``(N,)`` images of each sample (default none).
    """

    num_samples: int
    tensors: dict[str, Tensor] = field(default_factory=dict)
    specs: dict[str, InputSpec] = field(default_factory=dict)
    rows: dict[str, Tensor] = field(default_factory=dict)
    image_counts: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.num_samples
        if self.image_counts is None:
            self.image_counts = torch.zeros(n, dtype=torch.long)
        if self.image_counts.shape != (n,):
            raise ValueError(f"image_counts must be shaped ({n},), got {tuple(self.image_counts.shape)}")
        for key, t in self.tensors.items():
            spec = self.specs.get(key)
            if spec is None:
                raise ValueError(f"model input {key!r} has no layout (specs)")
            if spec.layout in PACKED:
                rows = self.rows.get(key)
                if rows is None or rows.shape != (n,):
                    raise ValueError(f"packed model input {key!r} needs rows of shape ({n},)")
                if int(rows.sum()) != t.shape[0]:
                    raise ValueError(f"model input {key!r} has {t.shape[0]} rows but its samples own "
                                     f"{int(rows.sum())}")
            elif t.shape[0] != n:
                raise ValueError(f"model input {key!r} ({spec.layout.value}) has {t.shape[0]} rows, "
                                 f"expected one per sample ({n})")
        self._check_patches()

    def _check_patches(self) -> None:
        grid = self.tensors.get("image_grid_thw")
        for key, spec in self.specs.items():
            if spec.layout is not Layout.PATCH or key not in self.tensors:
                continue
            if grid is None:
                raise ValueError(f"{key!r} holds flat patches but there is no image_grid_thw")
            per_image = grid.long().prod(-1)
            owned = torch.zeros(self.num_samples, dtype=torch.long)
            owned.index_add_(0, torch.repeat_interleave(torch.arange(self.num_samples),
                                                        self.rows["image_grid_thw"].cpu()),
                             per_image.cpu())
            if not torch.equal(owned, self.rows[key].cpu()):
                raise ValueError(f"{key!r}: patch rows per sample {self.rows[key].tolist()} do not "
                                 f"match image_grid_thw ({owned.tolist()})")

    # ------------------------------------------------------------------ queries
    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def get(self, key: str) -> Tensor | None:
        return self.tensors.get(key)

    # ------------------------------------------------------------------ row operations
    def select(self, indices: Sequence[int] | Tensor) -> "MultimodalInputs":
        """Samples ``indices`` (any order, repeats allowed); packed rows follow their sample."""
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        tensors: dict[str, Tensor] = {}
        rows: dict[str, Tensor] = {}
        for key, t in self.tensors.items():
            if self.specs[key].layout in PACKED:
                counts = self.rows[key].cpu()
                starts = counts.cumsum(0) - counts
                take = [torch.arange(int(starts[i]), int(starts[i] + counts[i])) for i in idx.tolist()]
                flat = torch.cat(take) if take else torch.zeros(0, dtype=torch.long)
                tensors[key] = t[flat.to(t.device)]
                rows[key] = counts[idx].to(self.rows[key].device)
            else:
                tensors[key] = t[idx.to(t.device)]
        return MultimodalInputs(len(idx), tensors, dict(self.specs), rows,
                                self.image_counts[idx.to(self.image_counts.device)])

    @staticmethod
    def concat(parts: Sequence["MultimodalInputs"],
               prompt_width: int | None = None) -> "MultimodalInputs":
        """Samples of ``parts`` in order. ``PROMPT`` keys are left-padded to ``prompt_width``
        (default: the widest part); a key some parts lack is filled for their samples (zero
        rows for packed keys, zeros otherwise); trailing dims are zero-padded to the largest."""
        if not parts:
            raise ValueError("concat needs at least one MultimodalInputs")
        specs: dict[str, InputSpec] = {}
        for p in parts:
            for key, spec in p.specs.items():
                if key in p.tensors and specs.setdefault(key, spec) != spec:
                    raise ValueError(f"model input {key!r} is laid out differently in the parts")
        total = sum(p.num_samples for p in parts)
        tensors: dict[str, Tensor] = {}
        rows: dict[str, Tensor] = {}
        for key, spec in specs.items():
            ref = next(p.tensors[key] for p in parts if key in p.tensors)
            pieces, counts = [], []
            for p in parts:
                t = p.tensors.get(key)
                n = p.num_samples
                if t is None:
                    if spec.layout in PACKED:
                        t = ref.new_zeros((0, *ref.shape[1:]))
                    elif spec.layout is Layout.PROMPT:
                        t = ref.new_zeros((n, 0))
                    else:
                        t = ref.new_zeros((n, *([0] * (ref.dim() - 1))))
                if spec.layout in PACKED:
                    counts.append(p.rows[key].cpu() if key in p.rows
                                  else torch.zeros(n, dtype=torch.long))
                pieces.append(t.to(ref.device))
            if spec.layout is Layout.PROMPT:
                width = max([prompt_width or 0] + [t.shape[1] for t in pieces])
                tensors[key] = torch.cat([_left_pad(t, width) for t in pieces])
            else:
                tensors[key] = _cat_padded(pieces)
            if spec.layout in PACKED:
                rows[key] = torch.cat(counts)
        images = torch.cat([p.image_counts.cpu() for p in parts])
        return MultimodalInputs(total, tensors, specs, rows, images)

    def repeat_interleave(self, repeats: int) -> "MultimodalInputs":
        """Each sample ``repeats`` times in a row (G generations of one prompt)."""
        return self.select(torch.arange(self.num_samples).repeat_interleave(repeats))

    # ------------------------------------------------------------------ prompt columns
    def trim_prompt(self, first: int) -> "MultimodalInputs":
        """Drop the first ``first`` prompt columns of ``PROMPT`` keys (all-padding columns)."""
        if first == 0:
            return self
        tensors = {k: (t[:, first:] if self.specs[k].layout is Layout.PROMPT else t)
                   for k, t in self.tensors.items()}
        return MultimodalInputs(self.num_samples, tensors, dict(self.specs), dict(self.rows),
                                self.image_counts)

    def pad_prompt(self, width: int) -> "MultimodalInputs":
        """Left-pad ``PROMPT`` keys to ``width`` columns (the prompt was padded the same way)."""
        tensors = {k: (_left_pad(t, width) if self.specs[k].layout is Layout.PROMPT else t)
                   for k, t in self.tensors.items()}
        return MultimodalInputs(self.num_samples, tensors, dict(self.specs), dict(self.rows),
                                self.image_counts)

    def model_kwargs(self, completion_tokens: int = 0, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """Keyword arguments for the HF model over prompt + ``completion_tokens`` tokens:
        ``PROMPT`` keys extended with their completion value, floating tensors (pixels) cast to
        ``dtype``, everything moved to ``device``. Samples without any image get no image
        inputs at all (a vision tower run on zero images fails in several families)."""
        out: dict[str, Tensor] = {}
        no_images = int(self.image_counts.sum()) == 0
        for key, t in self.tensors.items():
            spec = self.specs[key]
            if no_images and spec.layout is not Layout.PROMPT:
                continue
            if spec.layout is Layout.PROMPT and completion_tokens:
                tail = t.new_full((t.shape[0], completion_tokens), spec.completion_value)
                t = torch.cat([t, tail], 1)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[key] = t.to(device) if device is not None else t
        return out

    def to(self, device: torch.device | str) -> "MultimodalInputs":
        return MultimodalInputs(self.num_samples, {k: t.to(device) for k, t in self.tensors.items()},
                                dict(self.specs), {k: r.to(device) for k, r in self.rows.items()},
                                self.image_counts.to(device))

    # ------------------------------------------------------------------ building
    @classmethod
    def from_sample(cls, encoded: Mapping[str, Tensor], specs: Mapping[str, InputSpec],
                    where: str, ignored: Sequence[str] = (), num_images: int = 0) -> "MultimodalInputs":
        """One sample's processor output (batch of 1; ``input_ids``/``attention_mask`` and the
        ``ignored`` keys skipped); a key without a spec raises, naming it and ``where`` (the
        family)."""
        tensors: dict[str, Tensor] = {}
        rows: dict[str, Tensor] = {}
        used: dict[str, InputSpec] = {}
        for key, value in encoded.items():
            if key in ("input_ids", "attention_mask") or key in ignored:
                continue
            if key not in specs:
                raise ValueError(f"the processor of {where} returned {key!r}, which the family "
                                 f"registry does not list (posrft.policy.families): add it with its "
                                 f"layout so that it reaches the model")
            t = torch.as_tensor(value)
            spec = specs[key]
            if spec.layout in PACKED:
                rows[key] = torch.tensor([t.shape[0]], dtype=torch.long)
            elif t.shape[0] != 1:
                raise ValueError(f"{where}: {key!r} of one sample has {t.shape[0]} rows")
            tensors[key] = t
            used[key] = spec
        return cls(1, tensors, used, rows, torch.tensor([num_images], dtype=torch.long))
