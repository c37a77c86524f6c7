"""SkeletonLLM: DrAction renderer in front of a LLaVA-layout MLLM, trained end to end.

    joints (B, T, J, 3) --DrAction--> frames (B, T', 3, h, w) in [0, 1]
        --resize to the tower's input size S (bilinear, differentiable) and normalise
          (x - mean) / std with the processor's constants (CLIP's for the tiny model, ImageNet's
          for DINOv2)--> pixel_values (B·T', 3, S, S)
        --vision tower + projector, once per clip (posrft.skeleton.reader), optionally
          average-pooled p×p--> image_seq_length tokens per frame
        --decoder, prompt with T' <image> parts (each expanded to image_seq_length tokens)-->
    per-row log-likelihood of the answer tokens

Families: ``llava`` (the tiny offline model, ``init-pretrained --pool 1``) and ``aya_vision``
(``init-pretrained --pool 4``: DINOv2-small + SmolLM2, whose projector pixel-shuffles 4×4 patch
blocks, so 224 px -> 16 tokens and 112 px -> 4). ``vision_size`` and ``token_pool`` in
:class:`RendererSettings` choose how many tokens a frame costs (the DINOv2 position embeddings
are interpolated to any multiple of its patch grid).

Gradients of the answer loss flow through the (frozen) vision tower into every renderer
parameter. Which parts train is set by :meth:`SkeletonLLM.set_train_parts` (renderer,
projector, LoRA on the language model); everything else has ``requires_grad=False``.

Saved folder (atomic): the HF model (``save_pretrained``; LoRA merged in) and processor,
``renderer.safetensors`` and ``skeleton_renderer.json`` (the renderer's settings). A plain HF
model folder (``posrft model init-tiny``) loads too, with a freshly initialised renderer.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posrft.policy.checkpoint import atomic_directory, load_module, save_module
from posrft.policy.families import ModelFamily, family_for_model_type
from posrft.policy.image_tokens import pin_token_norm, projector_module_names
from posrft.policy.lora import DEFAULT_TARGETS, language_model_linear_names
from posrft.policy.model import load_hf
from posrft.render.draction import DrAction
from posrft.skeleton.reader import (
    decoder_of,
    embed_with_images,
    image_features,
    pool_tokens,
    run_decoder,
    target_logprobs,
)

RENDERER_WEIGHTS = "renderer.safetensors"
RENDERER_CONFIG = "skeleton_renderer.json"
PARTS = ("renderer", "projector", "lora")
#: Trained in full alongside the LoRA adapters when the LM head is not tied to the input
#: embeddings (``lm_head: None`` = auto): the offline tiny model is random, and with a frozen
#: random LM head the adapters alone learn the answer vocabulary far too slowly (measured:
#: answer loss 7.7 -> 5.5 nats/token in 300 steps without it). A pretrained model with tied
#: embeddings (SmolLM2) keeps its head: a trainable copy would untie it and, with 28 M
#: parameters, fit the seen class names' tokens rather than the frames.
LORA_FULL_MODULES = ("lm_head",)
#: families whose pixel inputs the renderer output can replace in torch (resize + normalise)
DIFFERENTIABLE_FAMILIES = ("llava", "aya_vision")


@dataclass
class RendererSettings:
    """How the renderer is built and its frames read (saved as ``skeleton_renderer.json``).

    ``image_size`` None means the tower's input size. ``num_frames`` (T') is not a parameter
    shape, so a later stage may render a different number of frames. ``vision_size``: pixels
    per side given to the vision tower (None: the processor's crop size); ``token_pool``:
    average p×p image tokens of a frame into one (None: 1); ``image_token_norm``: the L2 norm
    every (pooled) image token is pinned to (:mod:`posrft.policy.image_tokens`; None: as the
    projector emits them); ``image_tokens_standardized``: the projector's output layer was
    refitted to standardise each channel over the first stage's frames
    (:func:`posrft.policy.image_tokens.standardize_image_tokens`), so later stages keep it;
    ``projector_aligned_steps``: steps of word alignment the projector had
    (:mod:`posrft.skeleton.align`; 0: none).
    """

    fmt: str = "smpl24"
    num_frames: int = 6
    image_size: int | None = None
    samples_per_bone: int = 4
    nfm: bool = True
    seed: int = 0
    vision_size: int | None = None
    token_pool: int | None = None
    image_token_norm: float | None = None
    image_tokens_standardized: bool = False
    projector_aligned_steps: int = 0

    @classmethod
    def from_json_file(cls, path: Path) -> "RendererSettings":
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def differentiable_family(lm: nn.Module) -> ModelFamily:
    """The registry family of ``lm`` (a PEFT wrapper is looked through), if the renderer's
    pixels can feed it in torch; otherwise a ``ValueError`` naming the family."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    family = family_for_model_type(base.config.model_type, True)
    if family.name not in DIFFERENTIABLE_FAMILIES:
        raise ValueError(
            f"SkeletonLLM's differentiable frames-to-pixels path needs a LLaVA-style model "
            f"(fixed-size images, image_seq_length tokens each); {family.title} is not supported "
            f"there. Its rendered frames can still be the images of one prompt through "
            f"PosePolicy.rollout (not differentiable into the renderer)")
    return family


def top_layer_names(names: list[str], layers: int | None) -> list[str]:
    """The module names of ``names`` inside the top ``layers`` decoder layers (``…layers.<i>.…``);
    ``None`` keeps all."""
    if layers is None:
        return names
    index = {n: int(m.group(1)) for n in names if (m := re.search(r"\.layers\.(\d+)\.", n))}
    if not index:
        raise ValueError("lora_layers: no '.layers.<i>.' in the language model's module names")
    depth = max(index.values()) + 1
    if not 1 <= layers <= depth:
        raise ValueError(f"lora_layers must be in [1, {depth}] (decoder layers), got {layers}")
    return [n for n, i in index.items() if i >= depth - layers]


def processor_size(processor: Any, hf_model: nn.Module) -> int:
    """The image side the processor produces (its crop size), else the tower's config size."""
    ip = processor.image_processor
    crop = getattr(ip, "crop_size", None)
    if isinstance(crop, dict) and crop.get("height"):
        return int(crop["height"])
    size = getattr(ip, "size", None)
    if isinstance(size, dict) and (size.get("height") or size.get("shortest_edge")):
        return int(size.get("height") or size["shortest_edge"])
    return int(hf_model.config.vision_config.image_size)


def build_renderer(settings: RendererSettings, vision_size: int, learnable: bool = True) -> DrAction:
    return DrAction(settings.fmt, image_size=settings.image_size or vision_size,
                    num_frames=settings.num_frames, samples_per_bone=settings.samples_per_bone,
                    nfm=settings.nfm, learnable=learnable, seed=settings.seed)


class SkeletonLLM(nn.Module):
    """Renderer + HF image-text model (``lm``, possibly a PEFT wrapper) + its processor."""

    def __init__(self, lm: nn.Module, processor: Any, renderer: DrAction,
                 settings: RendererSettings, renderer_learnable: bool = True) -> None:
        super().__init__()
        if not hasattr(processor, "image_processor"):
            raise ValueError("SkeletonLLM needs an image-text model with an image processor "
                             "(e.g. posrft model init-tiny), got a text-only one")
        self.family = differentiable_family(lm)
        self.lm = lm
        self.processor = processor
        self.renderer = renderer
        self.settings = settings
        self.renderer_learnable = renderer_learnable
        if (settings.token_pool or 1) < 1:
            raise ValueError(f"token_pool must be >= 1, got {settings.token_pool}")
        ip = processor.image_processor
        self.register_buffer("pixel_mean", torch.tensor(ip.image_mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(ip.image_std, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self._image_seq_length: int | None = None
        if not renderer_learnable:
            self.renderer.requires_grad_(False)

    # ------------------------------------------------------------------ properties
    @property
    def hf_model(self) -> nn.Module:
        get_base = getattr(self.lm, "get_base_model", None)
        return get_base() if get_base is not None else self.lm

    @property
    def is_lora(self) -> bool:
        return self.hf_model is not self.lm

    @property
    def vision_size(self) -> int:
        """Pixels per side given to the vision tower."""
        return int(self.settings.vision_size or processor_size(self.processor, self.hf_model))

    @property
    def image_seq_length(self) -> int:
        """LM tokens per frame, measured once by running the tower on a blank frame (16 for
        the tiny model; 16 / 4 for DINOv2 at 224 / 112 px with the 4×4 pixel shuffle)."""
        if self._image_seq_length is None:
            with torch.no_grad():
                blank = torch.zeros(1, 1, 3, self.vision_size, self.vision_size, device=self.device,
                                    dtype=self.hf_model.dtype)
                self._image_seq_length = int(self.image_tokens(blank).shape[1])
        return self._image_seq_length

    @property
    def num_frames(self) -> int:
        return self.renderer.num_frames

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    # ------------------------------------------------------------------ pixels
    def normalise(self, frames: Tensor) -> Tensor:
        """``(..., 3, h, w)`` in [0, 1] -> resized to ``S x S`` and normalised."""
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:])
        s = self.vision_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)
        return x.reshape(*lead, 3, s, s)

    def pixels(self, joints: Tensor, **render_kwargs: Any) -> Tensor:
        """``(B, T, J, 3)`` clips -> ``(B, T', 3, S, S)`` model-ready pixels (differentiable).
        The renderer always runs in float32 (alpha compositing of many faint Gaussians is where
        bf16 would lose the most, and it is cheap next to the tower)."""
        with torch.autocast(joints.device.type, enabled=False):
            frames = self.renderer(joints.float(), **render_kwargs)
        return self.normalise(frames)

    def image_tokens(self, pixel_values: Tensor) -> Tensor:
        """``(B, T', 3, S, S)`` -> ``(B, T' · image_seq_length, d)``: each clip's frames as LM
        token embeddings, in prompt order."""
        b, t = pixel_values.shape[:2]
        pix = pixel_values.flatten(0, 1).to(self.device, self.hf_model.dtype)
        feats = pool_tokens(image_features(self.hf_model, pix), self.settings.token_pool or 1)
        if self.settings.image_token_norm is not None:
            feats = pin_token_norm(feats, self.settings.image_token_norm)
        return feats.reshape(b, t * feats.shape[1], feats.shape[2])

    # ------------------------------------------------------------------ log-likelihood
    def answer_logprobs(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor,
                        target_mask: Tensor, clip_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Summed log-probability of the target tokens per row, and their count.

        pixel_values ``(B, T', 3, S, S)``; text rows ``(N, L)`` right-padded; ``clip_index (N,)``
        says which clip row ``n`` shows (default ``arange(B)``, then ``N == B``). Row ``n``'s
        prompt must hold ``T' · image_seq_length`` image tokens. The vision tower runs once per
        clip however many rows show it.
        """
        n = input_ids.shape[0]
        if clip_index is None:
            if pixel_values.shape[0] != n:
                raise ValueError(f"{pixel_values.shape[0]} clips but {n} text rows; give clip_index")
            clip_index = torch.arange(n)
        device = self.device
        images = self.image_tokens(pixel_values)[clip_index.to(device)]
        input_ids = input_ids.to(device)
        embeds = embed_with_images(self.hf_model, input_ids, images)
        hidden = run_decoder(decoder_of(self.hf_model), embeds, attention_mask.to(device))
        return target_logprobs(self.hf_model, hidden, input_ids, target_mask.to(device))

    def forward(self, joints: Tensor, input_ids: Tensor, attention_mask: Tensor, target_mask: Tensor,
                clip_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Render ``joints (B, T, J, 3)`` and score the answers (see :meth:`answer_logprobs`)."""
        return self.answer_logprobs(self.pixels(joints), input_ids, attention_mask, target_mask,
                                    clip_index)

    # ------------------------------------------------------------------ what trains
    def set_train_parts(self, parts: Iterable[str], lora_r: int = 16, lora_alpha: float = 32.0,
                        lora_dropout: float = 0.0, lm_head: bool | None = None,
                        lora_layers: int | None = None) -> list[str]:
        """Freeze everything, then unfreeze ``parts`` (subset of renderer/projector/lora);
        ``lora`` wraps the language model's linear layers with a fresh PEFT adapter (only those
        of the top ``lora_layers`` decoder layers if given), plus a trainable copy of the LM head
        when ``lm_head`` (None: when the head is not tied to the input embeddings, see
        :data:`LORA_FULL_MODULES`). Returns the trainable parameter names. The renderer stays
        frozen when ``renderer_learnable`` is off.
        """
        parts = set(parts)
        unknown = parts - set(PARTS)
        if unknown or not parts:
            raise ValueError(f"train_parts must be a non-empty subset of {list(PARTS)}, got {sorted(parts)}")
        if "lora" in parts and not self.is_lora:
            from peft import LoraConfig, get_peft_model

            if lm_head is None:
                lm_head = not self.lm_head_tied()
            targets = top_layer_names(language_model_linear_names(self.lm, DEFAULT_TARGETS),
                                      lora_layers)
            self.lm = get_peft_model(self.lm, LoraConfig(
                r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                target_modules=targets, bias="none",
                modules_to_save=list(LORA_FULL_MODULES) if lm_head else None))  # fmt: skip
        self.requires_grad_(False)
        if "renderer" in parts and self.renderer_learnable:
            self.renderer.requires_grad_(True)
        if "projector" in parts:  # the family registry names the projector
            modules = dict(self.hf_model.named_modules())
            for name in projector_module_names(self.hf_model, self.family):
                modules[name].requires_grad_(True)
        if "lora" in parts:
            for name, p in self.lm.named_parameters():
                if "lora_" in name or "modules_to_save" in name:
                    p.requires_grad_(True)
        names = [name for name, p in self.named_parameters() if p.requires_grad]
        if not names:
            raise ValueError(f"train_parts {sorted(parts)}: no trainable parameters (fixed renderer?)")
        return names

    def lm_head_tied(self) -> bool:
        """Whether the output head shares its weight with the input embeddings."""
        base = self.hf_model
        return base.get_output_embeddings().weight is base.get_input_embeddings().weight

    def renderer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.renderer.parameters() if p.requires_grad]

    def model_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.lm.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ saving / loading
    def save_pretrained(self, path: str | Path) -> Path:
        """Write the folder atomically (LoRA merged into a copy of the model)."""
        path = Path(path)
        lm = copy.deepcopy(self.lm).merge_and_unload() if self.is_lora else self.lm
        with atomic_directory(path) as tmp:
            lm.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            save_module(self.renderer, tmp / RENDERER_WEIGHTS)
            (tmp / RENDERER_CONFIG).write_text(json.dumps(asdict(self.settings), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, settings: RendererSettings | None = None,
                        renderer_learnable: bool = True,
                        dtype: torch.dtype | None = None) -> "SkeletonLLM":
        """Load a SkeletonLLM folder or a plain HF image-text folder.

        ``settings``: used for a folder without ``skeleton_renderer.json``; for a SkeletonLLM
        folder only its ``num_frames`` and, when set, ``vision_size`` / ``token_pool`` /
        ``image_token_norm`` apply (the
        rest is fixed by the saved weights, and a different ``fmt`` is an error naming both).
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model folder (no config.json); build one with "
                                    "`posrft model init-tiny` or give a previous stage's OUTPUT_DIR/final")
        lm, processor = load_hf(path, dtype)
        saved = path / RENDERER_CONFIG
        if saved.is_file():
            stored = RendererSettings.from_json_file(saved)
            if settings is not None and settings.fmt != stored.fmt:
                raise ValueError(f"{saved}: the renderer was trained for format {stored.fmt!r}, "
                                 f"the config asks for {settings.fmt!r}")
            if settings is not None:
                stored.num_frames = settings.num_frames
                stored.vision_size = settings.vision_size or stored.vision_size
                stored.token_pool = settings.token_pool or stored.token_pool
                stored.image_token_norm = settings.image_token_norm or stored.image_token_norm
            settings = stored
        settings = settings or RendererSettings()
        differentiable_family(lm)
        vision_size = int(settings.vision_size or processor_size(processor, lm))
        renderer = build_renderer(settings, vision_size, learnable=True)
        if (path / RENDERER_WEIGHTS).is_file():
            load_module(renderer, path / RENDERER_WEIGHTS)
        model = cls(lm, processor, renderer, settings, renderer_learnable)
        return model.to(lm.device)
