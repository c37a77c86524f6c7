"""Gaussian pose head and PoseDistribution, checked against torch.distributions and roma."""

from __future__ import annotations

import pytest
import roma
import torch
from torch.distributions import Independent, Normal, kl_divergence

from posrft.policy.pose_head import IDENTITY_6D, GaussianPoseHead, PoseDistribution


def _dist(seed: int, n: int = 5, d: int = 12) -> PoseDistribution:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    log_std = torch.rand(n, d, generator=g, dtype=torch.float64) * 3 - 2
    return PoseDistribution(mean, log_std)


def _torch(dist: PoseDistribution) -> Normal:
    return Normal(dist.mean, dist.std)


def test_log_prob_matches_torch_normal():
    dist = _dist(0)
    pose = torch.randn(dist.mean.shape, dtype=torch.float64)
    ref = _torch(dist)
    torch.testing.assert_close(dist.log_prob(pose, per_dim=True), ref.log_prob(pose))
    torch.testing.assert_close(dist.log_prob(pose), Independent(ref, 1).log_prob(pose))


def test_entropy_matches_torch_normal():
    dist = _dist(1)
    ref = _torch(dist)
    torch.testing.assert_close(dist.entropy(per_dim=True), ref.entropy())
    torch.testing.assert_close(dist.entropy(), Independent(ref, 1).entropy())


def test_kl_matches_torch_kl_divergence():
    p, q = _dist(2), _dist(3)
    torch.testing.assert_close(p.kl(q, per_dim=True), kl_divergence(_torch(p), _torch(q)))
    torch.testing.assert_close(p.kl(q), kl_divergence(Independent(_torch(p), 1), Independent(_torch(q), 1)))
    assert torch.all(p.kl(p) == 0)


def test_rsample_reparameterised_and_seeded():
    dist = _dist(4)
    mean = dist.mean.clone().requires_grad_(True)
    log_std = dist.log_std.clone().requires_grad_(True)
    d = PoseDistribution(mean, log_std)
    s1 = d.rsample(torch.Generator().manual_seed(7))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7), dtype=mean.dtype)
    torch.testing.assert_close(s1, mean + log_std.exp() * eps)
    s1.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones_like(mean))
    torch.testing.assert_close(log_std.grad, log_std.detach().exp() * eps)
    s2 = d.sample(torch.Generator().manual_seed(7))
    assert not s2.requires_grad and torch.equal(s2, s1.detach())


def test_sample_moments():
    mean = torch.tensor([[0.5, -1.0, 2.0]])
    log_std = torch.tensor([[-1.0, 0.0, -2.0]])
    draws = PoseDistribution(mean.expand(20000, 3), log_std.expand(20000, 3)).sample(
        torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), mean[0], atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), log_std[0].exp(), atol=0.02, rtol=0.02)


def test_indexing_and_shape_errors():
    dist = _dist(5)
    assert dist[1].mean.shape == (1, 12) and len(dist[1:3]) == 2
    with pytest.raises(ValueError, match="pose must have shape"):
        dist.log_prob(torch.zeros(5, 11, dtype=torch.float64))
    with pytest.raises(ValueError, match="equal shape"):
        PoseDistribution(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="kl needs"):
        dist.kl(_dist(6, n=4))


def test_identity_6d_convention_is_identity_rotation():
    # rot6d = R[..., :, :2].reshape(6): Gram-Schmidt of the two columns must give back I.
    eye = torch.eye(3)
    assert tuple(eye[:, :2].reshape(6).tolist()) == IDENTITY_6D
    rot = roma.special_gramschmidt(torch.tensor(IDENTITY_6D).reshape(3, 2))
    torch.testing.assert_close(rot, eye)


def test_head_initialisation_near_identity_and_init_log_std():
    torch.manual_seed(0)
    head = GaussianPoseHead(input_size=32, num_joints=22, hidden_size=64, init_log_std=-2.0)
    dist = head(torch.randn(16, 32))
    assert dist.mean.shape == (16, 132) and head.pose_dim == 132
    identity = torch.tensor(IDENTITY_6D).repeat(22)
    assert (dist.mean - identity).abs().max() < 0.05
    assert (dist.log_std + 2.0).abs().max() < 0.05


@pytest.mark.parametrize("scale", [1e4, -1e4, 1e30])
def test_log_std_stays_in_range_for_extreme_inputs(scale):
    torch.manual_seed(1)
    head = GaussianPoseHead(input_size=8, num_joints=3, log_std_min=-4.0, log_std_max=0.5)
    with torch.no_grad():
        head.log_std_out.weight.normal_(std=10.0)
    dist = head(torch.randn(32, 8) * scale)
    assert torch.isfinite(dist.log_std).all()
    assert dist.log_std.min() >= -4.0 and dist.log_std.max() <= 0.5


def test_smooth_clamp_keeps_gradient_beyond_the_range():
    head = GaussianPoseHead(input_size=4, num_joints=1, log_std_min=-5.0, log_std_max=0.0)
    with torch.no_grad():
        head.log_std_out.bias.fill_(8.0)  # pre-activation far above the range
    dist = head(torch.randn(2, 4))
    assert dist.log_std.max() < 0.0  # strictly inside: sigmoid(8) < 1
    dist.log_std.sum().backward()
    # a hard clamp would give exactly zero gradient here and the head could never come back
    assert (head.log_std_out.bias.grad > 0).all()


def test_head_gradients_match_finite_differences():
    torch.manual_seed(2)
    head = GaussianPoseHead(input_size=6, num_joints=1, hidden_size=8, init_scale=0.3).double()
    pose = torch.randn(3, 6, dtype=torch.float64)
    hidden = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: head(h).log_prob(pose), (hidden,))


def test_head_argument_errors():
    with pytest.raises(ValueError, match="num_joints"):
        GaussianPoseHead(8, num_joints=0)
    with pytest.raises(ValueError, match="init_log_std"):
        GaussianPoseHead(8, log_std_min=-1.0, log_std_max=0.0, init_log_std=-3.0)
    with pytest.raises(ValueError, match=r"\(N, H\)"):
        GaussianPoseHead(8)(torch.zeros(8))
    assert GaussianPoseHead(8, num_joints=24).pose_dim == 144


def test_head_runs_in_its_own_dtype_under_bf16_autocast():
    """Mixed precision leaves the Gaussian head fp32: μ, σ and a log-density with σ = 0.05 are
    what the head gives without autocast, while a bf16 head would round μ by ~1e-3."""
    torch.manual_seed(0)
    head = GaussianPoseHead(input_size=32, num_joints=4, hidden_size=64)
    hidden = torch.randn(5, 32)
    x = torch.randn(5, 24) * 0.05
    ref = head(hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden_bf16 = torch.nn.functional.linear(hidden, torch.eye(32))  # a bf16 trunk output
        assert hidden_bf16.dtype == torch.bfloat16
        out = head(hidden_bf16)
    assert out.mean.dtype == torch.float32 and out.log_std.dtype == torch.float32
    torch.testing.assert_close(out.mean, head(hidden_bf16.float()).mean)
    assert (out.mean - ref.mean).abs().max() < 5e-2  # only the bf16 input's own rounding
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = head.mean_out(head.trunk(hidden))
    assert rounded.dtype == torch.bfloat16 and (rounded.float() - ref.mean).abs().max() > 1e-4
    torch.testing.assert_close(out.log_prob(x), head(hidden_bf16.float()).log_prob(x))


def test_input_normalisation_standardises_and_old_heads_load_as_identity(tmp_path):
    from safetensors.torch import load_file, save_file

    from posrft.policy.checkpoint import load_module, save_module

    torch.manual_seed(0)
    head = GaussianPoseHead(input_size=8, num_joints=2, hidden_size=16)
    assert not head.has_input_normalization
    h = torch.randn(64, 8) * 0.3 + torch.tensor([40.0, 12, 0, 0, 0, 0, 0, 0])  # a constant offset
    before = head(h).mean
    head.fit_input_normalization(h)
    z = (h - head.input_shift) * head.input_scale
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.pow(2).mean(), torch.tensor(1.0))
    assert head.has_input_normalization and not torch.allclose(head(h).mean, before)
    # saved with the head, loaded back exactly
    save_module(head, tmp_path / "new.safetensors")
    fresh = GaussianPoseHead(input_size=8, num_joints=2, hidden_size=16)
    load_module(fresh, tmp_path / "new.safetensors")
    torch.testing.assert_close(fresh(h).mean, head(h).mean)
    # a head saved before the buffers existed loads as the identity
    old = {k: v for k, v in load_file(str(tmp_path / "new.safetensors")).items() if not k.startswith("input_")}
    save_file(old, str(tmp_path / "old.safetensors"))
    older = GaussianPoseHead(input_size=8, num_joints=2, hidden_size=16)
    load_module(older, tmp_path / "old.safetensors")
    assert not older.has_input_normalization
    torch.testing.assert_close(older.mean_out.weight, head.mean_out.weight)
    with pytest.raises(ValueError, match="need hidden states"):
        head.fit_input_normalization(torch.randn(5, 7))
