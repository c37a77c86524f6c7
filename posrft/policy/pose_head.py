"""Gaussian pose head: the continuous part π(p | q, a) of the hybrid policy.

The head reads the language model's last hidden state h at the ``<POSE>`` token and predicts a
diagonal Gaussian over the pose vector p ∈ R^D, D = 6·J (one 6D rotation per joint, global
orientation first):

    p ~ N(μθ(h), diag σθ(h)²)

6D convention: ``rot6d = R[..., :, :2].reshape(..., 6)`` (the first two columns of the rotation
matrix, row-major), so the identity rotation is ``[1, 0, 0, 1, 0, 0]``. The head does not
orthonormalise; the body layer maps 6D → rotation (Gram–Schmidt) downstream.

log σ is squashed smoothly into [log_std_min, log_std_max]:

    log σ = lo + (hi − lo) · sigmoid(z)

A smooth clamp rather than ``clamp``: a hard clamp has zero gradient once z leaves the range, so
a head pushed to the boundary by one bad batch can never come back; the sigmoid keeps a (small)
gradient everywhere and is exactly inside the range for any finite z.

For RL the exploration noise can be set apart from what SFT learned (:class:`SigmaSettings`):
``learned`` (the head's σ(h)), ``fixed`` (one constant σ, no σ gradient) or
``state_independent`` (one learned σ per dimension, shared by every input); any of them can be
truly clamped to ``[sigma_min, sigma_max]`` (a hard clamp on log σ, unlike the sigmoid range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from posrft.policy.image_reader import ImageTokenReader

IDENTITY_6D: tuple[float, ...] = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PoseDistribution:
    """Diagonal Gaussian over N pose vectors: ``mean`` and ``log_std`` are both (N, D).

    Sums over D by default; pass ``per_dim=True`` to get the (N, D) terms (HyGRPO clips the
    per-dimension density ratio like a token ratio).
    """

    mean: Tensor
    log_std: Tensor

    def __post_init__(self) -> None:
        if self.mean.shape != self.log_std.shape or self.mean.dim() != 2:
            raise ValueError(
                f"PoseDistribution expects mean and log_std of equal shape (N, D); got "
                f"{tuple(self.mean.shape)} and {tuple(self.log_std.shape)}"
            )

    @property
    def std(self) -> Tensor:
        """σ = exp(log σ), shape (N, D)."""
        return self.log_std.exp()

    @property
    def dim(self) -> int:
        """D, the pose dimension."""
        return self.mean.shape[-1]

    def __len__(self) -> int:
        return self.mean.shape[0]

    def __getitem__(self, index) -> "PoseDistribution":
        mean, log_std = self.mean[index], self.log_std[index]
        if mean.dim() == 1:  # an integer index: keep the batch axis
            mean, log_std = mean.unsqueeze(0), log_std.unsqueeze(0)
        return PoseDistribution(mean, log_std)

    def detach(self) -> "PoseDistribution":
        return PoseDistribution(self.mean.detach(), self.log_std.detach())

    def _noise(self, generator: torch.Generator | None) -> Tensor:
        return torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                           device=self.mean.device)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample μ + σ·ε, ε ~ N(0, I); differentiable in μ and σ. (N, D)."""
        return self.mean + self.std * self._noise(generator)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Sample without gradient. (N, D)."""
        with torch.no_grad():
            return self.rsample(generator)

    def _check_pose(self, pose: Tensor) -> None:
        n, d = self.mean.shape
        if pose.shape != (n, d) and not (pose.dim() == 3 and pose.shape[0] == n and pose.shape[2] == d):
            raise ValueError(f"pose must have shape {(n, d)} or ({n}, K, {d}), got {tuple(pose.shape)}")

    def log_prob(self, pose: Tensor, per_dim: bool = False) -> Tensor:
        """log N(p; μ, σ²) = −(p−μ)²/(2σ²) − log σ − ½ log 2π per dim. ``pose`` (N, D) → (N,)
        summed or (N, D); ``pose`` (N, K, D), K samples per row → (N, K) or (N, K, D)."""
        self._check_pose(pose)
        mean, std, log_std = self.mean, self.std, self.log_std
        if pose.dim() == 3:
            mean, std, log_std = mean[:, None], std[:, None], log_std[:, None]
        z = (pose - mean) / std
        terms = -0.5 * z * z - log_std - _LOG_SQRT_2PI
        return terms if per_dim else terms.sum(-1)

    def entropy(self, per_dim: bool = False) -> Tensor:
        """H = ½ + ½ log 2π + log σ per dim; (N,) summed or (N, D)."""
        terms = 0.5 + _LOG_SQRT_2PI + self.log_std
        return terms if per_dim else terms.sum(-1)

    def kl(self, other: "PoseDistribution", per_dim: bool = False) -> Tensor:
        """KL(self ‖ other) = log(σ₂/σ₁) + (σ₁² + (μ₁−μ₂)²)/(2σ₂²) − ½ per dim;
        (N,) summed or (N, D)."""
        if other.mean.shape != self.mean.shape:
            raise ValueError(
                f"kl needs distributions of equal shape; got {tuple(self.mean.shape)} and "
                f"{tuple(other.mean.shape)}"
            )
        var_ratio = torch.exp(2.0 * (self.log_std - other.log_std))
        mean_term = ((self.mean - other.mean) / other.std) ** 2
        terms = 0.5 * (var_ratio + mean_term - 1.0) - (self.log_std - other.log_std)
        return terms if per_dim else terms.sum(-1)


SIGMA_MODES = ("learned", "fixed", "state_independent")


@dataclass(frozen=True)
class SigmaSettings:
    """How the head's σ is produced (see the module docstring).

    mode: ``"learned"`` | ``"fixed"`` | ``"state_independent"``.
    value: σ of ``fixed``; the initial σ of ``state_independent`` (required for both).
    min / max: a hard clamp of σ (``None``: no bound).
    """

    mode: str = "learned"
    value: float | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in SIGMA_MODES:
            raise ValueError(f"pose_sigma must be one of {SIGMA_MODES}, got {self.mode!r}")
        if self.mode != "learned" and not (self.value is not None and self.value > 0):
            raise ValueError(f"pose_sigma={self.mode!r} needs pose_sigma_value > 0, got {self.value}")
        for name in ("min", "max"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"pose_sigma_{name} must be > 0, got {v}")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"pose_sigma_min ({self.min}) must be < pose_sigma_max ({self.max})")

    @property
    def is_default(self) -> bool:
        return self == SigmaSettings()


class GaussianPoseHead(nn.Module):
    """MLP h → (μ, log σ); ``forward`` maps (N, H) hidden states to a :class:`PoseDistribution`.

    Architecture: Linear(H, K) → GELU → Linear(K, K) → GELU → {Linear(K, D) for μ,
    Linear(K, D) for z}, log σ = lo + (hi − lo)·sigmoid(z). The output layers start with small
    weights and biases set so that μ ≈ identity rotation per joint and log σ ≈ ``init_log_std``:
    an untrained head proposes the rest pose with moderate spread.

    Defaults: log σ ∈ [−5, 0] i.e. σ ∈ [0.0067, 1]. 6D components are unit-vector entries, so σ
    above 1 is noise wider than the whole space, while σ below ~0.007 (≈0.4°) is finer than any
    meaningful pose difference and only makes the density ratio needlessly sharp. The start value
    σ = e^−2 ≈ 0.135 (~8° per column) is roughly the error of a reasonable pose regressor, which
    SFT then shrinks.

    ``image_token_size``: the head also reads the prompt's image tokens (an
    :class:`~posrft.policy.image_reader.ImageTokenReader` queried by h) and the trunk takes
    [h, pooled tokens]; ``forward`` then needs the tokens.
    """

    def __init__(self, input_size: int, num_joints: int = 22, hidden_size: int | None = None,
                 log_std_min: float = -5.0, log_std_max: float = 0.0,
                 init_log_std: float = -2.0, init_scale: float = 1e-3,
                 image_token_size: int | None = None) -> None:
        super().__init__()
        if num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {num_joints}")
        if not log_std_min < init_log_std < log_std_max:
            raise ValueError(
                f"need log_std_min < init_log_std < log_std_max, got {log_std_min}, "
                f"{init_log_std}, {log_std_max}"
            )
        hidden = hidden_size or input_size
        self.num_joints = num_joints
        self.pose_dim = 6 * num_joints
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        # h ← (h − shift)·scale before the trunk; identity until fit_input_normalization
        self.register_buffer("input_shift", torch.zeros(input_size))
        self.register_buffer("input_scale", torch.ones(()))
        self.image_reader = None if image_token_size is None else ImageTokenReader(input_size, image_token_size)
        trunk_in = input_size + (image_token_size or 0)
        self.trunk = nn.Sequential(nn.Linear(trunk_in, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden), nn.GELU())
        self.mean_out = nn.Linear(hidden, self.pose_dim)
        self.log_std_out = nn.Linear(hidden, self.pose_dim)
        with torch.no_grad():
            nn.init.normal_(self.mean_out.weight, std=init_scale)
            self.mean_out.bias.copy_(torch.tensor(IDENTITY_6D).repeat(num_joints))
            nn.init.normal_(self.log_std_out.weight, std=init_scale)
            frac = (init_log_std - log_std_min) / (log_std_max - log_std_min)
            self.log_std_out.bias.fill_(math.log(frac / (1.0 - frac)))

        self.sigma = SigmaSettings()
        self.free_log_std: nn.Parameter | None = None
        # True while σ is fitted to a detached μ (SFT pose_loss l2_nll): σ(h) then reads the
        # trunk's features through a stop-gradient, so the trunk and the backbone below it are
        # trained by μ's loss alone. Runtime only, not saved.
        self.sigma_stops_gradient = False

    #: state keys a head saved before they existed may lack (they load as the identity)
    optional_state_keys = ("input_shift", "input_scale")

    @property
    def has_input_normalization(self) -> bool:
        return bool(self.input_shift.any()) or bool(self.input_scale != 1)

    @torch.no_grad()
    def fit_input_normalization(self, hidden: Tensor) -> None:
        """Centre and scale the head's input from sample hidden states (M, H): shift = their
        mean, scale = 1 / RMS of the centred rows (one scalar, so the features keep their
        relative scales). A data-dependent initialisation: a pretrained LM's hidden state puts
        most of its norm in a few dimensions that are the same for every prompt (SmolLM2 at
        ``<POSE>``: 96 % of the second moment), which the MLP would otherwise have to learn
        around; the buffers are saved with the head and stay fixed while training. (The image
        reader's own standardisation: ``image_reader.fit_normalization``.)"""
        if hidden.dim() != 2 or hidden.shape[1] != self.input_shift.shape[0] or hidden.shape[0] < 2:
            raise ValueError(f"need hidden states (M >= 2, {self.input_shift.shape[0]}), got {tuple(hidden.shape)}")
        h = hidden.to(self.input_shift.dtype)
        shift = h.mean(0)
        rms = (h - shift).pow(2).mean().sqrt()
        if not torch.isfinite(rms) or rms <= 0:
            raise ValueError(f"hidden states have no spread to normalise (RMS {rms.item()})")
        self.input_shift.copy_(shift)
        self.input_scale.fill_(1.0 / rms.item())

    def set_sigma(self, settings: SigmaSettings) -> None:
        """Switch how σ is produced; ``state_independent`` adds the parameter ``free_log_std``
        (D,) initialised to log ``settings.value`` (or keeps the current one)."""
        self.sigma = settings
        if settings.mode == "state_independent":
            if self.free_log_std is None:
                w = self.mean_out.weight
                self.free_log_std = nn.Parameter(
                    torch.full((self.pose_dim,), math.log(settings.value), dtype=w.dtype, device=w.device))
        else:
            self.free_log_std = None

    @property
    def reads_image(self) -> bool:
        return self.image_reader is not None

    def forward(self, hidden: Tensor, image_tokens: Tensor | None = None,
                image_mask: Tensor | None = None) -> PoseDistribution:
        """hidden (N, H) → PoseDistribution with mean/log_std (N, 6·num_joints), in head dtype.
        A head that reads the image also takes ``image_tokens (N, T, C)`` and ``image_mask
        (N, T)`` (True for real tokens; see :func:`~posrft.policy.image_reader.gather_image_tokens`)."""
        if hidden.dim() != 2:
            raise ValueError(f"GaussianPoseHead expects hidden states (N, H), got {tuple(hidden.shape)}")
        if self.reads_image != (image_tokens is not None) or (image_tokens is None) != (image_mask is None):
            raise ValueError("this pose head " + ("reads the image tokens: pass image_tokens and image_mask"
                             if self.reads_image else "does not read image tokens; pass none"))
        dtype = self.mean_out.weight.dtype
        # Under bf16 autocast the head still runs in its own dtype: a fixed σ of 0.05 divides
        # μ's error by σ² in every log-density, and bf16 rounds μ ≈ 1 by ~0.004 (8 % of σ).
        with torch.autocast(hidden.device.type, enabled=False):
            return self._distribution(hidden.to(dtype), None if image_tokens is None else image_tokens.to(dtype),
                                      image_mask)  # fmt: skip

    def _distribution(self, hidden: Tensor, image_tokens: Tensor | None, image_mask: Tensor | None) -> PoseDistribution:
        h = (hidden - self.input_shift) * self.input_scale
        if self.image_reader is not None:
            h = torch.cat([h, self.image_reader(h, image_tokens, image_mask)], -1)
        features = self.trunk(h)
        mean = self.mean_out(features)
        mode = self.sigma.mode
        if mode == "fixed":
            log_std = torch.full_like(mean, math.log(self.sigma.value))
        elif mode == "state_independent":
            log_std = self.free_log_std.expand_as(mean)
        else:
            span = self.log_std_max - self.log_std_min
            z = self.log_std_out(features.detach() if self.sigma_stops_gradient else features)
            log_std = self.log_std_min + span * torch.sigmoid(z)
        if self.sigma.min is not None or self.sigma.max is not None:
            lo = None if self.sigma.min is None else math.log(self.sigma.min)
            hi = None if self.sigma.max is None else math.log(self.sigma.max)
            log_std = log_std.clamp(lo, hi)
        return PoseDistribution(mean, log_std)
