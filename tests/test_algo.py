"""HyGRPO advantages and loss against hand computations on tiny batches."""

import math

import numpy as np
import pytest
import torch

from posrft.algo import HyGRPOLossSettings, group_normalized_advantages, hygrpo_loss
from posrft.policy.pose_head import PoseDistribution


# --------------------------------------------------------------------------- advantages
def _reference_advantages(rewards, G, mask, scale, eps=1e-4):
    """Plain-Python group normalisation (independent of the implementation)."""
    out = np.zeros(len(rewards))
    valid_all = [r for r, m in zip(rewards, mask) if m]
    batch_std = np.std(valid_all, ddof=1) if len(valid_all) > 1 else 0.0
    for g in range(len(rewards) // G):
        idx = [i for i in range(g * G, (g + 1) * G) if mask[i]]
        if len(idx) < 2:
            continue
        vals = np.array([rewards[i] for i in idx])
        for i in idx:
            c = rewards[i] - vals.mean()
            out[i] = {"group": c / (vals.std(ddof=1) + eps), "batch": c / (batch_std + eps),
                      "none": c}[scale]  # fmt: skip
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_reference(scale):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=12)
    mask = rng.random(12) > 0.3
    res = group_normalized_advantages(
        torch.tensor(rewards), 4, torch.tensor(mask), scale_rewards=scale
    )
    np.testing.assert_allclose(res.advantages.numpy(), _reference_advantages(rewards, 4, mask, scale), atol=1e-10)


def test_pose_advantages_normalise_over_valid_subset_only():
    rewards = torch.tensor([1.0, 2.0, 3.0, 100.0])
    valid = torch.tensor([True, True, True, False])
    adv = group_normalized_advantages(rewards, 4, valid).advantages
    assert adv[3] == 0
    np.testing.assert_allclose(adv[:3].numpy(), [-1 / (1 + 1e-4), 0, 1 / (1 + 1e-4)], rtol=1e-6)


def test_nan_reward_is_masked_and_small_groups_get_zero():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 5.0, float("nan"), float("nan")])
    res = group_normalized_advantages(rewards, 3)
    assert torch.isfinite(res.advantages).all()
    assert res.advantages[1] == 0 and (res.advantages[3:] == 0).all()  # group 2 has one valid


def test_equal_rewards_give_zero_advantage_and_count_as_zero_std():
    res = group_normalized_advantages(torch.tensor([0.5] * 4 + [0.0, 1.0, 0.0, 1.0]), 4)
    assert (res.advantages[:4] == 0).all()
    assert res.zero_std_groups == 0.5


def test_advantage_errors():
    with pytest.raises(ValueError, match="group_size=4"):
        group_normalized_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_normalized_advantages(torch.zeros(4), 4, scale_rewards="global")


# --------------------------------------------------------------------------- loss
def _batch(n=4, t=5, d=6, seed=0, valid=None):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    new = (old + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.ones(n, t, dtype=torch.float64)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    old_mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    old_log_std = -1 - torch.rand(n, d, generator=g, dtype=torch.float64)
    new_mean = (old_mean + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
    new_log_std = (old_log_std + 0.1 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
    pose = old_mean + old_log_std.exp() * torch.randn(n, d, generator=g, dtype=torch.float64)
    return dict(
        token_logps=new, old_token_logps=old, completion_mask=mask,
        text_advantages=torch.randn(n, generator=g, dtype=torch.float64),
        pose_dist=PoseDistribution(new_mean, new_log_std),
        old_pose_dist=PoseDistribution(old_mean, old_log_std), pose=pose,
        pose_valid=torch.tensor(valid if valid is not None else [True, False, True, True]),
        pose_advantages=torch.randn(n, generator=g, dtype=torch.float64),
        ref_token_logps=old - 0.1,
        ref_pose_dist=PoseDistribution(old_mean - 0.05, old_log_std + 0.1),
    )  # fmt: skip


def _log_normal(x, mu, log_std):
    return -((x - mu) ** 2) / (2 * math.exp(2 * log_std)) - log_std - 0.5 * math.log(2 * math.pi)


def _kl_normal(mu1, ls1, mu2, ls2):
    """KL(N(mu1, e^{2 ls1}) || N(mu2, e^{2 ls2})), the textbook formula."""
    return ls2 - ls1 + (math.exp(2 * ls1) + (mu1 - mu2) ** 2) / (2 * math.exp(2 * ls2)) - 0.5


def _hand_loss(b, s: HyGRPOLossSettings):
    """Loop-by-loop transcription of the objective in DESIGN §1 (negated)."""
    n, t = b["token_logps"].shape
    lp, olp, m = b["token_logps"].detach(), b["old_token_logps"], b["completion_mask"]
    per_seq, total, ntok = [], 0.0, 0.0
    for i in range(n):
        acc, cnt = 0.0, 0.0
        for k in range(t):
            if not m[i, k]:
                continue
            r = math.exp(lp[i, k] - olp[i, k])
            a = float(b["text_advantages"][i])
            term = -min(r * a, min(max(r, 1 - s.epsilon), 1 + s.eps_high) * a)
            q = float(b["ref_token_logps"][i, k] - lp[i, k])
            term += s.beta * (math.exp(q) - q - 1)
            acc, cnt = acc + term, cnt + 1
        per_seq.append(acc / max(cnt, 1))
        total, ntok = total + acc, ntok + cnt
    text = {"grpo": sum(per_seq) / n, "dapo": total / ntok,
            "dr_grpo": total / (n * (s.max_completion_length or 1))}[s.loss_type]  # fmt: skip
    if s.discrete_only:
        return text
    pose_terms = []
    for i in range(n):
        if not b["pose_valid"][i]:
            continue
        a = float(b["pose_advantages"][i])
        new_d, old_d, ref_d, x = b["pose_dist"].detach(), b["old_pose_dist"], b["ref_pose_dist"], b["pose"]
        dims = range(x.shape[1])
        lr = [_log_normal(float(x[i, k]), float(new_d.mean[i, k]), float(new_d.log_std[i, k]))
              - _log_normal(float(x[i, k]), float(old_d.mean[i, k]), float(old_d.log_std[i, k]))
              for k in dims]  # fmt: skip
        e = s.pose_epsilon
        if s.pose_ratio == "per_dim":
            sur = [min(math.exp(x) * a, min(max(math.exp(x), 1 - e), 1 + e) * a) for x in lr]
            term = -sum(sur) / len(sur)
        else:  # one ratio, scaled by 1/D so its on-policy gradient equals per-dim's
            r = math.exp(sum(lr))
            term = -min(r * a, min(max(r, 1 - e), 1 + e) * a) / len(lr)
        kl = [_kl_normal(float(new_d.mean[i, k]), float(new_d.log_std[i, k]),
                         float(ref_d.mean[i, k]), float(ref_d.log_std[i, k])) for k in dims]
        term += s.beta_pose * sum(kl) / len(kl)
        pose_terms.append(term)
    pose = sum(pose_terms) / len(pose_terms) if pose_terms else 0.0
    return text + s.pose_coef * pose


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("pose_ratio", ["per_dim", "joint"])
def test_loss_matches_hand_computation(loss_type, pose_ratio):
    s = HyGRPOLossSettings(
        epsilon=0.2, epsilon_high=0.28, pose_epsilon=0.1, pose_ratio=pose_ratio,
        loss_type=loss_type, beta=0.05, pose_beta=0.02, pose_coef=0.7, max_completion_length=5,
    )  # fmt: skip
    b = _batch()
    out = hygrpo_loss(**b, settings=s)
    assert out.loss.item() == pytest.approx(_hand_loss(b, s), rel=1e-10, abs=1e-12)


def test_empty_valid_set_gives_zero_pose_loss_and_gradient():
    b = _batch(valid=[False] * 4)
    out = hygrpo_loss(**b, settings=HyGRPOLossSettings(beta=0.1))
    assert out.pose_loss.item() == 0.0
    out.loss.backward()
    assert torch.count_nonzero(b["pose_dist"].mean.grad) == 0
    assert torch.count_nonzero(b["pose_dist"].log_std.grad) == 0


def test_equal_rewards_zero_advantage_zero_gradient():
    b = _batch()
    rewards = torch.full((4,), 0.3, dtype=torch.float64)
    b["text_advantages"] = group_normalized_advantages(rewards, 4).advantages
    b["pose_advantages"] = group_normalized_advantages(rewards, 4, b["pose_valid"]).advantages
    out = hygrpo_loss(**b, settings=HyGRPOLossSettings(beta=0.0))
    out.loss.backward()
    assert torch.count_nonzero(b["token_logps"].grad) == 0
    assert torch.count_nonzero(b["pose_dist"].mean.grad) == 0


def test_clipping_on_both_sides_stops_the_gradient():
    """r > 1+ε with A > 0 and r < 1-ε with A < 0 are clipped: no gradient, counted as clipped."""
    old = torch.zeros(2, 1, dtype=torch.float64)
    new = torch.tensor([[math.log(1.5)], [math.log(0.5)]], dtype=torch.float64, requires_grad=True)
    # pose 0, σ 1: the per-dim log-ratio is -(μ_new² - μ_old²)/2; μ_old = 1 and μ_new² = 1 ∓ 2·0.5
    # give log-ratios ±0.5 in dim 0 (ratio e^±0.5, outside [0.8, 1.2]) and 0 in dim 1
    old_mean = torch.ones(2, 2, dtype=torch.float64)
    new_mean = torch.tensor([[0.0, 1.0], [math.sqrt(2.0), 1.0]], dtype=torch.float64, requires_grad=True)
    log_std = torch.zeros(2, 2, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    out = hygrpo_loss(
        token_logps=new, old_token_logps=old, completion_mask=torch.ones(2, 1),
        text_advantages=adv, pose_dist=PoseDistribution(new_mean, log_std),
        old_pose_dist=PoseDistribution(old_mean, log_std), pose=torch.zeros(2, 2, dtype=torch.float64),
        pose_valid=torch.tensor([True, True]), pose_advantages=adv,
        settings=HyGRPOLossSettings(epsilon=0.2, pose_epsilon=0.2),
    )  # fmt: skip
    out.loss.backward()
    assert torch.count_nonzero(new.grad) == 0
    assert out.metrics["clip/text_high"] == 0.5 and out.metrics["clip/text_low"] == 0.5
    # Clipped pose dimensions get no gradient; the unclipped (ratio 1) ones do.
    assert new_mean.grad[:, 0].abs().sum() == 0 and (new_mean.grad[:, 1].abs() > 0).all()
    # one of two dims clipped in each sample, high in one sample and low in the other
    assert out.metrics["clip/pose_high"] == pytest.approx(0.25)
    assert out.metrics["clip/pose_low"] == pytest.approx(0.25)


def test_discrete_only_equals_plain_grpo_loss():
    b = _batch()
    s = HyGRPOLossSettings(beta=0.04, discrete_only=True)
    out = hygrpo_loss(**b, settings=s)
    # Plain GRPO (TRL's formula) from scratch: no pose anywhere.
    lp, olp, m, a = b["token_logps"], b["old_token_logps"], b["completion_mask"], b["text_advantages"]
    r = torch.exp(lp - olp)
    per_tok = -torch.min(r * a[:, None], torch.clamp(r, 0.8, 1.2) * a[:, None])
    d = b["ref_token_logps"] - lp
    per_tok = per_tok + 0.04 * (torch.exp(d) - d - 1)
    expected = ((per_tok * m).sum(-1) / m.sum(-1)).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12)
    out.loss.backward()
    assert b["pose_dist"].mean.grad is None


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match="loss_type"):
        HyGRPOLossSettings(loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        HyGRPOLossSettings(loss_type="dr_grpo")
    with pytest.raises(ValueError, match="pose_epsilon"):
        HyGRPOLossSettings(pose_epsilon=1.5)
    with pytest.raises(ValueError, match="beta != 0 needs ref_token_logps"):
        b = _batch()
        b["ref_token_logps"] = None
        hygrpo_loss(**b, settings=HyGRPOLossSettings(beta=0.1))
