"""Joint reward and the MPJPE / PA-MPJPE metrics, against independent computations
(smplx's own FK, numpy, scipy's orthogonal Procrustes)."""

import math

import numpy as np
import pytest
import roma
import scipy.linalg
import torch
from smplx.lbs import batch_rigid_transform

from posrft.body.formats import SMPL24_PARENTS
from posrft.body.rotations import axis_angle_to_pose6d, pose6d_to_rotmat
from posrft.body.standin import standin_rest_joints
from posrft.data.prior import sample_poses
from posrft.eval.metrics import joint_errors, mpjpe, pa_mpjpe, pose_errors_mm, procrustes_align
from rewards import RewardRunner, RewardSpec, resolve_reward
from posrft.body.pose import pose_to_joints
from rewards.body_batch import pose6d_to_rotmat_batched, posed_joints
from rewards.columns import RewardInputError
from rewards.joint import JointReward

N = 24
KNEE = 4  # left_knee (SMPL order)


@pytest.fixture(scope="module")
def data():
    s = sample_poses(N, seed=3)
    pose6d = axis_angle_to_pose6d(torch.tensor(s.pose[:, :66]))  # 22 joints, hands identity
    return pose6d, torch.tensor(s.joints)


def smplx_joints(pose6d: torch.Tensor) -> np.ndarray:
    """Independent FK: smplx's batch_rigid_transform on the stand-in skeleton (24 joints)."""
    rot = pose6d_to_rotmat(pose6d.double(), pose6d.shape[1] // 6)
    eye = torch.eye(3, dtype=rot.dtype).expand(rot.shape[0], 24 - rot.shape[1], 3, 3)
    rot = torch.cat([rot, eye], 1)
    rest = torch.as_tensor(standin_rest_joints(), dtype=rot.dtype).expand(rot.shape[0], 24, 3)
    parents = torch.tensor(SMPL24_PARENTS)
    return batch_rigid_transform(rot, rest, parents, dtype=rot.dtype)[0].numpy()


def np_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.linalg.norm((pred - pred[:, :1]) - (gt - gt[:, :1]), axis=-1).mean(-1)


def np_pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity Procrustes with scipy: s R from orthogonal_procrustes on centred points."""
    out = []
    for p, g in zip(pred, gt):
        a, b = p - p.mean(0), g - g.mean(0)
        r, sv_sum = scipy.linalg.orthogonal_procrustes(a, b)
        s = sv_sum / (a**2).sum()
        out.append(np.linalg.norm(s * a @ r + g.mean(0) - g, axis=-1).mean())
    return np.array(out)


def call(reward, poses, **cols):
    return reward(prompts=["p"] * len(poses), completions=["c"] * len(poses), poses=poses, **cols)


def bend(pose6d: torch.Tensor, joint: int, deg: float) -> torch.Tensor:
    """Compose joint ``joint``'s local rotation with a rotation of ``deg`` about x."""
    rot = pose6d_to_rotmat(pose6d, 22).clone()
    extra = roma.rotvec_to_rotmat(torch.tensor([math.radians(deg), 0.0, 0.0]))
    rot[:, joint] = rot[:, joint] @ extra
    return roma.special_gramschmidt(rot)[..., :, :2].reshape(rot.shape[0], -1)


# ----------------------------------------------------------------------------- metrics


def test_metrics_match_numpy_and_scipy():
    gen = torch.Generator().manual_seed(0)
    gt = torch.randn(16, 24, 3, generator=gen, dtype=torch.float64) * 0.3
    pred = gt + 0.05 * torch.randn(16, 24, 3, generator=gen, dtype=torch.float64)
    p, g = pred.numpy(), gt.numpy()
    np.testing.assert_allclose(mpjpe(pred, gt).numpy(), np_mpjpe(p, g), rtol=1e-10)
    np.testing.assert_allclose(pa_mpjpe(pred, gt).numpy(), np_pa_mpjpe(p, g), rtol=1e-8)
    none = np.linalg.norm(pred.numpy() - gt.numpy(), axis=-1).mean(-1)
    np.testing.assert_allclose(mpjpe(pred, gt, align="none").numpy(), none, rtol=1e-10)
    sub = [0, 4, 7, 18]
    errs = np.linalg.norm((pred - pred[:, :1] - gt + gt[:, :1]).numpy(), axis=-1)[:, sub]
    np.testing.assert_allclose(joint_errors(pred, gt, joints=sub).numpy(), errs, rtol=1e-10)
    mm = pose_errors_mm(pred, gt)
    assert mm["mpjpe_mm"] == pytest.approx(1000 * np_mpjpe(pred.numpy(), gt.numpy()).mean())
    assert mm["pa_mpjpe_mm"] == pytest.approx(1000 * np_pa_mpjpe(pred.numpy(), gt.numpy()).mean())


def test_procrustes_invariant_to_similarity_transform_of_prediction():
    gen = torch.Generator().manual_seed(1)
    gt = torch.randn(8, 24, 3, generator=gen, dtype=torch.float64)
    pred = gt + 0.1 * torch.randn(8, 24, 3, generator=gen, dtype=torch.float64)
    rot = roma.random_rotmat(8, generator=gen, dtype=torch.float64)
    moved = 2.5 * pred @ rot.transpose(1, 2) + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(pa_mpjpe(moved, gt), pa_mpjpe(pred, gt))
    assert (mpjpe(moved, gt) > mpjpe(pred, gt) + 0.1).all()  # pelvis alignment does see it
    torch.testing.assert_close(procrustes_align(moved, gt), procrustes_align(pred, gt))
    assert pa_mpjpe(2.0 * gt @ rot.transpose(1, 2), gt).max() < 1e-12


def test_metric_errors():
    with pytest.raises(ValueError, match=r"\(B, J, 3\)"):
        mpjpe(torch.zeros(2, 24, 3), torch.zeros(2, 23, 3))
    with pytest.raises(ValueError, match="align must be one of"):
        mpjpe(torch.zeros(2, 24, 3), torch.zeros(2, 24, 3), align="hips")
    with pytest.raises(ValueError, match="out of range"):
        mpjpe(torch.zeros(2, 24, 3), torch.zeros(2, 24, 3), joints=[0, 30])


# ----------------------------------------------------------------------------- batched FK


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_gram_schmidt_equals_roma(dtype):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(300, 22 * 6, generator=gen, dtype=dtype)
    ours = pose6d_to_rotmat_batched(x, 24)
    ref = roma.special_gramschmidt(x.reshape(300, 22, 3, 2))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(ours[:, :22], ref, atol=tol, rtol=0)
    torch.testing.assert_close(ours[:, 22:], torch.eye(3, dtype=dtype).expand(300, 2, 3, 3))
    with pytest.raises(ValueError, match=r"J <= 24"):
        pose6d_to_rotmat_batched(torch.zeros(2, 25 * 6))


def test_posed_joints_equal_the_reference_path(data):
    pose6d, gt = data
    ref = pose_to_joints(None)(pose6d)
    torch.testing.assert_close(posed_joints(pose6d), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(posed_joints(pose6d), gt, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- joint reward


def test_reward_equals_formula_on_independent_fk(data):
    pose6d, gt = data
    pred6d = bend(pose6d, KNEE, 40.0)
    e = np_mpjpe(smplx_joints(pred6d), gt.numpy())
    assert e.min() > 0.005
    inv = call(JointReward(), list(pred6d), gt_joints=list(gt))
    np.testing.assert_allclose(inv, np.minimum(1 / (e + 0.01), 50.0), rtol=1e-4)
    ex = call(JointReward(kind="exp", tau=0.2), list(pred6d), gt_joints=list(gt))
    np.testing.assert_allclose(ex, np.exp(-e / 0.2), rtol=1e-4)
    pa = call(resolve_reward("joint_pa", {"cap": None, "eps": 0.001}), list(pred6d), gt_joints=list(gt))
    e_pa = np_pa_mpjpe(smplx_joints(pred6d), gt.numpy().astype(np.float64))
    np.testing.assert_allclose(pa, 1 / (e_pa + 0.001), rtol=1e-3)


@pytest.mark.parametrize("name", ["joint", "joint_exp", "joint_pa"])
def test_ground_truth_is_maximal_and_reward_decreases_with_error(data, name):
    pose6d, gt = data
    reward = resolve_reward(name, {"cap": None} if name != "joint_exp" else {})
    best = call(reward, list(pose6d), gt_joints=list(gt))
    ceiling = 1.0 if name == "joint_exp" else 1 / 0.01
    np.testing.assert_allclose(best, ceiling, rtol=2e-3)
    previous = np.array(best)
    for deg in (10, 25, 50, 90, 140):  # bending the hip moves the whole leg further and further
        worse = np.array(call(reward, list(bend(pose6d, 1, deg)), gt_joints=list(gt)))
        assert (worse < previous).all(), (name, deg)
        previous = worse


def test_cap_gives_the_maximum_to_near_perfect_poses(data):
    pose6d, gt = data
    out = call(resolve_reward("joint"), list(pose6d), gt_joints=list(gt))
    assert out == pytest.approx([50.0] * N)


def test_global_rotation_changes_pelvis_aligned_but_not_procrustes(data):
    pose6d, gt = data
    rot = pose6d_to_rotmat(pose6d, 22).clone()
    rot[:, 0] = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, 0.6])) @ rot[:, 0]
    turned = rot[..., :, :2].reshape(N, -1)
    kw = {"cap": None}
    pelvis = np.array(call(resolve_reward("joint", kw), list(turned), gt_joints=list(gt)))
    pa = np.array(call(resolve_reward("joint_pa", kw), list(turned), gt_joints=list(gt)))
    assert (pelvis < 20).all()  # a 34 degree lean is an error of many centimetres
    np.testing.assert_allclose(pa, 100.0, rtol=2e-3)


def test_none_poses_and_missing_ground_truth_give_none(data):
    pose6d, gt = data
    poses = list(pose6d[:4])
    poses[1] = None
    gts = list(gt[:4])
    gts[2] = None
    out = call(JointReward(), poses, gt_joints=gts)
    assert out[1] is None and out[2] is None and out[0] == pytest.approx(50.0)
    assert call(JointReward(), [None, None], gt_joints=list(gt[:2])) == [None, None]


def test_column_formats_stacked_nested_lists_and_shared_objects(data):
    pose6d, gt = data
    ref = call(JointReward(kind="exp"), list(pose6d), gt_joints=list(gt))
    assert call(JointReward(kind="exp"), list(pose6d), gt_joints=gt) == pytest.approx(ref)
    flat = gt.reshape(N, 72).numpy()
    assert call(JointReward(kind="exp"), list(pose6d), gt_joints=flat) == pytest.approx(ref)
    nested = gt.tolist()
    assert call(JointReward(kind="exp"), list(pose6d), gt_joints=nested) == pytest.approx(ref, rel=1e-6)
    mixed = [g.reshape(72) if i % 2 else g for i, g in enumerate(gt)]  # flat and (24, 3) rows
    assert call(JointReward(kind="exp"), list(pose6d), gt_joints=mixed) == pytest.approx(ref)
    # G = 4 completions of one prompt share one row object
    shared = [gt[0].tolist()] * 4
    out = call(JointReward(kind="exp"), [pose6d[0]] * 4, gt_joints=shared)
    assert out == pytest.approx([ref[0]] * 4, rel=1e-6)


def test_joint_subset_only_counts_those_joints(data):
    pose6d, gt = data
    bent = bend(pose6d, 18, 60.0)  # left elbow: moves the left wrist and hand only
    legs = list(range(0, 12))
    out = call(JointReward(kind="exp", joints=legs), list(bent), gt_joints=list(gt))
    assert out == pytest.approx([1.0] * N, abs=1e-5)
    assert max(call(JointReward(kind="exp"), list(bent), gt_joints=list(gt))) < 0.999


def test_runner_defaults_to_pose_target(data):
    pose6d, gt = data
    spec = RewardSpec(func="joint_exp")
    assert spec.target == "pose"
    batch = RewardRunner([spec, {"func": "joint"}])(
        prompts=["p"] * 3,
        completions=["c"] * 3,
        poses=[pose6d[0], None, pose6d[2]],
        gt_joints=list(gt[:3]),
    )
    assert math.isnan(batch.pose[1]) and batch.per_func[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_errors_name_reward_column_and_sample(data):
    pose6d, gt = data
    r = JointReward()
    with pytest.raises(RewardInputError, match=r"'joint' needs the dataset column 'gt_joints'.*capt"):
        call(r, list(pose6d[:2]), caption=["a", "b"])
    bad = list(gt[:3])
    bad[2] = torch.zeros(17, 3)
    with pytest.raises(RewardInputError, match=r"column 'gt_joints', sample 2: expected shape \(24,"):
        call(r, list(pose6d[:3]), gt_joints=bad)
    with pytest.raises(RewardInputError, match="sample 1 has NaN"):
        call(r, list(pose6d[:2]), gt_joints=[gt[0], torch.full((24, 3), math.nan)])
    poses = list(pose6d[:3])
    poses[1] = torch.zeros(10)
    with pytest.raises(RewardInputError, match=r"pose of sample 1 has shape \(10,\)"):
        call(r, poses, gt_joints=list(gt[:3]))
    with pytest.raises(RewardInputError, match="poses=None"):
        r(prompts=["p"], completions=["c"], poses=None, gt_joints=list(gt[:1]))
    with pytest.raises(ValueError, match="kind must be one of"):
        JointReward(kind="square")
    with pytest.raises(ValueError, match="align must be one of"):
        resolve_reward("joint_exp", {"align": "hips"})
    with pytest.raises(ValueError, match="joints must be a non-empty list"):
        JointReward(joints=[25])
