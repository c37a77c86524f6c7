"""Plausibility and reprojection rewards: closed forms and a hand-written numpy pinhole."""

import math

import numpy as np
import pytest
import roma
import torch
from smplx.lbs import batch_rigid_transform

from posrft.body.formats import SMPL24_PARENTS
from posrft.body.rotations import axis_angle_to_pose6d, pose6d_to_rotmat
from posrft.body.standin import standin_rest_joints
from posrft.data.prior import sample_poses
from posrft.render.camera import auto_frame
from rewards import RewardSpec, resolve_reward
from rewards.columns import RewardInputError
from rewards.plausibility import PlausibilityReward
from rewards.reprojection import ReprojectionReward

N = 16
W, H = 320, 240


@pytest.fixture(scope="module")
def data():
    s = sample_poses(N, seed=5)
    pose6d = axis_angle_to_pose6d(torch.tensor(s.pose[:, :66]))
    joints = torch.tensor(s.joints)
    cam = auto_frame(joints, width=W, height=H, fov_deg=40.0)
    cams = [dict(fx=cam.fx, fy=cam.fy, cx=cam.cx, cy=cam.cy, width=W, height=H,
                 R=cam.R[i].tolist(), t=cam.t[i].tolist()) for i in range(N)]  # fmt: skip
    for c in cams[1::2]:  # two groups of intrinsics in one batch
        c.update(fx=c["fx"] * 0.8, fy=c["fy"] * 0.8, cx=c["cx"] + 7.0)
    kp = np.stack([np_project(joints[i].numpy(), cams[i]) for i in range(N)])
    return pose6d, joints, cams, kp


def np_project(points: np.ndarray, cam: dict) -> np.ndarray:
    pc = points @ np.asarray(cam["R"]).T + np.asarray(cam["t"])
    u = cam["fx"] * pc[:, 0] / pc[:, 2] + cam["cx"]
    v = cam["fy"] * pc[:, 1] / pc[:, 2] + cam["cy"]
    return np.stack([u, v], 1)


def smplx_joints(pose6d: torch.Tensor) -> np.ndarray:
    rot = pose6d_to_rotmat(pose6d.double(), 22)
    rot = torch.cat([rot, torch.eye(3, dtype=rot.dtype).expand(rot.shape[0], 2, 3, 3)], 1)
    rest = torch.as_tensor(standin_rest_joints(), dtype=rot.dtype).expand(rot.shape[0], 24, 3)
    parents = torch.tensor(SMPL24_PARENTS)
    return batch_rigid_transform(rot, rest, parents, dtype=rot.dtype)[0].numpy()


def set_joint(pose6d: torch.Tensor, joint: int, rotvec) -> torch.Tensor:
    rot = pose6d_to_rotmat(pose6d, 22).clone()
    new = roma.rotvec_to_rotmat(torch.tensor(rotvec, dtype=rot.dtype))
    rot[:, joint] = new.expand_as(rot[:, joint])
    return rot[..., :, :2].reshape(rot.shape[0], -1)


def call(reward, poses, **cols):
    return reward(prompts=["p"] * len(poses), completions=["c"] * len(poses), poses=poses, **cols)


# ----------------------------------------------------------------------------- plausibility


def test_plausibility_zero_for_prior_poses(data):
    pose6d = data[0]
    assert RewardSpec(func="plausibility").target == "pose"
    out = call(resolve_reward("plausibility"), list(pose6d))
    assert out == [0.0] * N


@pytest.mark.parametrize("deg", [15.0, 30.0, 60.0])
def test_plausibility_knee_bent_backwards_closed_form(data, deg):
    # a single-axis rotation's anatomical coordinates are its rotation vector: knee x = -deg,
    # limit -5 deg, dead zone 0.5 deg -> penalty (deg - 5.5) in radians
    bent = set_joint(data[0][:4], 4, [-math.radians(deg), 0.0, 0.0])
    out = call(PlausibilityReward(), list(bent))
    assert out == pytest.approx([-math.radians(deg - 5.5)] * 4, abs=2e-5)
    forward = set_joint(data[0][:4], 4, [math.radians(deg), 0.0, 0.0])
    assert call(PlausibilityReward(), list(forward)) == [0.0] * 4


def test_plausibility_penetration_term_and_none(data):
    pose6d = data[0][:3]
    arm_into_chest = set_joint(pose6d, 16, [0.0, math.radians(-100), 0.0])  # left shoulder
    arm_into_chest = set_joint(arm_into_chest, 18, [0.0, math.radians(-140), 0.0])  # elbow folds in
    plain = call(PlausibilityReward(tol_deg=180), list(arm_into_chest))
    with_pen = call(PlausibilityReward(tol_deg=180, penetration_weight=10.0), list(arm_into_chest))
    assert plain == [0.0] * 3 and all(v < 0 for v in with_pen)
    assert call(PlausibilityReward(), [None, pose6d[0]]) == [None, 0.0]
    with pytest.raises(ValueError, match="must be >= 0"):
        PlausibilityReward(scale=-1)


# ----------------------------------------------------------------------------- reprojection


def test_reprojection_maximal_at_ground_truth(data):
    pose6d, joints, cams, kp = data
    reward = resolve_reward("reprojection")
    out = call(reward, list(pose6d), camera=cams, keypoints_2d=list(kp), gt_joints=list(joints))
    assert out == pytest.approx([1.0] * N, abs=1e-4)


def test_reprojection_matches_numpy_and_decreases_with_error(data):
    pose6d, joints, cams, kp = data
    reward = ReprojectionReward(tau=0.1)
    previous = np.ones(N)
    for deg in (15, 40, 80):
        rot = pose6d_to_rotmat(pose6d, 22).clone()
        rot[:, 1] = rot[:, 1] @ roma.rotvec_to_rotmat(torch.tensor([math.radians(deg), 0.0, 0.0]))
        bent = rot[..., :, :2].reshape(N, -1)
        out = call(reward, list(bent), camera=cams, keypoints_2d=kp, gt_joints=list(joints))
        out = np.array(out)
        pred = smplx_joints(bent)
        pred = pred - pred[:, :1] + joints.numpy()[:, :1]
        dist = [np.linalg.norm(np_project(pred[i], cams[i]) - kp[i], axis=1) for i in range(N)]
        err = [np.minimum(d / max(W, H), 1).mean() for d in dist]
        np.testing.assert_allclose(out, np.exp(-np.array(err) / 0.1), rtol=1e-4)
        # 2D error need not grow for every sample (a limb can swing along the line of sight),
        # but the reward is below the ground truth's and falls on average
        assert (out < 1.0 - 1e-3).all() and out.mean() < previous.mean()
        previous = out


def test_reprojection_invisible_keypoints_behind_camera_and_missing_rows(data):
    pose6d, joints, cams, kp = data
    reward = ReprojectionReward()
    kp_hidden = kp[:2].copy()
    kp_hidden[0, 10:] = np.nan
    kp_hidden[1, :] = np.nan
    out = call(reward, list(pose6d[:2]), camera=cams[:2], keypoints_2d=list(kp_hidden),
               gt_joints=list(joints[:2]))  # fmt: skip
    assert out[0] == pytest.approx(1.0, abs=1e-4) and out[1] is None
    behind = dict(cams[0], t=[0.0, 0.0, -10.0])  # the body is behind this camera
    out = call(reward, [pose6d[0]], camera=[behind], keypoints_2d=[kp[0]], gt_joints=[joints[0]])
    assert out == [pytest.approx(math.exp(-1 / 0.05))]
    out = call(reward, [pose6d[0], pose6d[1], None], camera=[None, cams[1], cams[2]],
               keypoints_2d=list(kp[:3]), gt_joints=list(joints[:3]))  # fmt: skip
    assert out[0] is None and out[2] is None and out[1] == pytest.approx(1.0, abs=1e-4)


def test_reprojection_errors_name_column_and_sample(data):
    pose6d, joints, cams, kp = data
    reward = ReprojectionReward()
    with pytest.raises(RewardInputError, match=r"'reprojection' needs the dataset column 'camera'"):
        call(reward, list(pose6d[:2]), keypoints_2d=list(kp[:2]), gt_joints=list(joints[:2]))
    broken = [cams[0], {k: v for k, v in cams[1].items() if k != "fx"}]
    with pytest.raises(RewardInputError, match=r"column 'camera', sample 1 lacks \['fx'\]"):
        call(reward, list(pose6d[:2]), camera=broken, keypoints_2d=list(kp[:2]),
             gt_joints=list(joints[:2]))  # fmt: skip
    with pytest.raises(RewardInputError, match=r"'keypoints_2d', sample 0: expected shape \(24, 2"):
        call(reward, [pose6d[0]], camera=[cams[0]], keypoints_2d=[kp[0][:5]], gt_joints=[joints[0]])
    with pytest.raises(RewardInputError, match=r"'camera.R', sample 0"):
        bad_r = dict(cams[0], R=[1, 0])
        call(reward, [pose6d[0]], camera=[bad_r], keypoints_2d=[kp[0]], gt_joints=[joints[0]])


def test_reprojection_neg_mean_per_joint_terms_match_numpy_and_follow_the_tree(data):
    pose6d, joints, cams, kp = data
    kp = kp.copy()
    kp[0, 5:9] = np.nan  # some invisible joints: their terms are 0, the rest share 1/|vis|
    rot = pose6d_to_rotmat(pose6d, 22).clone()
    rot[:, 1] = rot[:, 1] @ roma.rotvec_to_rotmat(torch.tensor([0.6, 0.0, 0.0]))  # left hip
    bent = rot[..., :, :2].reshape(N, -1)
    columns = dict(camera=cams, keypoints_2d=list(kp), gt_joints=list(joints))
    terms = ReprojectionReward(kind="neg_mean", per_joint=True, tau=0.1)(poses=list(bent), **columns).values
    pred = smplx_joints(bent)
    pred = pred - pred[:, :1] + joints.numpy()[:, :1]
    for i in range(N):
        vis = np.isfinite(kp[i]).all(1)
        err = np.minimum(np.linalg.norm(np_project(pred[i], cams[i]) - kp[i], axis=1) / max(W, H), 1)
        expect = np.where(vis, -err / (0.1 * vis.sum()), 0.0)
        np.testing.assert_allclose(terms[i], expect, rtol=1e-5, atol=1e-6)
    scalar = ReprojectionReward(kind="neg_mean", tau=0.1)(poses=list(bent), **columns)
    np.testing.assert_allclose(scalar, terms.sum(1), rtol=1e-6)
    # the left hip moves only its subtree (left knee, ankle, foot): every other term is as at GT
    gt_terms = ReprojectionReward(kind="neg_mean", per_joint=True)(poses=list(pose6d), **columns).values
    moved = [4, 7, 10]
    others = [j for j in range(24) if j not in moved]
    np.testing.assert_allclose(gt_terms[:, others] * 0.05, terms[:, others] * 0.1, atol=1e-6)
    assert (terms[:, moved].sum(1) < -1e-4).all()


def test_reprojection_per_joint_rows_without_pose_and_bad_kind(data):
    pose6d, joints, cams, kp = data
    out = ReprojectionReward(kind="neg_mean", per_joint=True)(
        poses=[pose6d[0], None], camera=cams[:2], keypoints_2d=list(kp[:2]), gt_joints=list(joints[:2]))
    assert np.isfinite(out.values[0]).all() and np.isnan(out.values[1]).all()
    assert out.totals()[0] == pytest.approx(0.0, abs=1e-4) and out.totals()[1] is None
    with pytest.raises(ValueError, match="per_joint needs kind='neg_mean'"):
        ReprojectionReward(per_joint=True)
    with pytest.raises(ValueError, match="kind must be one of"):
        ReprojectionReward(kind="inverse")
