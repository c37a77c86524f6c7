"""HyGRPO's pose learning options: nested pose samples, per-joint credit, σ modes, KL forms,
Gaussian SFT losses — each against an independent computation."""

import math

import numpy as np
import pytest
import torch

from posrft.algo import HyGRPOLossSettings, group_normalized_advantages, hygrpo_loss
from posrft.algo.credit import counterfactual_credit, counterfactual_poses, joint_credit, moved_joints
from posrft.policy.pose_head import GaussianPoseHead, PoseDistribution, SigmaSettings


# --------------------------------------------------------------------------- per-joint credit
TOY_PARENTS = (-1, 0, 1, 1, 3)  # root → 1 → {2, 3 → 4}


def test_moved_joints_are_strict_descendants():
    m = moved_joints(TOY_PARENTS, 5)
    expected = {0: {1, 2, 3, 4}, 1: {2, 3, 4}, 2: set(), 3: {4}, 4: set()}
    for k, js in expected.items():
        assert {j for j in range(5) if m[k, j]} == js


def test_per_joint_credit_is_unbiased_and_has_less_variance():
    """Toy tree with 1-D 'rotations': x_j = Σ_{a ∈ anc(j)} θ_a, r_j = -(x_j - t_j)². The
    score-function estimator with the full reward and with subtree credit agree in mean with the
    closed-form gradient of E[R] w.r.t. μ; credit has lower variance."""
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64)
    sigma, t = 0.5, torch.tensor([0.0, 1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    anc = moved_joints(TOY_PARENTS, 5).double()  # anc[a, j] = 1 if a moves j
    n = 400_000
    theta = mu + sigma * torch.randn(n, 5, generator=g, dtype=torch.float64)
    x = theta @ anc
    r = -((x - t) ** 2)  # (n, J)
    score = (theta - mu) / sigma**2
    full = (r.sum(1, keepdim=True) - r.sum(1).mean()) * score
    credit = joint_credit(r, None, 5, TOY_PARENTS)
    cred = (credit - credit.mean(0)) * score
    exact = (-2 * ((mu @ anc) - t))[None] @ anc.T  # dE[R]/dμ_a = Σ_{j moved by a} -2(E x_j - t_j)
    se = full.std(0) / math.sqrt(n)
    torch.testing.assert_close(full.mean(0), exact[0], atol=float(5 * se.max()), rtol=0)
    torch.testing.assert_close(cred.mean(0), exact[0], atol=float(5 * se.max()), rtol=0)
    assert (cred.var(0) <= full.var(0) + 1e-9).all() and (cred.var(0)[1:] < 0.9 * full.var(0)[1:]).all()


def test_joint_credit_adds_scalar_rewards_to_every_rotation_and_keeps_nan_rows():
    per_joint = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [float("nan")] * 5])
    scalar = torch.tensor([10.0, float("nan")])
    c = joint_credit(per_joint, scalar, 5, TOY_PARENTS)
    assert c[0].tolist() == [10 + 14, 10 + 12, 10, 10 + 5, 10]
    assert torch.isnan(c[1]).all()


# --------------------------------------------------------------------------- counterfactual credit
def test_counterfactual_poses_put_one_rotation_back_at_the_mean():
    g = torch.Generator().manual_seed(0)
    pose, mean = torch.randn(2, 3, 12, generator=g), torch.randn(2, 12, generator=g)
    cf = counterfactual_poses(pose, mean, rot_dim=4)
    assert cf.shape == (2, 9, 12)
    for i in range(2):
        for k in range(3):
            for r in range(3):
                expected = pose[i, k].clone()
                expected[4 * r: 4 * r + 4] = mean[i, 4 * r: 4 * r + 4]
                assert torch.equal(cf[i, k * 3 + r], expected)
    with pytest.raises(ValueError, match="multiple of 5"):
        counterfactual_poses(pose, mean, rot_dim=5)


def test_counterfactual_credit_is_unbiased_and_beats_per_joint_credit():
    """The toy tree of the per-joint test: the counterfactual estimator agrees in mean with the
    closed-form gradient and has lower variance than subtree credit on every rotation."""
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64)
    sigma, t = 0.2, torch.tensor([0.0, 1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    anc = moved_joints(TOY_PARENTS, 5).double()
    n = 400_000

    def reward(theta):  # (..., 5) → per-joint terms (..., 5)
        return -((theta @ anc - t) ** 2)

    theta = mu + sigma * torch.randn(n, 5, generator=g, dtype=torch.float64)
    r = reward(theta)
    cf_theta = counterfactual_poses(theta[None], mu[None], rot_dim=1)[0]  # (n·5, 5)
    credit = counterfactual_credit(r.sum(1), reward(cf_theta).sum(-1).view(n, 5))
    score = (theta - mu) / sigma**2
    cf = (credit - credit.mean(0)) * score
    sub = joint_credit(r, None, 5, TOY_PARENTS)
    per_joint = (sub - sub.mean(0)) * score
    exact = (-2 * ((mu @ anc) - t))[None] @ anc.T
    se = per_joint.std(0) / math.sqrt(n)
    torch.testing.assert_close(cf.mean(0), exact[0], atol=float(5 * se.max()), rtol=0)
    assert (cf.var(0)[[0, 1, 3]] < 0.75 * per_joint.var(0)[[0, 1, 3]]).all()  # rotations that move joints
    assert torch.isnan(counterfactual_credit(torch.tensor([float("nan")]), torch.zeros(1, 5))).all()


def test_counterfactual_credit_in_pose_advantages_uses_the_reward_runner(tiny_policy, nudge_logits):
    """End to end on the tiny policy: each rotation's advantage is the group-normalised
    R(θ) − R(θ with that rotation at μ) of a real joint reward, the extra rows are scored through
    the runner, and the diagnostic still runs."""
    from posrft.body.pose import pose_to_joints
    from posrft.train.config import HyGRPOConfig
    from posrft.train.experience import build_experience
    from posrft.train.pose_credit import counterfactual_rewards
    from rewards import RewardRunner

    nudge_logits(tiny_policy, {"<POSE>": 30.0})
    gt = pose_to_joints(None)(torch.tensor([[1.0, 0, 0, 1, 0, 0] * 22]))[0]
    spec = {"func": "joint", "target": "pose", "weight": 2.0, "kwargs": {"kind": "exp", "align": "pelvis"}}
    cfg = HyGRPOConfig(num_generations=2, per_device_train_batch_size=4, num_pose_samples=3,
                       counterfactual_credit=True, rewards=[spec], pose_grad_check_samples=4)
    assert cfg.per_joint_credit is False
    batch = tiny_policy.rollout(["a", "b"], num_generations=2, max_new_tokens=3, seed=0, num_pose_samples=3)
    assert batch.pose_valid.all()
    rows = [{"prompt": "a", "gt_joints": gt}, {"prompt": "b", "gt_joints": gt}]
    runner = RewardRunner(cfg.rewards)
    out = build_experience(cfg, rows, batch, torch.zeros(4, dtype=torch.long), runner, check_gradient=True)
    cf = counterfactual_rewards(runner.subset(("pose",)), rows, batch, 2)
    joints = pose_to_joints(None)
    def exp_reward(p):  # the joint reward by hand: pelvis-aligned MPJPE, exp(-e/0.1), weight 2
        j = joints(p.float())
        e = ((j - j[:, :1]) - (gt - gt[:1])).norm(dim=-1).mean(-1)
        return 2.0 * torch.exp(-e / 0.1).double()
    total = exp_reward(batch.pose.reshape(-1, 132))
    other = exp_reward(counterfactual_poses(batch.pose, batch.pose_mean).reshape(-1, 132)).view(-1, 22)
    torch.testing.assert_close(cf.per_func[:, 0].double().view(-1, 22) * 2.0, other, rtol=1e-4, atol=1e-6)
    credit = total[:, None] - other
    expected = group_normalized_advantages(credit, 6).advantages.float().view(4, 3, 22).repeat_interleave(6, -1)
    got = out.experience.pose_advantages
    moves = (credit.abs().amax(0) > 1e-5).repeat_interleave(6)  # feet and head move no joint:
    torch.testing.assert_close(got[..., moves], expected[..., moves], rtol=1e-3, atol=1e-3)
    assert moves.sum() == 6 * 19 and got[..., ~moves].abs().max() < 1e-2  # only float noise there
    assert math.isfinite(out.metrics["grad/pose_cosine"]) and out.metrics["time/counterfactual"] > 0


@pytest.mark.parametrize("clash, match", [
    ({"per_joint_credit": True}, "per_joint_credit"),
    ({"rewards_on_workers": True}, "rewards_on_workers"),
    ({"pose_ratio": "joint"}, "pose_ratio='joint'"),
])
def test_counterfactual_credit_refuses_what_it_cannot_combine_with(clash, match):
    from posrft.train.config import HyGRPOConfig

    with pytest.raises(ValueError, match=f"counterfactual_credit cannot be combined with {match}"):
        HyGRPOConfig(output_dir="unused", counterfactual_credit=True, **clash)


# --------------------------------------------------------------------------- the loss
def _dists(n=3, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    log_std = -1 - torch.rand(n, d, generator=g, dtype=torch.float64)
    new = PoseDistribution((mean + 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_(),
                           (log_std + 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_())
    return new, PoseDistribution(mean, log_std), g


def _loss(new, old, pose, adv, settings, ref=None):
    n, t = pose.shape[0], 2
    return hygrpo_loss(token_logps=torch.zeros(n, t, dtype=torch.float64), old_token_logps=torch.zeros(n, t, dtype=torch.float64),
                       completion_mask=torch.ones(n, t), text_advantages=torch.zeros(n, dtype=torch.float64),
                       pose_dist=new, old_pose_dist=old, pose=pose, pose_valid=torch.tensor([True, False, True]),
                       pose_advantages=adv, settings=settings, ref_pose_dist=ref)  # fmt: skip


@pytest.mark.parametrize("ratio", ["per_dim", "joint"])
def test_one_pose_sample_is_the_per_rollout_loss(ratio):
    new, old, g = _dists()
    pose = old.mean + old.std * torch.randn(old.mean.shape, generator=g, dtype=torch.float64)
    adv = torch.randn(3, generator=g, dtype=torch.float64)
    s = HyGRPOLossSettings(pose_ratio=ratio, beta=0.0, pose_beta=0.1)
    flat = _loss(new, old, pose, adv, s, ref=old)
    nested = _loss(new, old, pose[:, None], adv[:, None, None], s, ref=old)
    assert flat.loss.item() == nested.loss.item()


def test_k_samples_average_their_surrogates():
    new, old, g = _dists()
    pose = old.mean[:, None] + old.std[:, None] * torch.randn(3, 4, 12, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 4, 1, generator=g, dtype=torch.float64)
    s = HyGRPOLossSettings(beta=0.0, pose_beta=0.0)
    whole = _loss(new, old, pose, adv, s).pose_loss
    parts = torch.stack([_loss(new, old, pose[:, k], adv[:, k, 0], s).pose_loss for k in range(4)])
    assert whole.item() == pytest.approx(parts.mean().item(), rel=1e-12)


def test_joint_ratio_has_per_dim_gradient_on_policy():
    """At the sampling policy both modes give the same gradient (the 1/D scale of joint)."""
    _, old, g = _dists()
    pose = old.mean[:, None] + old.std[:, None] * torch.randn(3, 2, 12, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 2, 1, generator=g, dtype=torch.float64)
    grads = []
    for ratio in ("per_dim", "joint"):
        new = PoseDistribution(old.mean.clone().requires_grad_(), old.log_std.clone().requires_grad_())
        _loss(new, old, pose, adv, HyGRPOLossSettings(pose_ratio=ratio, pose_beta=0.0)).loss.backward()
        grads.append(torch.cat([new.mean.grad, new.log_std.grad]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_per_dimension_advantages_reach_their_dimensions_only():
    _, old, g = _dists()
    pose = old.mean[:, None] + old.std[:, None] * torch.randn(3, 1, 12, generator=g, dtype=torch.float64)
    adv = torch.zeros(3, 1, 12, dtype=torch.float64)
    adv[:, :, :6] = 1.0  # only the first rotation is credited
    new = PoseDistribution(old.mean.clone().requires_grad_(), old.log_std.clone().requires_grad_())
    _loss(new, old, pose, adv, HyGRPOLossSettings(pose_beta=0.0)).loss.backward()
    assert new.mean.grad[:, 6:].abs().sum() == 0 and new.mean.grad[[0, 2], :6].abs().sum() > 0


@pytest.mark.parametrize("form", ["gaussian", "mean_l2"])
def test_pose_kl_forms_match_their_closed_form(form):
    from torch.distributions import Normal, kl_divergence

    new, ref, _ = _dists(seed=3)
    s = HyGRPOLossSettings(beta=0.0, pose_beta=1.0, pose_kl=form, pose_kl_scale=0.2)
    out = _loss(new, ref, ref.mean[:, None], torch.zeros(3, 1, 1, dtype=torch.float64), s, ref=ref)
    if form == "gaussian":
        kl = kl_divergence(Normal(new.mean, new.std), Normal(ref.mean, ref.std))
    else:  # the KL between equal-width Gaussians N(μ, s²) and N(μ_ref, s²)
        kl = kl_divergence(Normal(new.mean, 0.2), Normal(ref.mean, 0.2))
    expected = kl.mean(-1)[[0, 2]].mean()
    assert out.metrics["kl/pose"] == pytest.approx(expected.item(), rel=1e-9)


# --------------------------------------------------------------------------- σ modes
def test_fixed_sigma_has_no_sigma_gradient_and_the_clamp_is_hard():
    head = GaussianPoseHead(8, num_joints=2, hidden_size=16).double()
    h = torch.randn(5, 8, dtype=torch.float64)
    head.set_sigma(SigmaSettings("fixed", 0.05))
    dist = head(h)
    assert torch.allclose(dist.std, torch.full_like(dist.std, 0.05))
    (-dist.log_prob(torch.zeros_like(dist.mean)).sum()).backward()
    assert head.log_std_out.weight.grad is None or head.log_std_out.weight.grad.abs().sum() == 0
    assert head.mean_out.weight.grad.abs().sum() > 0
    head.set_sigma(SigmaSettings("learned", min=0.2, max=0.3))
    std = head(h).std
    assert std.min() >= 0.2 - 1e-12 and std.max() <= 0.3 + 1e-12


def test_state_independent_sigma_is_one_learned_vector():
    head = GaussianPoseHead(8, num_joints=2, hidden_size=16)
    head.set_sigma(SigmaSettings("state_independent", 0.1))
    dist = head(torch.randn(4, 8))
    assert torch.allclose(dist.std, torch.full_like(dist.std, 0.1))
    dist.log_std.sum().backward()
    assert torch.equal(head.free_log_std.grad, torch.full((12,), 4.0))


# --------------------------------------------------------------------------- SFT pose losses
def test_gaussian_sft_losses_train_the_mean_like_l2():
    from posrft.train.sft import pose_loss_per_sample

    g = torch.Generator().manual_seed(1)
    target = torch.randn(4, 6, generator=g, dtype=torch.float64)
    grads = {}
    for kind, beta in (("l2", 0.5), ("l2_nll", 0.5), ("beta_nll", 1.0), ("nll", 0.5)):
        mean = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_()
        log_std = torch.full((4, 6), -1.0, dtype=torch.float64, requires_grad=True)
        pose_loss_per_sample(PoseDistribution(mean, log_std), target, kind, beta).sum().backward()
        grads[kind] = (mean.grad, log_std.grad)
    torch.testing.assert_close(grads["l2_nll"][0], grads["l2"][0])
    # β-NLL with β = 1: σ² · (μ − p)/σ² / D = half the L2 gradient 2(μ − p)/D
    torch.testing.assert_close(grads["beta_nll"][0], grads["l2"][0] / 2)
    torch.testing.assert_close(grads["nll"][0], grads["l2"][0] / 2 / math.exp(-2.0))
    assert grads["l2"][1] is None and grads["l2_nll"][1].abs().sum() > 0


def test_l2_nll_trains_the_shared_features_exactly_like_l2():
    """With σ's stop-gradient (run_sft sets it for l2_nll) the trunk and the hidden state below
    it get l2's gradient; without it σ's NLL reaches them too."""
    from posrft.train.sft import pose_loss_per_sample

    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(5, 16, generator=g, dtype=torch.float64)
    target = torch.randn(5, 12, generator=g, dtype=torch.float64)

    def grads(kind: str, stop: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        head = GaussianPoseHead(16, num_joints=2, hidden_size=8).double()
        head.sigma_stops_gradient = stop
        h = hidden.clone().requires_grad_()
        pose_loss_per_sample(head(h), target, kind).sum().backward()
        return [h.grad, *(p.grad for p in head.trunk.parameters()), head.mean_out.weight.grad]

    for a, b in zip(grads("l2_nll", True), grads("l2", False)):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(grads("l2_nll", False)[0], grads("l2", False)[0])


def test_joint_loss_of_a_turned_root_is_the_chord_of_each_joints_circle():
    """μ = the rest pose turned by θ about the vertical, p* = the rest pose: joint j moves on a
    circle of radius r_j (its horizontal distance from the pelvis), so its error is the chord
    2 r_j |sin(θ/2)|; rows marked invalid do not count."""
    import roma

    from posrft.body.pose import PoseToJoints
    from posrft.body.rotations import identity_pose6d
    from posrft.body.standin import standin_rest_joints
    from posrft.train.sft import joint_loss

    fk = PoseToJoints()
    rest = torch.as_tensor(standin_rest_joints(), dtype=torch.float64)
    radius = (rest - rest[0])[:, [0, 2]].norm(dim=-1)  # (24,) horizontal distance to the pelvis
    gt = identity_pose6d(22, 1).reshape(1, -1)
    for theta in (0.3, math.pi / 2, 3.0):
        turned = gt.clone()
        rot = roma.rotvec_to_rotmat(torch.tensor([0.0, theta, 0.0]))
        turned[0, :6] = rot[:, :2].reshape(6)
        mean = torch.cat([turned, gt + 0.5])  # the second row is garbage, and marked invalid
        valid = torch.tensor([True, False])
        got = joint_loss(mean, gt.expand(2, -1), valid, fk)
        want = (2 * radius * abs(math.sin(theta / 2))).mean()
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    assert joint_loss(gt, gt, torch.tensor([True]), fk) == 0


def test_joint_loss_gradient_turns_a_root_back():
    """Descending the joint loss over the root's 6D alone (the body fixed at p*) turns a root
    yawed by 2.5 rad back onto p*: the gradient flows through FK and points the right way."""
    import roma

    from posrft.body.pose import PoseToJoints
    from posrft.body.rotations import identity_pose6d
    from posrft.train.sft import joint_loss

    fk = PoseToJoints()
    gt = identity_pose6d(22, 1)
    root = roma.rotvec_to_rotmat(torch.tensor([0.0, 2.5, 0.0]))[:, :2].reshape(1, 6).requires_grad_()
    opt = torch.optim.Adam([root], lr=0.02)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)

    def loss() -> torch.Tensor:
        return joint_loss(torch.cat([root, gt[:, 6:]], 1), gt, torch.tensor([True]), fk)

    start = float(loss())
    for _ in range(400):
        opt.zero_grad()
        loss().backward()
        opt.step()
        decay.step()
    assert start > 0.1 and float(loss()) < 1e-3


# --------------------------------------------------------------------------- rewards
def test_per_joint_reward_terms_sum_to_the_scalar_reward():
    from posrft.body.pose import pose_to_joints
    from rewards.api import PerJointRewards
    from rewards.joint import JointReward

    g = torch.Generator().manual_seed(0)
    ident = torch.tensor([1.0, 0, 0, 1, 0, 0] * 22)
    poses = [ident + 0.2 * torch.randn(132, generator=g) for _ in range(5)] + [None]
    gt = pose_to_joints(None)(ident[None])[0]
    for kind in ("mean_exp", "neg_mean"):
        per = JointReward(kind=kind, per_joint=True, tau=0.1)(poses=poses, completions=["x"] * 6, gt_joints=[gt] * 6)
        scalar = JointReward(kind=kind, tau=0.1)(poses=poses, completions=["x"] * 6, gt_joints=[gt] * 6)
        assert isinstance(per, PerJointRewards) and per.totals()[-1] is None
        np.testing.assert_allclose(per.totals()[:5], scalar[:5], rtol=1e-5)
    with pytest.raises(ValueError, match="per_joint needs a kind"):
        JointReward(kind="exp", per_joint=True)


def test_pose_advantages_group_over_siblings_or_prompt():
    from types import SimpleNamespace

    from posrft.train.config import HyGRPOConfig
    from posrft.train.pose_credit import pose_advantages

    g = torch.Generator().manual_seed(0)
    pose = torch.randn(2 * 2 * 3, generator=g)  # 2 prompts × G 2 × K 3
    valid = torch.ones(12, dtype=torch.bool)
    scored = SimpleNamespace(pose=pose, specs=[], per_func=pose[:, None], per_joint={})
    for group, size in (("prompt", 6), ("siblings", 3)):
        cfg = HyGRPOConfig(num_generations=2, per_device_train_batch_size=4, num_pose_samples=3,
                           pose_advantage_group=group)
        adv = pose_advantages(cfg, scored, valid, 22).advantages
        expected = group_normalized_advantages(pose, size).advantages
        assert adv.shape == (4, 3, 1)
        torch.testing.assert_close(adv.flatten(), expected)


def test_defaults_follow_the_study_and_the_rewards():
    """K 16 unless the pose term is off; per-joint credit exactly when a joint reward gives
    per-joint terms and the ratio is per dimension; σ fixed at 0.05; the σ-free pose KL."""
    from posrft.train.config import HyGRPOConfig

    per_joint = [{"func": "joint", "target": "pose", "kwargs": {"kind": "neg_mean", "per_joint": True}}]
    scalar = [{"func": "joint", "target": "pose", "kwargs": {"kind": "exp"}}]
    c = HyGRPOConfig(output_dir="unused", rewards=per_joint)
    assert (c.num_pose_samples, c.per_joint_credit) == (16, True)
    assert (c.pose_sigma, c.pose_sigma_value, c.pose_kl) == ("fixed", 0.05, "mean_l2")
    assert HyGRPOConfig(output_dir="unused", pose_sigma="learned").pose_sigma_value is None
    assert HyGRPOConfig(output_dir="unused", rewards=scalar).per_joint_credit is False
    reproj = [{"func": "reprojection", "target": "pose", "kwargs": {"kind": "neg_mean", "per_joint": True}}]
    assert HyGRPOConfig(output_dir="unused", rewards=reproj).per_joint_credit is True
    assert HyGRPOConfig(output_dir="unused", rewards=[{"func": "reprojection"}]).per_joint_credit is False
    assert HyGRPOConfig(output_dir="unused", rewards=per_joint, pose_ratio="joint").per_joint_credit is False
    off = HyGRPOConfig(output_dir="unused", rewards=[*per_joint, {"func": "format", "target": "text"}],
                       discrete_only=True)
    assert (off.num_pose_samples, off.per_joint_credit) == (1, False)
    with pytest.raises(ValueError, match="per_joint_credit needs pose_ratio='per_dim'"):
        HyGRPOConfig(output_dir="unused", rewards=per_joint, pose_ratio="joint", per_joint_credit=True)
