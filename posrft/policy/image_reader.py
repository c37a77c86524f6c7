"""The pose head's own view of the picture: attention pooling over a prompt's image tokens.

A pose head that reads only the ``<POSE>`` hidden state depends on the language model to carry
the picture's content from the image positions to ``<POSE>``. A pretrained MLLM does that; a
freshly composed one (DINOv2 + SmolLM2 with a new projector) did not learn it in the table's
SFT budget, although the image tokens hold the pose (docs/pretrained.md). With
``PosePolicyConfig.head_reads_image`` the head also attends to the image tokens the language
model receives (the first decoder layer's input at the image placeholders: the projector's
output, times the embedding scale in families that have one), queried by the ``<POSE>`` state,
so text still decides the answer and the picture reaches the pose directly:

    x̂_t = (x_t − m) ⊙ s                      per channel; m, s fitted on training pictures
    q   = q₀ + W_q ĥ                         ĥ: the head's normalised <POSE> state
    c   = MultiheadAttention(q, x̂, x̂)        over the row's own tokens; 0 for a row without any

The per-channel standardisation is what makes the tokens readable at all: a fresh projector
emits nearly the same vector for every picture (channel std 0.008 around means up to 0.27), and
a reader without it stayed at chance heading (benchmarks/image_readout.py).

The reader sees the tokens through a stop-gradient: the projector learns only from what the
language model does with its tokens. Through the standardisation the head's gradient reaches the
projector multiplied by 1/std (≈ 125 on the composed start); an SFT that let it through diverged
within 25 steps (gradient norm 1.5e9, text cross-entropy 10). The tokens the head was fitted on
should stay put, so train the head with the projector frozen (``train_projector: false``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def gather_image_tokens(states: Tensor, input_ids: Tensor, image_token_id: int) -> tuple[Tensor, Tensor]:
    """States ``(N, L, C)`` at the positions where ``input_ids (N, L) == image_token_id``, in
    order, padded: ``(tokens (N, T, C), mask (N, T))`` with T the largest count of any row and
    ``mask`` True for real tokens (rows may hold different numbers of images)."""
    if states.dim() != 3 or states.shape[:2] != input_ids.shape:
        raise ValueError(f"states must be (N, L, C) matching input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(states.shape)}")
    is_image = input_ids == image_token_id
    counts = is_image.sum(1)
    t = int(counts.max()) if len(counts) else 0
    # a stable sort puts each row's image positions first, in their original order
    order = torch.sort((~is_image).to(torch.int8), dim=1, stable=True).indices[:, :t]
    tokens = states.gather(1, order[..., None].expand(-1, -1, states.shape[-1]))
    mask = torch.arange(t, device=states.device)[None] < counts[:, None]
    return tokens * mask[..., None].to(tokens.dtype), mask


class ImageTokenReader(nn.Module):
    """``(query (N, H), tokens (N, T, C), mask (N, T)) → (N, C)``: attention pooling of
    standardised image tokens with a query from the ``<POSE>`` state (module docstring)."""

    def __init__(self, query_size: int, token_size: int, num_heads: int = 8) -> None:
        super().__init__()
        if token_size % num_heads:
            raise ValueError(f"image token size {token_size} is not divisible by {num_heads} heads")
        self.token_size = token_size
        # x̂ = (x − shift)·scale per channel; identity until fit_normalization
        self.register_buffer("token_shift", torch.zeros(token_size))
        self.register_buffer("token_scale", torch.ones(token_size))
        self.query = nn.Parameter(torch.randn(token_size) / token_size**0.5)
        self.query_from_pose = nn.Linear(query_size, token_size)
        nn.init.zeros_(self.query_from_pose.weight)  # starts as a learned-query pooling
        nn.init.zeros_(self.query_from_pose.bias)
        self.attention = nn.MultiheadAttention(token_size, num_heads, batch_first=True)

    @property
    def has_normalization(self) -> bool:
        return bool(self.token_shift.any()) or bool((self.token_scale != 1).any())

    @torch.no_grad()
    def fit_normalization(self, tokens: Tensor) -> None:
        """shift = mean, scale = 1 / std of each channel over sample tokens ``(M, C)``; a
        channel that is constant over the sample carries nothing and gets scale 0."""
        if tokens.dim() != 2 or tokens.shape[1] != self.token_size or tokens.shape[0] < 2:
            raise ValueError(f"need image tokens (M >= 2, {self.token_size}), got {tuple(tokens.shape)}")
        x = tokens.to(self.token_shift.dtype)
        std = x.std(0)
        if not torch.isfinite(std).all() or not (std > 0).any():
            raise ValueError(f"image tokens have no spread to standardise (max channel std {std.max().item()})")
        self.token_shift.copy_(x.mean(0))
        self.token_scale.copy_(torch.where(std > 0, 1.0 / std, torch.zeros_like(std)))

    def forward(self, query: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        n, t = mask.shape
        if tokens.shape != (n, t, self.token_size) or query.shape[0] != n:
            raise ValueError(f"expected query (N, H), tokens (N, T, {self.token_size}) and mask (N, T), "
                             f"got {tuple(query.shape)}, {tuple(tokens.shape)}, {tuple(mask.shape)}")
        if t == 0:
            return query.new_zeros(n, self.token_size)
        x = (tokens.detach().to(self.token_shift.dtype) - self.token_shift) * self.token_scale
        q = (self.query + self.query_from_pose(query))[:, None]
        empty = ~mask.any(1)
        # a row without tokens attends to its (zeroed) first slot and is then set to 0
        ignore = ~mask
        ignore[empty, 0] = False
        out = self.attention(q, x, x, key_padding_mask=ignore, need_weights=False)[0][:, 0]
        return torch.where(empty[:, None], torch.zeros_like(out), out)
