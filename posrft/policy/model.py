"""``PosePolicy``: an HF language model (image-text or text-only) plus the Gaussian pose head.

π(a, p | q) = π(a | q) · π(p | q, a): the LM head gives the text tokens a, the pose head reads
the last hidden state at the first ``<POSE>`` token of a and gives N(p; μ, diag σ²).

Log-prob conventions (as TRL's GRPO): token log-probs are
``log_softmax(logits / temperature)[token]``, i.e. the sampling distribution at that temperature
with top-p/top-k truncation ignored. Token ids that must never be generated (the image
placeholder of a multimodal model) are suppressed in ``generate`` *and* given −∞ logits here,
so both see the same renormalised distribution. Positions follow ``generate``: counted over
attended tokens, so left padding does not shift them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from posrft.policy.checkpoint import atomic_directory, load_module, save_module
from posrft.policy.config import (
    ADAPTER_DIR,
    CONFIG_NAME,
    POSE_HEAD_NAME,
    REF_POSE_HEAD_NAME,
    PosePolicyConfig,
)
from posrft.policy.families import ModelFamily, family_for_model_type
from posrft.policy.image_reader import gather_image_tokens
from posrft.policy.image_tokens import set_image_token_norm
from posrft.policy.logprobs import first_token_index, position_ids_from_mask, selective_log_softmax
from posrft.policy.mm_inputs import MultimodalInputs
from posrft.policy.pose_head import GaussianPoseHead, PoseDistribution, SigmaSettings


class PolicyLogProbs(NamedTuple):
    """token_logps (N, T) float32; pose_dist over N; pose_logp (N,) (0 where invalid, None when
    no poses were given); pose_valid (N,) bool: the completion has ``<POSE>`` before EOS."""

    token_logps: Tensor
    pose_dist: PoseDistribution
    pose_logp: Tensor | None
    pose_valid: Tensor


def resolve_token_id(tokenizer: Any, token: str, source: str) -> int:
    """Id of ``token``, which must be a single vocabulary entry; errors name the tokenizer."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        raise ValueError(
            f"the tokenizer from {source} has no {token!r} token; add it as a special token "
            f"(tokenizer.add_special_tokens({{'additional_special_tokens': [{token!r}]}})) and "
            f"resize the model's embeddings, or use posrft.policy.tiny.build_tiny_model"
        )
    ids = tokenizer.encode(token, add_special_tokens=False)
    if ids != [vocab[token]]:
        raise ValueError(f"the tokenizer from {source} splits {token!r} into {ids}; it must be "
                         f"one special token")
    return vocab[token]


def model_family(path: str | Path) -> ModelFamily:
    """Registry family of the HF folder ``path`` (from ``config.json``'s ``model_type``)."""
    model_type = AutoConfig.from_pretrained(path).model_type
    return family_for_model_type(model_type, model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def load_hf(path: str | Path, dtype: torch.dtype | None = None) -> tuple[nn.Module, Any]:
    """Load an HF model and its processor (image-text) or tokenizer (text-only) from a folder;
    the processor is built as the model's family says (image-only where a video processor
    would need torchvision)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
    family = model_family(path)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    processing = family.load_processor(path)
    if family.multimodal:
        return AutoModelForImageTextToText.from_pretrained(path, **kwargs), processing
    return AutoModelForCausalLM.from_pretrained(path, **kwargs), processing


#: config attributes holding the ids of multimodal placeholder tokens (never generated)
_PLACEHOLDER_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                      "boi_token_index", "eoi_token_index", "vision_start_token_id",
                      "vision_end_token_id")


class PosePolicy(nn.Module):
    """HF model + :class:`GaussianPoseHead`. ``model`` may be a PEFT ``PeftModel`` (see
    :mod:`posrft.policy.lora`); ``hf_model`` is then the base model with LoRA layers injected."""

    def __init__(self, model: nn.Module, processing: Any, config: PosePolicyConfig | None = None,
                 pose_head: GaussianPoseHead | None = None, source: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.processing = processing
        self.config = config or PosePolicyConfig()
        self.source = source
        self.multimodal = hasattr(processing, "image_processor")
        hf_config = self.hf_model.config
        self.family = family_for_model_type(hf_config.model_type, self.multimodal)
        tokenizer = self.tokenizer
        where = source or "the given processor"
        self.pose_token_id = resolve_token_id(tokenizer, self.config.pose_token, where)
        vocab_rows = self.hf_model.get_output_embeddings().weight.shape[0]
        if self.pose_token_id >= vocab_rows:
            raise ValueError(f"{self.config.pose_token!r} has id {self.pose_token_id} but the model "
                             f"from {where} has only {vocab_rows} output rows; resize embeddings")
        self.suppressed_token_ids: list[int] = []
        self.image_token_id: int | None = None
        if self.multimodal:
            image_token = getattr(processing, "image_token", None) or "<image>"
            self.image_token_id = resolve_token_id(tokenizer, image_token, where)
            ids = [self.image_token_id]
            ids += [getattr(hf_config, a) for a in _PLACEHOLDER_ATTRS
                    if isinstance(getattr(hf_config, a, None), int) and getattr(hf_config, a) < vocab_rows]
            self.suppressed_token_ids = sorted(set(ids))
            if self.pose_token_id in self.suppressed_token_ids:
                raise ValueError(f"{self.config.pose_token!r} is also an image placeholder of the "
                                 f"model from {where}")
        if self.config.image_token_norm is not None:
            if not self.multimodal:
                raise ValueError(f"image_token_norm={self.config.image_token_norm} but the model from "
                                 f"{where} is text-only")  # fmt: skip
            set_image_token_norm(self.model, self.family, self.config.image_token_norm)
        self.pad_token_id, self.eos_token_ids = self._special_ids(tokenizer)
        if self.config.head_reads_image and not self.multimodal:
            raise ValueError(f"head_reads_image=True but the model from {where} is text-only")
        if pose_head is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.head_seed)
                pose_head = GaussianPoseHead(
                    self.hidden_size, self.config.num_joints, self.config.head_hidden_size,
                    self.config.log_std_min, self.config.log_std_max, self.config.init_log_std,
                    image_token_size=self.hidden_size if self.config.head_reads_image else None)
        if pose_head.reads_image != self.config.head_reads_image:
            raise ValueError(f"the pose head {'reads' if pose_head.reads_image else 'does not read'} the "
                             f"image but the config says head_reads_image={self.config.head_reads_image}")
        if pose_head.pose_dim != self.config.pose_dim:
            raise ValueError(f"pose head predicts {pose_head.pose_dim} values but the config says "
                             f"num_joints={self.config.num_joints} ({self.config.pose_dim})")
        if pose_head.sigma != self.config.sigma_settings:
            pose_head.set_sigma(self.config.sigma_settings)
        self.pose_head = pose_head.to(self.device)
        self.ref_pose_head: GaussianPoseHead | None = None
        self._use_ref_head = False

    # ----------------------------------------------------------------- properties
    @property
    def tokenizer(self) -> Any:
        return getattr(self.processing, "tokenizer", self.processing)

    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (PEFT's base model, LoRA layers included, when wrapped)."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if get_base is not None else self.model

    @property
    def is_lora(self) -> bool:
        return self.hf_model is not self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.hf_model.config.get_text_config().hidden_size

    @property
    def active_pose_head(self) -> GaussianPoseHead:
        return self.ref_pose_head if self._use_ref_head else self.pose_head

    def _special_ids(self, tokenizer: Any) -> tuple[int, list[int]]:
        eos = self.hf_model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(tokenizer.eos_token_id)
        if not eos_ids:
            raise ValueError("neither the generation config nor the tokenizer defines an EOS token")
        pad = tokenizer.pad_token_id
        return (eos_ids[0] if pad is None else pad), eos_ids

    # ----------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype | None = None,
                        config: PosePolicyConfig | None = None,
                        device: str | torch.device | None = None) -> "PosePolicy":
        """Load a policy folder: an HF model folder (+ optional ``pose_head.safetensors`` and
        ``posrft_config.json``) or a LoRA checkpoint written by :meth:`save_pretrained`.

        ``config`` is used only when the folder has no ``posrft_config.json``. Without
        ``pose_head.safetensors`` the head is freshly initialised from ``config.head_seed``.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"policy folder {path} does not exist")
        if (path / CONFIG_NAME).is_file():
            config = PosePolicyConfig.from_json_file(path / CONFIG_NAME)
        config = config or PosePolicyConfig()
        adapter = path / ADAPTER_DIR
        if adapter.is_dir():
            base = Path(config.base_model_path or "")
            if not config.base_model_path or not (base / "config.json").is_file():
                raise FileNotFoundError(
                    f"{path / CONFIG_NAME}: LoRA checkpoint whose base model folder "
                    f"base_model_path={config.base_model_path!r} is missing or not an HF model")
            model, processing = load_hf(base, dtype)
            # the checkpoint's own copy of the processor wins over the base model's
            processing = type(processing).from_pretrained(path)
            from peft import PeftModel  # local: only LoRA checkpoints need peft

            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            model, processing = load_hf(path, dtype)
        if device is not None:
            model = model.to(device)
        policy = cls(model, processing, config, source=str(path.resolve()))
        if (path / POSE_HEAD_NAME).is_file():
            load_module(policy.pose_head, path / POSE_HEAD_NAME)
        if (path / REF_POSE_HEAD_NAME).is_file():
            policy.set_reference_head()
            load_module(policy.ref_pose_head, path / REF_POSE_HEAD_NAME)
        return policy

    def set_pose_sigma(self, settings: SigmaSettings) -> None:
        """How the head produces σ from now on (kept in the config, so a saved policy reloads
        with it). Learner and rollout workers apply the same settings."""
        self.pose_head.set_sigma(settings)
        self.config.sigma = None if settings.is_default else dataclasses.asdict(settings)

    def set_reference_head(self) -> None:
        """Freeze a copy of the current pose head as the reference head (used under
        :meth:`disable_adapter`, so the reference policy is the pre-LoRA one in full)."""
        import copy

        self.ref_pose_head = copy.deepcopy(self.pose_head).requires_grad_(False)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the policy folder atomically (temp sibling folder, then rename).

        Plain model: HF weights + processor + ``pose_head.safetensors`` + ``posrft_config.json``.
        LoRA model: ``adapter/`` (PEFT adapter incl. the trainable projector) instead of the HF
        weights, plus ``ref_pose_head.safetensors``; the base model stays where
        ``config.base_model_path`` points.
        """
        path = Path(path)
        with atomic_directory(path) as tmp:
            if self.is_lora:
                if not self.config.base_model_path:
                    raise ValueError("cannot save a LoRA policy whose base model folder is unknown "
                                     "(load the base with PosePolicy.from_pretrained first)")
                self.model.save_pretrained(tmp / ADAPTER_DIR)
            else:
                self.model.save_pretrained(tmp)
            self.processing.save_pretrained(tmp)
            save_module(self.pose_head, tmp / POSE_HEAD_NAME)
            if self.ref_pose_head is not None and self.is_lora:
                save_module(self.ref_pose_head, tmp / REF_POSE_HEAD_NAME)
            self.config.to_json_file(tmp / CONFIG_NAME)
        return path

    # ----------------------------------------------------------------- reference policy
    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator["PosePolicy"]:
        """Within the block the policy is the reference π_ref: LoRA (and the PEFT copy of the
        projector) switched off and the frozen reference pose head in use."""
        if not self.is_lora or self.ref_pose_head is None:
            raise RuntimeError("disable_adapter needs a LoRA policy (posrft.policy.lora.apply_lora); "
                               "for full fine-tuning load a separate reference PosePolicy")
        with self.model.disable_adapter():
            self._use_ref_head = True
            try:
                yield self
            finally:
                self._use_ref_head = False

    # ----------------------------------------------------------------- log-probs
    def decoder_input_hook(self, store: list[Tensor]) -> Any:
        """Register a hook that appends the first decoder layer's input (the embeddings the
        language model receives, image tokens merged in) to ``store`` on its first call only
        (``generate``'s prefill); returns the handle to ``remove()``."""
        def keep(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not store:
                store.append(args[0] if args else kwargs["hidden_states"])

        return self.hf_model.get_decoder().layers[0].register_forward_pre_hook(keep, with_kwargs=True)

    def pose_distribution(self, pose_hidden: Tensor, prompt_ids: Tensor | None = None,
                          decoder_inputs: Tensor | None = None) -> PoseDistribution:
        """The active head's distribution for ``<POSE>`` states (N, H). A head that reads the
        image also gets the tokens at the image placeholders of ``prompt_ids (N, P)`` from
        ``decoder_inputs (N, ≥P, C)`` (see :meth:`decoder_input_hook`)."""
        head = self.active_pose_head
        if not head.reads_image:
            return head(pose_hidden)
        if prompt_ids is None or decoder_inputs is None:
            raise ValueError("the pose head reads the image: give prompt_ids and decoder_inputs")
        p = prompt_ids.shape[1]
        tokens, mask = gather_image_tokens(decoder_inputs[:, :p], prompt_ids.to(decoder_inputs.device),
                                           self.image_token_id)  # fmt: skip
        return head(pose_hidden, tokens, mask)

    def _position_ids(self, attention_mask: Tensor, extra: dict[str, Tensor]) -> Tensor | None:
        """Position ids as ``generate`` builds them for this family (padding-invariant)."""
        mode = self.family.positions
        if mode == "mrope" and "image_grid_thw" in extra:
            return None  # the model derives 3-D M-RoPE positions from the mask and the grids
        positions = position_ids_from_mask(attention_mask)
        return positions + 1 if mode == "mask+1" else positions

    def _forward_tail(self, input_ids: Tensor, attention_mask: Tensor, extra: dict[str, Tensor],
                      keep: int) -> tuple[Tensor, Tensor]:
        """Logits and final hidden states (the LM head's input) of the last ``keep`` positions;
        ``extra``: the other model inputs (pixels, grids, token types), already full length."""
        captured: list[Tensor] = []
        hook = self.hf_model.get_output_embeddings().register_forward_hook(
            lambda _mod, args, _out: captured.append(args[0]))
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=self._position_ids(attention_mask, extra), logits_to_keep=keep,
            use_cache=False, **extra)
        try:
            logits = self.hf_model(**kwargs).logits
        finally:
            hook.remove()
        return logits, captured[-1]

    def model_inputs(self, mm_inputs: MultimodalInputs | None, pixel_values: Tensor | None,
                     completion_tokens: int = 0) -> dict[str, Tensor]:
        """Extra model kwargs on the policy's device/dtype: ``mm_inputs`` (any family), or a
        bare per-image ``pixel_values`` tensor (LLaVA-style families)."""
        if mm_inputs is not None and pixel_values is not None:
            raise ValueError("give mm_inputs or pixel_values, not both")
        dtype = self.hf_model.dtype
        if mm_inputs is not None:
            return mm_inputs.model_kwargs(completion_tokens, self.device, dtype)
        if pixel_values is not None:
            return {"pixel_values": pixel_values.to(self.device, dtype)}
        return {}

    def _check_pair(self, name: str, ids: Tensor, mask: Tensor, n: int | None) -> None:
        if ids.dim() != 2 or ids.shape != mask.shape:
            raise ValueError(f"{name}_ids and {name}_mask must both be (N, L); got "
                             f"{tuple(ids.shape)} and {tuple(mask.shape)}")
        if n is not None and ids.shape[0] != n:
            raise ValueError(f"{name}_ids has {ids.shape[0]} rows, expected {n}")

    def forward_logprobs(self, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                         completion_mask: Tensor, poses: Tensor | None = None,
                         pixel_values: Tensor | None = None, temperature: float = 1.0,
                         mm_inputs: MultimodalInputs | None = None) -> PolicyLogProbs:
        """Differentiable log-probs of given completions (and poses) for the learner.

        prompt_ids/mask (N, P) left-padded, completion_ids/mask (N, T), poses (N, D) or None,
        mm_inputs: the prompts' other model inputs (pixels, grids, token types; see
        :class:`~posrft.policy.mm_inputs.MultimodalInputs`), or ``pixel_values`` (M, C, H, W) for
        the prompts' images in order (LLaVA-style families only). Returns token log-probs
        (N, T) at ``temperature``, the pose distribution at each row's first ``<POSE>`` (a
        placeholder at the last attended position where there is none), log N(poses) (N,)
        zeroed where invalid, and the validity flags. A non-finite pose of a valid row raises
        ``ValueError`` naming the row; poses of invalid rows are ignored.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self._check_pair("prompt", prompt_ids, prompt_mask, None)
        n = prompt_ids.shape[0]
        self._check_pair("completion", completion_ids, completion_mask, n)
        device = self.device
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        completion_ids, completion_mask = completion_ids.to(device), completion_mask.to(device)
        for token_id in self.suppressed_token_ids:
            bad = ((completion_ids == token_id) & completion_mask.bool()).any(1).nonzero()
            if len(bad):
                raise ValueError(f"completion {bad[0].item()} contains token id {token_id}, which "
                                 f"the policy never generates (image placeholder)")
        t = completion_ids.shape[1]
        extra = self.model_inputs(mm_inputs, pixel_values, completion_tokens=t)
        inputs: list[Tensor] = []
        hook = self.decoder_input_hook(inputs) if self.active_pose_head.reads_image else None
        try:
            logits, hidden = self._forward_tail(torch.cat([prompt_ids, completion_ids], 1),
                                                torch.cat([prompt_mask, completion_mask], 1),
                                                extra, t + 1)
        finally:
            if hook is not None:
                hook.remove()
        logits = logits[:, :-1].float() / temperature
        if self.suppressed_token_ids:
            banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
            banned[self.suppressed_token_ids] = True
            logits = logits.masked_fill(banned, float("-inf"))
        token_logps = selective_log_softmax(logits, completion_ids)
        valid, index = first_token_index(completion_ids, completion_mask, self.pose_token_id)
        pose_hidden = hidden[:, 1:][torch.arange(n, device=device), index]
        dist = self.pose_distribution(pose_hidden, prompt_ids, inputs[0] if inputs else None)
        pose_logp = None if poses is None else self._pose_logp(dist, poses.to(device), valid)
        return PolicyLogProbs(token_logps, dist, pose_logp, valid)

    def forward(self, *args: Any, **kwargs: Any) -> PolicyLogProbs:
        """Same as :meth:`forward_logprobs`, so DDP/DeepSpeed wrappers can call the policy."""
        return self.forward_logprobs(*args, **kwargs)

    @staticmethod
    def _pose_logp(dist: PoseDistribution, poses: Tensor, valid: Tensor) -> Tensor:
        """log N(poses) ``(N,)`` for poses ``(N, D)``, ``(N, K)`` for ``(N, K, D)``; 0 where
        the row has no valid ``<POSE>``."""
        n, d = dist.mean.shape
        if poses.shape != (n, d) and not (poses.dim() == 3 and poses.shape[0] == n and poses.shape[2] == d):
            raise ValueError(f"poses must be (N, D) = {(n, d)} or (N, K, D), got {tuple(poses.shape)}")
        flat = poses.reshape(n, -1)
        bad = (~torch.isfinite(flat).all(1) & valid).nonzero()
        if len(bad):
            raise ValueError(f"poses[{bad[0].item()}] contains NaN/inf but completion "
                             f"{bad[0].item()} has a valid <POSE>")
        mask = valid.reshape(n, *([1] * (poses.dim() - 1)))
        mean = dist.mean.detach() if poses.dim() == 2 else dist.mean.detach()[:, None]
        safe = torch.where(mask, poses, mean).to(dist.mean.dtype)
        logp = dist.log_prob(safe)
        return torch.where(valid.reshape(n, *([1] * (logp.dim() - 1))), logp, torch.zeros_like(logp))

    # ----------------------------------------------------------------- rollouts
    def encode(self, prompts: Sequence[Any], images: Sequence[Any] | None = None) -> Any:
        """Prompts (+ images per prompt) → :class:`~posrft.policy.prompts.EncodedPrompts` as the
        family formats them."""
        from posrft.policy.prompts import encode_prompts

        return encode_prompts(self.processing, prompts, images, self.multimodal, self.family)

    def rollout(self, prompts: Sequence[Any], images: Sequence[Any] | None = None, **kwargs: Any):
        """Sample completions and poses; see :func:`posrft.policy.rollout.rollout`."""
        from posrft.policy.rollout import rollout

        return rollout(self, prompts, images, **kwargs)
