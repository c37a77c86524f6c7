"""Batched rollouts: G completions per prompt from one ``generate`` call, then one forward pass
over prompt + completion for token log-probs and the ``<POSE>`` hidden state, then pose samples.

The extra forward pass (what TRL does for its "old" log-probs) makes the stored log-probs the
exact same computation the learner repeats in :meth:`PosePolicy.forward_logprobs`, so the
importance ratio is 1 for unchanged weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from posrft.policy.logprobs import first_token_index, mask_after_eos
from posrft.policy.mm_inputs import MultimodalInputs
from posrft.policy.pose_head import PoseDistribution

if TYPE_CHECKING:
    from posrft.policy.model import PosePolicy


@dataclass
class RolloutBatch:
    """N = num_prompts · G samples; sample i belongs to prompt ``prompt_index[i]``.

    prompt_ids, prompt_mask       (N, P) left-padded prompt (chat template applied)
    completion_ids, completion_mask (N, T) mask 1 up to and including the first EOS, pad after
    token_logps                   (N, T) float32, log softmax(logits / temperature) of each token
                                  (None when sampled with ``score=False``)
    mm_inputs                     every other model input of the prompts (pixels, image grids,
                                  token types...), laid out per family (``MultimodalInputs``)
    image_counts                  (N,) images per sample
    pose_valid                    (N,) bool: ``<POSE>`` occurs before EOS
    pose_mean, pose_std, pose_log_std (N, D) head output at ``<POSE>`` (placeholder if invalid)
    pose                          (N, K, D) K poses sampled from the same N(μ, σ²) (nested pose
                                  group; μ when greedy; μ placeholders if invalid)
    pose_logp                     (N, K) log N(pose; μ, σ²) summed over D; 0 where invalid
    completion_texts              decoded completions (special tokens such as ``<POSE>`` kept,
                                  EOS and padding dropped)
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    token_logps: Tensor | None
    mm_inputs: MultimodalInputs
    image_counts: Tensor
    pose_valid: Tensor
    pose_mean: Tensor
    pose_std: Tensor
    pose_log_std: Tensor
    pose: Tensor
    pose_logp: Tensor
    completion_texts: list[str]
    prompt_index: Tensor
    num_generations: int
    temperature: float
    greedy: bool

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def pose_dist(self) -> PoseDistribution:
        return PoseDistribution(self.pose_mean, self.pose_log_std)

    @property
    def pixel_values(self) -> Tensor | None:
        return self.mm_inputs.get("pixel_values")

    def select(self, indices: Sequence[int] | Tensor) -> "RolloutBatch":
        """Rows ``indices`` (e.g. a learner micro-batch), model inputs sliced to match."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        updates: dict[str, Any] = {"mm_inputs": self.mm_inputs.select(idx),
                                   "completion_texts": [self.completion_texts[i] for i in idx.tolist()]}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in updates and isinstance(value, Tensor):
                updates[f.name] = value[idx.to(value.device)]
        return replace(self, **updates)


def _sampling_kwargs(greedy: bool, temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    # Explicit neutral values: generate() fills unset fields from the model's generation_config
    # (and top_k=50 by default), which would silently change the sampling distribution.
    neutral = dict(num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0)
    if greedy:
        return dict(do_sample=False, **neutral)
    return dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, typical_p=1.0,
                epsilon_cutoff=0.0, eta_cutoff=0.0, **neutral)


def _decode(policy: "PosePolicy", ids: Tensor, mask: Tensor) -> list[str]:
    eos = set(policy.eos_token_ids)
    rows = [[t for t, m in zip(r.tolist(), mr.tolist()) if m and t not in eos] for r, mr in zip(ids, mask)]
    return policy.tokenizer.batch_decode(rows, skip_special_tokens=False)


@torch.no_grad()
def rollout(policy: "PosePolicy", prompts: Sequence[Any], images: Sequence[Any] | None = None, *,
            num_generations: int = 1, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
            max_new_tokens: int = 64, greedy: bool = False, seed: int | None = None,
            num_pose_samples: int = 1, score: bool = True) -> RolloutBatch:
    """Sample ``num_generations`` completions + poses for each prompt in one ``generate`` call,
    and ``num_pose_samples`` poses per completion from its Gaussian (the language model runs once
    per completion, so extra pose samples cost only the head's sampling).

    prompts: strings or chat-message lists; images: one entry per prompt (None / PIL image /
    list). ``greedy`` decodes the text greedily and returns pose = μ (evaluation mode); the
    recorded log-probs still use ``temperature``. ``seed`` makes text and pose sampling
    reproducible without touching the global RNG; ``top_k=0`` and ``top_p=1`` mean no
    truncation. A completion without ``<POSE>`` never raises: it gets ``pose_valid=False`` and
    finite placeholders.

    ``score=False`` skips the scoring forward pass (``token_logps`` is then None): the pose
    head reads the ``<POSE>`` hidden state that ``generate`` computed anyway (captured at the LM
    head's input when ``<POSE>`` is fed back). A learner that updates once, on-policy, takes its
    "old" log-probs from its own first forward pass instead, as TRL does.
    """
    if not prompts:
        raise ValueError("rollout needs at least one prompt")
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    if num_pose_samples < 1 or (greedy and num_pose_samples != 1):
        raise ValueError(f"num_pose_samples must be >= 1 (and 1 when greedy), got {num_pose_samples}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    g = num_generations
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"images has {len(images)} entries but there are {len(prompts)} prompts")
    # each prompt is encoded once, then its rows (and images) repeated for the G samples
    enc = policy.encode(list(prompts), None if images is None else list(images))
    device = policy.device
    prompt_ids = enc.input_ids.repeat_interleave(g, 0).to(device)
    prompt_mask = enc.attention_mask.repeat_interleave(g, 0).to(device)
    mm_inputs = enc.mm_inputs.repeat_interleave(g).to(device)
    image_counts = enc.image_counts.repeat_interleave(g).to(device)
    inputs: dict[str, Any] = {"input_ids": prompt_ids, "attention_mask": prompt_mask,
                              **policy.model_inputs(mm_inputs, None)}

    rng_devices = [device] if device.type == "cuda" else []
    captured: list[Tensor] = []  # the LM head's input per generate step (score=False)
    decoder_inputs: list[Tensor] = []  # the prefill's decoder input, for a head that reads the image
    hooks = [] if score else [policy.hf_model.get_output_embeddings().register_forward_hook(
        lambda _mod, args, _out: captured.append(args[0][:, -1]))]
    if not score and policy.active_pose_head.reads_image:
        hooks.append(policy.decoder_input_hook(decoder_inputs))
    try:
        with torch.random.fork_rng(devices=rng_devices):
            if seed is not None:
                torch.manual_seed(seed)
            sequences = policy.hf_model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=policy.pad_token_id,
                eos_token_id=policy.eos_token_ids, suppress_tokens=policy.suppressed_token_ids or None,
                use_cache=True, **_sampling_kwargs(greedy, temperature, top_p, top_k))
    finally:
        for hook in hooks:
            hook.remove()
    completion_ids, completion_mask = mask_after_eos(
        sequences[:, prompt_ids.shape[1]:], torch.tensor(policy.eos_token_ids), policy.pad_token_id)

    if score:
        out = policy.forward_logprobs(prompt_ids, prompt_mask, completion_ids, completion_mask,
                                      mm_inputs=mm_inputs, temperature=temperature)
        token_logps, dist, valid = out.token_logps, out.pose_dist, out.pose_valid
    else:
        token_logps = None
        dist, valid = _pose_from_generate(policy, captured, prompt_ids, prompt_mask, completion_ids,
                                          completion_mask, mm_inputs, temperature,
                                          decoder_inputs[0] if decoder_inputs else None)
    k = num_pose_samples
    if greedy:
        pose = dist.mean[:, None]
    else:
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        noise = torch.randn((k, *dist.mean.shape), generator=generator, dtype=dist.mean.dtype,
                            device=device).transpose(0, 1)  # (N, K, D); sample 0 as with K = 1
        pose = dist.mean[:, None] + dist.std[:, None] * noise
    pose = torch.where(valid[:, None, None], pose, dist.mean[:, None])
    pose_logp = torch.stack([dist.log_prob(pose[:, j]) for j in range(pose.shape[1])], 1)
    pose_logp = torch.where(valid[:, None], pose_logp, torch.zeros_like(pose_logp))
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
        completion_mask=completion_mask, token_logps=token_logps,
        mm_inputs=mm_inputs, image_counts=image_counts,
        pose_valid=valid, pose_mean=dist.mean, pose_std=dist.std,
        pose_log_std=dist.log_std, pose=pose, pose_logp=pose_logp,
        completion_texts=_decode(policy, completion_ids, completion_mask),
        prompt_index=torch.arange(len(prompts), device=device).repeat_interleave(g),
        num_generations=g, temperature=float(temperature), greedy=greedy,
    )


def _pose_from_generate(policy: "PosePolicy", captured: list[Tensor], prompt_ids: Tensor,
                        prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor,
                        mm_inputs: Any, temperature: float,
                        decoder_inputs: Tensor | None = None) -> tuple[PoseDistribution, Tensor]:
    """The pose distribution at each completion's first ``<POSE>`` from the hidden states
    ``generate`` computed: call 0 of the LM head saw the prompt, call ``j + 1`` the completion's
    token ``j``; ``decoder_inputs`` (N, P, C): the prefill's decoder input, for a head that
    reads the image. A ``<POSE>`` generated at the very last step was never fed back; those
    rows (rare) get one scoring forward pass."""
    valid, index = first_token_index(completion_ids, completion_mask, policy.pose_token_id)
    n = completion_ids.shape[0]
    steps = torch.stack(captured[1:], 1) if len(captured) > 1 else None  # (N, steps, H)
    have = valid & (index + 1 < len(captured))
    hidden = torch.zeros(n, policy.hidden_size, dtype=captured[0].dtype, device=captured[0].device)
    if steps is not None and have.any():
        rows = have.nonzero()[:, 0]
        hidden[rows] = steps[rows, index[rows]]
    dist = policy.pose_distribution(hidden, prompt_ids, decoder_inputs)
    missing = (valid & ~have).nonzero()[:, 0]
    if len(missing):
        out = policy.forward_logprobs(prompt_ids[missing], prompt_mask[missing],
                                      completion_ids[missing], completion_mask[missing],
                                      mm_inputs=mm_inputs.select(missing), temperature=temperature)
        mean, log_std = dist.mean.clone(), dist.log_std.clone()
        mean[missing], log_std[missing] = out.pose_dist.mean, out.pose_dist.log_std
        dist = PoseDistribution(mean, log_std)
    return dist, valid
