"""Joint limits, plausibility checks and the key-pose prior (posrft.data: limits, prior...)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch
from smplx.lbs import batch_rigid_transform

from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS
from posrft.body.pose import pose_to_joints
from posrft.body.rotations import axis_angle_to_pose6d
from posrft.data import keyposes, limits, plausibility
from posrft.data.keyposes import spec_to_coords
from posrft.data.posecodes import heading
from posrft.data.prior import coverage_stats, sample_poses
from posrft.data.skeleton import pose_joints, rest_joints

J = {n: i for i, n in enumerate(SMPL24_JOINTS)}


def _pose(spec: dict) -> torch.Tensor:
    """A (1, 72) float64 axis-angle pose from a key-pose style dict in degrees."""
    c = torch.tensor(np.deg2rad(spec_to_coords(spec)), dtype=torch.float64)
    return limits.pose_from_coords(c).reshape(1, 72)


def _rot(axis: int, deg: torch.Tensor) -> torch.Tensor:
    v = torch.zeros(*deg.shape, 3, dtype=deg.dtype)
    v[..., axis] = torch.deg2rad(deg)
    return roma.rotvec_to_rotmat(v)


@pytest.fixture(scope="module")
def samples():
    return sample_poses(600, seed=11)


# ------------------------------------------------------------------------- anatomical coords


def test_coords_round_trip_and_definitions():
    torch.manual_seed(0)
    rot = roma.random_rotmat((64, 24), dtype=torch.float64)
    c = limits.coords_from_rotmat(rot)
    back = limits.rotmat_from_coords(c)
    assert torch.allclose(back, rot, atol=1e-9)
    deg = torch.rad2deg(c)
    for j, kind in enumerate(limits.DECOMPOSITION):
        if kind == "XZY":  # R = Rx(c_x) Rz(c_z) Ry(c_y), composed here from single-axis rotations
            ref = _rot(0, deg[:, j, 0]) @ _rot(2, deg[:, j, 2]) @ _rot(1, deg[:, j, 1])
        elif kind == "XYZ":
            ref = _rot(0, deg[:, j, 0]) @ _rot(1, deg[:, j, 1]) @ _rot(2, deg[:, j, 2])
        else:  # swing (perpendicular to x) then twist about x
            swing = c[:, j].clone()
            swing[:, 0] = 0
            ref = roma.rotvec_to_rotmat(swing) @ _rot(0, deg[:, j, 0])
        assert torch.allclose(ref, rot[:, j], atol=1e-9), SMPL24_JOINTS[j]


def test_single_axis_rotation_coords_equal_axis_angle():
    angles = torch.tensor([-70.0, -20.0, 35.0, 80.0], dtype=torch.float64)
    for axis in range(3):
        aa = torch.zeros(4, 24, 3, dtype=torch.float64)
        aa[..., axis] = torch.deg2rad(angles)[:, None]
        c = limits.anatomical_coords(aa)
        assert torch.allclose(c, aa, atol=1e-9)


def test_mirror_pose_mirrors_joints_and_limits(samples):
    pose = torch.from_numpy(samples.pose[:50]).double()
    mirrored = limits.mirror_pose(pose).reshape(50, 72)
    j = pose_joints(pose)
    jm = pose_joints(mirrored)
    expect = j[:, limits.MIRROR_PERM] * torch.tensor([-1.0, 1.0, 1.0], dtype=j.dtype)
    assert torch.allclose(jm, expect, atol=1e-6)  # the stand-in skeleton is symmetric
    assert limits.within_limits(mirrored).all()
    c, cm = limits.anatomical_coords(pose), limits.anatomical_coords(mirrored)
    assert torch.allclose(cm, c[:, limits.MIRROR_PERM] * torch.tensor([1.0, -1.0, -1.0]), atol=1e-6)


# ------------------------------------------------------------------------- limits


def test_limits_reject_hand_made_bad_poses():
    bad = {
        "knee bent backwards": ({"l_knee": (-40, 0, 0)}, "left_knee.x"),
        "right knee bent backwards": ({"r_knee": (-30, 0, 0)}, "right_knee.x"),
        "left elbow hyperextended": ({"l_elbow": (0, 40, 0)}, "left_elbow.y"),
        "right elbow hyperextended": ({"r_elbow": (0, 40, 0)}, "right_elbow.y"),
        "knee bent sideways": ({"l_knee": (30, 0, 35)}, "left_knee.z"),
        "head turned round": ({"head": (0, 120, 0)}, "head.y"),
    }
    for name, (spec, where) in bad.items():
        p = _pose(spec)
        assert not bool(limits.within_limits(p)), name
        msgs = limits.describe_violations(p[0])
        assert any(m.startswith(where) for m in msgs), (name, msgs)
    good = {"l_knee": (120, 0, 0), "r_knee": (90, 0, 0), "l_elbow": (0, -130, 0),
            "r_elbow": (0, -90, 0), "l_hip": (-90, 20, 30), "spine": (30, 0, 0)}  # fmt: skip
    assert bool(limits.within_limits(_pose(good)))


def test_flexion_signs_match_anatomy():
    """The allowed direction really is flexion: the shank swings back, the forearm forward."""
    j = pose_joints(_pose({"l_knee": (60, 0, 0), "r_elbow": (0, -60, 0), "l_hip": (-60, 0, 0)}))[0]
    knee_to_ankle = j[J["left_ankle"]] - j[J["left_knee"]]
    hip_to_knee = j[J["left_knee"]] - j[J["left_hip"]]
    assert hip_to_knee[2] > 0.25  # hip flexion lifts the thigh forward (+z)
    # 60 deg knee flexion from a 60 deg flexed thigh leaves the shank vertical
    assert abs(knee_to_ankle[2]) < 0.05 and knee_to_ankle[1] < -0.35
    assert (j[J["right_wrist"]] - j[J["right_elbow"]])[2] > 0.15  # forearm forward


def test_reflect_coords_folds_back_into_the_box():
    box = limits.limits_rad(torch.float64)
    lo, hi = box[..., 0], box[..., 1]
    inside = lo + 0.3 * (hi - lo)
    assert torch.equal(limits.reflect_coords(inside), inside)
    d = torch.full_like(lo, 0.01)
    assert torch.allclose(limits.reflect_coords(lo - d)[1:22], (lo + d)[1:22])
    assert torch.allclose(limits.reflect_coords(hi + d)[1:22], (hi - d)[1:22])
    far = limits.reflect_coords(hi + 10.0)
    assert ((far >= lo) & (far <= hi)).all()


def test_limit_violation_is_a_differentiable_penalty():
    p = _pose({"l_knee": (-40, 0, 0)}).requires_grad_(True)
    v = limits.limit_violation(p)
    assert v[0, J["left_knee"], 0].item() == pytest.approx(math.radians(35), abs=1e-6)
    assert (v.sum() - v[0, J["left_knee"], 0]).abs() < 1e-9
    v.sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert limits.limit_violation(_pose({"l_knee": (40, 0, 0)})).abs().max() == 0


def test_bad_pose_shape_is_rejected():
    with pytest.raises(ValueError, match="expected axis-angle"):
        limits.anatomical_coords(torch.zeros(2, 70))


# ------------------------------------------------------------------------- plausibility


def test_segment_distance_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    p0, p1, q0, q1 = (torch.randn(300, 3, generator=g, dtype=torch.float64) for _ in range(4))
    # parallel and degenerate cases
    p1[:20] = p0[:20] + (q1[:20] - q0[:20])
    q1[20:30] = q0[20:30]
    p1[30:40] = p0[30:40]
    d = plausibility.segment_distance(p0, p1, q0, q1)
    s = torch.linspace(0, 1, 401, dtype=torch.float64)
    a = p0[:, None] + s[None, :, None] * (p1 - p0)[:, None]  # (N, S, 3)
    b = q0[:, None] + s[None, :, None] * (q1 - q0)[:, None]
    brute = torch.cdist(a, b).amin((1, 2))
    assert torch.all(d <= brute + 1e-9)
    assert torch.allclose(d, brute, atol=5e-3)


def test_penetration_detects_hand_made_collisions():
    rest = pose_joints(torch.zeros(1, 72))
    assert not plausibility.self_penetrating(rest).any()
    # within the joint limits, yet the hand goes into the chest
    hand_in_chest = _pose({"l_shoulder": (80, -10, -40), "l_elbow": (0, -150, 0)})
    assert bool(limits.within_limits(hand_in_chest))
    pairs = plausibility.penetrating_pairs(pose_joints(hand_in_chest)[0])
    assert ("chest", "left_hand") in pairs
    # an arm swung through the head (also out of limits)
    arm_in_head = pose_joints(_pose({"l_shoulder": (0, 0, 135)}))[0]
    assert ("head", "left_upperarm") in plausibility.penetrating_pairs(arm_in_head)


def test_support_heights_and_balance():
    j = pose_joints(torch.zeros(1, 72))
    h = plausibility.support_heights(j)[0]
    assert h.min() == 0 and h[J["left_foot"]] < 0.01 and h[J["right_foot"]] < 0.01
    assert h[J["head"]] > 1.4
    assert plausibility.balanced(j).all()
    leaning = pose_joints(_pose({"root": (40, 0, 0), "hip": (-40, 0, 0), "spine": (50, 0, 0)}))
    assert not plausibility.balanced(leaning).any()  # upper body far in front of the feet


# ------------------------------------------------------------------------- prior


def test_fk_agrees_with_smplx_and_the_body_layer(samples):
    pose = torch.from_numpy(samples.pose[:20]).double()
    ours = pose_joints(pose)
    rot = roma.rotvec_to_rotmat(pose.reshape(20, 24, 3))
    rest = rest_joints(torch.float64)[None].expand(20, 24, 3)
    ref, _ = batch_rigid_transform(rot, rest, torch.tensor(SMPL24_PARENTS), dtype=torch.float64)
    assert torch.allclose(ours, ref, atol=1e-9)
    body = pose_to_joints(None)(axis_angle_to_pose6d(pose[:, :66].float()))
    assert torch.allclose(ours.float(), body, atol=1e-5)
    assert torch.allclose(torch.from_numpy(samples.joints[:20]).double(), ours, atol=1e-5)


def test_key_poses_are_valid():
    for kp in keyposes.key_poses():
        c = torch.tensor(np.deg2rad(kp.coords_deg()))
        p = limits.pose_from_coords(c).reshape(1, 72)
        assert bool(limits.within_limits(p)), (kp.name, limits.describe_violations(p[0]))
        assert not plausibility.self_penetrating(pose_joints(p)).any(), kp.name
    assert len(keyposes.families()) >= 25


def test_prior_samples_are_plausible(samples):
    pose = torch.from_numpy(samples.pose)
    assert samples.pose.shape == (600, 72) and samples.pose.dtype == np.float32
    assert samples.joints.shape == (600, 24, 3)
    assert limits.within_limits(pose, tol_deg=1.0).all()
    assert not plausibility.self_penetrating(torch.from_numpy(samples.joints)).any()
    assert np.all(samples.pose[:, 66:] == 0)  # hands identity
    assert len(set(samples.family)) >= 25 and len(samples.key_pose) == 600
    static_families = {"standing", "squatting", "lunging", "yoga"}
    static = [i for i, f in enumerate(samples.family) if f in static_families]
    assert plausibility.balanced(torch.from_numpy(samples.joints[static]), tol=0.05).all()
    # standing poses stand on both feet
    stand = [i for i, f in enumerate(samples.family) if f == "standing"]
    h = plausibility.support_heights(torch.from_numpy(samples.joints[stand]))
    feet = torch.stack([h[:, [J["left_ankle"], J["left_foot"]]].amin(1),
                        h[:, [J["right_ankle"], J["right_foot"]]].amin(1)], 1)  # fmt: skip
    assert (feet < 0.05).all()


def test_prior_is_deterministic_and_prefix_stable():
    a = sample_poses(80, seed=3)
    b = sample_poses(80, seed=3)
    c = sample_poses(30, seed=3)
    d = sample_poses(80, seed=4)
    assert np.array_equal(a.pose, b.pose) and a.key_pose == b.key_pose
    assert np.array_equal(a.pose[:30], c.pose) and a.key_pose[:30] == c.key_pose
    assert not np.allclose(a.pose, d.pose)


def test_yaw_spread():
    canon = sample_poses(200, seed=5, yaw_deg=0.0)
    spread = sample_poses(200, seed=5, yaw_deg=180.0)
    h0 = np.degrees(np.abs(heading(canon.joints)))
    h1 = np.degrees(heading(spread.joints))
    assert np.percentile(h0, 95) < 25
    assert np.histogram(h1, bins=4, range=(-180, 180))[0].min() > 25


def test_coverage_stats(samples):
    st = coverage_stats(samples, max_pairs=200)
    assert st["n"] == 600
    assert sum(st["family_counts"].values()) == 600
    assert 0.5 < st["mean_coverage"] <= 1.0
    assert 0.0 <= st["rejection_rate"] < 0.6
    assert set(st["rejection_by_reason"]) >= {"limits", "penetration", "contact", "balance"}
    assert st["mpjpe_mean_mm"] > 150 and 0 < st["mpjpe_nn_mm"] < st["mpjpe_mean_mm"]
    lo, hi, frac = st["joint_coverage"]["left_knee"]["x"]
    assert lo >= -5.5 and hi > 120 and frac > 0.7


def test_sample_poses_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        sample_poses(-1)
    with pytest.raises(RuntimeError, match="accepted"):
        sample_poses(600, seed=0, max_candidates=512)  # at most 512 candidates for 600 poses


# ------------------------------------------------------------------------- second library


def test_second_library_adds_motion_phases_and_transitions():
    from posrft.data.prior import library

    v1, v2 = library(1), library(2)
    new = set(v2.families) - set(v1.families)
    assert new == {"leaning", "sports"} and set(v1.names) < set(v2.names)
    assert len(keyposes.families(version=1)) + 2 == len(keyposes.families())
    part = lambda lib, a: {lib.names[j] for j in lib.partners[lib.names.index(a)]}  # noqa: E731
    assert {"stand", "jump_land_deep", "jump_fall_arms_forward"} <= part(v2, "jump_land")
    assert "jump_load_arms_back" in part(v2, "stand") and "jump_land" not in part(v1, "stand")
    assert "hop_land_m" in part(v2, "run_stance_m")  # mirror images pair with mirror images
    for lib in (v1, v2):
        for i, partners in enumerate(lib.partners):
            assert all(lib.tilt[j] == lib.tilt[i] for j in partners), lib.names[i]


def test_first_library_is_reproduced():
    # the first values of sample_poses(200, seed=3) before the second library existed
    s = sample_poses(200, seed=3, version=1)
    assert np.allclose(s.pose[0, :3], [0.01733322, 0.38027155, -0.05326294], atol=1e-6)
    assert np.allclose(s.pose[1, :3], [-0.02975582, 0.75970185, 0.0374797], atol=1e-6)
    assert s.key_pose[:3] == ["lean_back", "walk_push_off_m", "arms_crossed"]


def test_airborne_poses_float_above_their_floor():
    from posrft.data.prior import FLIGHT_M

    s = sample_poses(1500, seed=8)
    lowest = (s.joints[..., 1] - plausibility.SUPPORT_OFFSET.numpy()).min(-1)
    lift = lowest - s.ground
    air = s.airborne
    assert 20 < air.sum() < 300
    assert np.allclose(lift[~air], 0.0, atol=1e-6)
    assert (lift[air] >= FLIGHT_M[0] - 1e-6).all() and (lift[air] <= FLIGHT_M[1] + 1e-6).all()
    assert {s.family[i] for i in np.flatnonzero(air)} <= {"jumping", "running"}
    # the floor does not change the poses: the same seed gives the same poses as ever
    assert np.array_equal(sample_poses(40, seed=8).pose, s.pose[:40])


def test_coverage_nearest_neighbour_is_exact():
    from posrft.data.action_classes import action_names
    from posrft.data.coverage import canonical, coverage, heldout_action_poses, nearest_mpjpe

    ref = canonical(sample_poses(300, seed=12).joints)
    held, labels = heldout_action_poses(subjects=1, frames=4)
    assert held.shape == (len(action_names()) * 4, 24, 3) and len(labels) == len(held)
    q = canonical(held)
    d, idx = nearest_mpjpe(q, ref)
    brute = np.linalg.norm(q[:, None] - ref[None], axis=-1).mean(-1) * 1000  # (Q, N) mm
    assert np.allclose(d, brute.min(1), atol=1e-3)  # float32: 1 micrometre
    assert np.allclose(brute[np.arange(len(q)), idx], d, atol=1e-3)
    d_self, i_self = nearest_mpjpe(ref[:50], ref, exclude_self=True)
    brute_self = np.linalg.norm(ref[:50, None] - ref[None], axis=-1).mean(-1) * 1000
    brute_self[np.arange(50), np.arange(50)] = np.inf
    assert np.allclose(d_self, brute_self.min(1), atol=1e-3) and (i_self != np.arange(50)).all()
    c = coverage(sample_poses(300, seed=12).joints, ["x"] * 300, held, labels, self_queries=50)
    assert c["nn_mm_median"] == pytest.approx(float(np.median(d)))
    assert 0 <= c["frac_beyond_self_p90"] <= 1 and 0 < c["moving_poses"] < len(held)
