"""Learnable appearance of the primitives: colour and opacity per primitive, person and frame.

For primitive ``i`` of person ``p`` in frame ``t``:

    [c_logit, o_logit] = prior_i + MLP(f_i + e_p)                   (f_i, e_p learnable)
    c   = (1 - beta) sigmoid(c_logit) + beta (c_near + (c_far - c_near) z~)   beta = sigmoid(w)
    with the modulator (NFM, optional): (dc, do, g) = Head(GRU_t([x_i(t), v_i(t)]))
    c   = sigmoid(logit(c) + dc),   o = sigmoid(o_logit + do) * sigmoid(g)
    without it:                     o = sigmoid(o_logit)

``z~`` in [0, 1] is the primitive's depth normalised over the frame (near = 0), ``x`` and
``v`` its camera-frame position and velocity normalised by the skeleton size.  ``prior_i`` is a
fixed readable colouring (a rainbow over bones, light grey joints, opacity 0.9), and the MLP and
NFM heads start near zero, so an untrained (or frozen) renderer already draws a clean skeleton.
The GRU runs over the rendered frames, independently per primitive and person.
"""

from __future__ import annotations

import colorsys

import torch
from torch import nn

from posrft.render.primitives import PrimitiveLayout


def prior_colors(layout: PrimitiveLayout) -> torch.Tensor:
    """``(N, 3)`` default colours: bone ``k`` of ``K`` gets hue ``k / K``, joints light grey."""
    n_bones = max(len(layout.bones), 1)
    rgb = torch.full((layout.num_primitives, 3), 0.92)
    for i, k in enumerate(layout.bone.tolist()):
        if k >= 0:
            rgb[i] = torch.tensor(colorsys.hsv_to_rgb(k / n_bones, 0.85, 0.95))
    return rgb


def _logit(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1.0 - eps)
    return torch.log(x) - torch.log1p(-x)


def _small_head(in_dim: int, out_dim: int, bias: torch.Tensor | None = None) -> nn.Linear:
    head = nn.Linear(in_dim, out_dim)
    nn.init.normal_(head.weight, std=1e-2)
    with torch.no_grad():
        head.bias.copy_(bias if bias is not None else torch.zeros(out_dim))
    return head


class NeuralFeatureModulator(nn.Module):
    """GRU over time per primitive on ``[position, velocity]`` -> ``(dc (3), do (1), gate (1))``."""

    def __init__(self, hidden: int = 16, gate_init: float = 4.0):
        super().__init__()
        self.gru = nn.GRU(input_size=6, hidden_size=hidden, batch_first=True)
        self.head = _small_head(hidden, 5, torch.tensor([0.0, 0.0, 0.0, 0.0, gate_init]))

    def forward(self, pos: torch.Tensor, vel: torch.Tensor):
        """``pos``, ``vel``: ``(B, P, T, N, 3)`` -> ``dc (B, P, T, N, 3)``, ``do``, ``gate``
        (both ``(B, P, T, N)``)."""
        B, P, T, N, _ = pos.shape
        x = torch.cat([pos, vel], dim=-1).permute(0, 1, 3, 2, 4).reshape(B * P * N, T, 6)
        h, _ = self.gru(x)
        out = self.head(h).reshape(B, P, N, T, 5).permute(0, 1, 3, 2, 4)
        return out[..., :3], out[..., 3], torch.sigmoid(out[..., 4])


class Appearance(nn.Module):
    """Colour and opacity of every primitive (see the module docstring for the equations)."""

    def __init__(
        self,
        layout: PrimitiveLayout,
        *,
        feature_dim: int = 16,
        hidden_dim: int = 32,
        max_people: int = 2,
        nfm: bool = True,
        nfm_hidden: int = 16,
        opacity_init: float = 0.9,
        depth_mix_init: float = -1.0,
        near_color: tuple[float, float, float] = (1.0, 0.9, 0.6),
        far_color: tuple[float, float, float] = (0.15, 0.25, 0.8),
    ):
        super().__init__()
        n = layout.num_primitives
        self.features = nn.Parameter(0.1 * torch.randn(n, feature_dim))
        self.person_embed = nn.Parameter(torch.zeros(max_people, feature_dim))
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.SiLU(), _small_head(hidden_dim, 4)
        )
        prior = torch.cat(
            [_logit(prior_colors(layout)), _logit(torch.full((n, 1), opacity_init))], dim=-1
        )
        self.register_buffer("prior_logit", prior)
        self.depth_mix = nn.Parameter(torch.tensor(float(depth_mix_init)))
        self.register_buffer("near_color", torch.tensor(near_color))
        self.register_buffer("far_color", torch.tensor(far_color))
        self.nfm = NeuralFeatureModulator(nfm_hidden) if nfm else None

    def forward(self, depth01: torch.Tensor, pos: torch.Tensor, vel: torch.Tensor):
        """Colours ``(B, P, T, N, 3)`` and opacities ``(B, P, T, N)``.

        ``depth01`` is ``(B, P, T, N)`` in [0, 1]; ``pos``/``vel`` are ``(B, P, T, N, 3)``.
        """
        P = depth01.shape[1]
        if P > self.person_embed.shape[0]:
            raise ValueError(
                f"{P} people per frame; this renderer supports at most {self.person_embed.shape[0]}"
            )
        base = self.prior_logit + self.mlp(self.features + self.person_embed[:P, None])  # (P, N, 4)
        base = base[None, :, None]  # (1, P, 1, N, 4)
        beta = torch.sigmoid(self.depth_mix)
        depth_rgb = self.near_color + (self.far_color - self.near_color) * depth01[..., None]
        rgb = (1.0 - beta) * torch.sigmoid(base[..., :3]) + beta * depth_rgb
        o_logit = base[..., 3]
        if self.nfm is None:
            return rgb, torch.sigmoid(o_logit).expand(depth01.shape)
        dc, do, gate = self.nfm(pos, vel)
        return torch.sigmoid(_logit(rgb) + dc), torch.sigmoid(o_logit + do) * gate
