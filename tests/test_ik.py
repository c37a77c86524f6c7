"""Inverse kinematics (posrft.body.ik, posrft.data.ik): round trips, Jacobian, bones, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import roma
import torch
from smplx.lbs import batch_rigid_transform

from posrft.body import ik as body_ik
from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS, custom_format, get_format
from posrft.cli import main as cli_main
from posrft.data import ik, limits
from posrft.data.prior import sample_poses
from posrft.data.skeleton import rest_joints

J = {n: i for i, n in enumerate(SMPL24_JOINTS)}


def _fk(rot: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Independent FK: smplx's own batch_rigid_transform, (B, 24, 3, 3) -> (B, 24, 3)."""
    b = rot.shape[0]
    rest = rest.expand(b, 24, 3) if rest.ndim == 2 else rest
    joints, _ = batch_rigid_transform(rot, rest, torch.tensor(SMPL24_PARENTS), dtype=rot.dtype)
    return joints


@pytest.fixture(scope="module")
def poses():
    s = sample_poses(120, seed=41, yaw_deg=180.0)
    rot = roma.rotvec_to_rotmat(torch.from_numpy(s.pose).double().reshape(-1, 24, 3))
    return rot, torch.from_numpy(s.joints).double()


@pytest.fixture(scope="module")
def fitted(poses):
    return ik.fit_smpl(poses[1], "smpl24")


def test_round_trip_on_prior_poses(poses, fitted):
    rot, joints = poses
    back = _fk(fitted.rotmats.double(), rest_joints(torch.float64)) + fitted.transl.double()[:, None]
    err = (back - joints).norm(dim=-1).mean(-1) * 1000
    assert float(err.mean()) < 0.5 and float(err.max()) < 1.0  # FK(IK(x)) within 1 mm
    scaled = _fk(fitted.rotmats.double(), _scaled_rest(fitted.bone_scale.double()))
    assert torch.allclose(fitted.joints.double(), scaled + fitted.transl.double()[:, None], atol=1e-5)
    assert float(fitted.mpjpe.max()) < 1e-3
    assert torch.allclose(fitted.bone_scale, torch.ones(1), atol=2e-3)
    errs = ik.rotation_errors(fitted.rotmats, rot)
    assert float(errs["observable"][:, :22].nanmean()) < 2.0
    assert float(errs["observable"][:, 0].max()) < 0.1  # the root is fixed by three children
    pose = roma.rotmat_to_rotvec(fitted.rotmats).reshape(-1, 72)
    assert limits.within_limits(pose, tol_deg=1.0).all()
    # the hinge initialisation recovers a bent knee's hip twist better than the swing alone
    bent = torch.rad2deg(limits.coords_from_rotmat(rot)[:, J["left_knee"], 0]) > 40
    plain = body_ik.inverse_kinematics(joints, "smpl24", rest_joints=rest_joints(torch.float64),
                                       iterations=0)  # fmt: skip
    hinged = body_ik.inverse_kinematics(joints, "smpl24", rest_joints=rest_joints(torch.float64),
                                        hinges=ik.HINGES, iterations=0)  # fmt: skip
    tw = lambda r: ik.rotation_errors(r.rotmats, rot)["twist"][bent, J["left_hip"]].mean()
    assert bent.sum() >= 10 and float(tw(hinged)) < 0.5 * float(tw(plain))


def test_rotation_error_split():
    torch.manual_seed(0)
    true = roma.random_rotmat((5, 24), dtype=torch.float64)
    rest = rest_joints(torch.float64)
    axis = rest[J["left_knee"]] - rest[J["left_hip"]]
    twist = roma.rotvec_to_rotmat(axis / axis.norm() * np.radians(12.0))
    swing = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, np.radians(5.0)], dtype=torch.float64))
    est = true.clone()
    est[:, J["left_hip"]] = true[:, J["left_hip"]] @ twist
    est[:, J["pelvis"]] = true[:, J["pelvis"]] @ swing
    e = ik.rotation_errors(est, true)
    assert torch.allclose(e["twist"][:, J["left_hip"]], torch.tensor(12.0, dtype=torch.float64))
    assert e["swing"][:, J["left_hip"]].abs().max() < 1e-6
    assert torch.allclose(e["observable"][:, J["pelvis"]], torch.tensor(5.0, dtype=torch.float64))
    assert torch.isnan(e["observable"][:, J["head"]]).all()


def test_joint_jacobian_matches_finite_differences(poses):
    rot, joints = poses
    b = 4
    y = joints[:b]
    w = torch.eye(24, dtype=torch.float64)
    for mode in ("none", "per_bone"):
        sd = torch.randn(24, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        prob = body_ik._Problem(y, torch.ones(b, 24, dtype=torch.float64), w,
                                rest_joints(torch.float64), sd * 0.02, None, mode, 0.01, 0.01,
                                torch.zeros(b, dtype=torch.float64))  # fmt: skip
        st = body_ik._State(rot[:b], torch.randn(b, 3, dtype=torch.float64) * 0.1,
                            torch.full((b,), 0.05, dtype=torch.float64),
                            torch.randn(b, 24, dtype=torch.float64) * 0.05,
                            torch.randn(b, 2, dtype=torch.float64))  # fmt: skip
        g, x, s = prob.forward(st)
        jac = prob._joint_jacobian(g, x, s)  # (B, 24, 3, P)
        h = 1e-6
        for p in range(prob.n_params):
            e = torch.zeros(b, prob.n_params, dtype=torch.float64)
            e[:, p] = h
            plus = prob.forward(prob.step(st, e))[1]
            minus = prob.forward(prob.step(st, -e))[1]
            fd = (plus - minus) / (2 * h)
            assert torch.allclose(jac[..., p], fd, atol=1e-6), (mode, p)


@pytest.mark.parametrize("fmt", ["h36m17", "ntu25", "coco17"])
def test_other_formats_of_the_same_skeleton(poses, fmt):
    _, joints = poses
    f = get_format(fmt)
    y = f.from_smpl(joints[:40])
    res = ik.fit_smpl(y, fmt)
    assert res.residual.shape == (40, f.num_joints)
    assert float(res.mpjpe.mean()) < 1e-3 and float(res.mpjpe.max()) < 5e-3
    assert torch.allclose(res.fitted.double(), torch.einsum(
        "ik,bkc->bic", torch.as_tensor(f.smpl_matrix()), res.joints.double()), atol=1e-5)


def test_bone_lengths_of_another_skeleton(poses):
    rot, _ = poses
    g = torch.Generator().manual_seed(3)
    rest = rest_joints(torch.float64)
    par = torch.tensor(SMPL24_PARENTS).clamp_min(0)
    bone = rest - rest[par]
    # (a) other bone lengths, same directions: a per-bone scale represents it exactly
    factor = 0.85 + 0.3 * torch.rand(24, generator=g, dtype=torch.float64)
    factor[0] = 1.0
    rest_a = _chain(bone * factor[:, None], rest[0])
    y = _fk(rot[:30], rest_a)
    per_bone = ik.fit_smpl(y, "smpl24")
    assert float(per_bone.mpjpe.max()) < 1e-3
    length_err = (per_bone.bone_scale.double() - factor).abs() * bone.norm(dim=-1)
    assert float(length_err.max()) < 1e-3  # every bone's length within 1 mm
    fixed = ik.fit_smpl(y, "smpl24", bone_scale="none")
    assert float(fixed.mpjpe.mean()) > 0.01  # the stand-in's bones cannot reach these joints
    # (b) other bone directions too (another joint definition): the residual is reported
    bent = bone + 0.08 * bone.norm(dim=-1, keepdim=True) * torch.randn(24, 3, generator=g,
                                                                      dtype=torch.float64)
    bent[0] = 0.0
    y_b = _fk(rot[:30], _chain(bent, rest[0]))
    res = ik.fit_smpl(y_b, "smpl24")
    mm = res.mpjpe * 1000
    assert 1.0 < float(mm.mean()) < 40.0 and torch.isfinite(res.residual).all()
    assert float(res.mpjpe.mean()) < float(fixed.mpjpe.mean()) * 2


def _chain(bones: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """Rest joints (..., 24, 3) from bone vectors (..., 24, 3) and the root position."""
    out = [root.expand_as(bones[..., 0, :])]
    for j in range(1, 24):
        out.append(out[SMPL24_PARENTS[j]] + bones[..., j, :])
    return torch.stack(out, -2)


def _scaled_rest(scale: torch.Tensor) -> torch.Tensor:
    rest = rest_joints(torch.float64)
    bone = rest - rest[torch.tensor(SMPL24_PARENTS).clamp_min(0)]
    return _chain(bone * scale[..., None], rest[0])


def test_shape_coefficients_of_the_body_model(poses):
    from posrft.body.model import BodyModel

    rot, _ = poses
    model = BodyModel("smpl", dtype=torch.float64)
    dirs = body_ik.joint_shape_dirs(model)
    betas = torch.zeros(10, 10, dtype=torch.float64)
    betas[:, 0] = torch.linspace(-1.5, 1.5, 10, dtype=torch.float64)
    rest = model.rest_joints(betas)
    y = _fk(rot[:10], rest)
    res = body_ik.inverse_kinematics(y, "smpl24", rest_joints=model.rest_joints()[0],
                                     bone_scale="none", shape_dirs=dirs, beta_weight=1e-4)  # fmt: skip
    assert float(res.mpjpe.max()) < 1e-3
    assert torch.allclose(res.betas[:, 0].double(), betas[:, 0], atol=0.02)


def test_missing_joints_and_confidence(poses):
    _, joints = poses
    y = get_format("h36m17").from_smpl(joints[:20]).clone()
    y[:5, 13] = float("nan")  # left wrist missing in 5 poses
    conf = torch.ones(20, 17)
    conf[5:10, 16] = 0.0  # right wrist ignored in 5 others
    res = ik.fit_smpl(y, "h36m17", confidence=conf)
    assert torch.isnan(res.residual[:5, 13]).all() and torch.isnan(res.residual[5:10, 16]).all()
    assert torch.isfinite(res.residual[10:]).all()
    assert float(res.mpjpe.max()) < 2e-3
    assert torch.isfinite(res.rotmats).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="h36m17"):
        ik.fit_smpl(torch.zeros(3, 24, 3), "h36m17")
    with pytest.raises(ValueError, match="no map from SMPL"):
        body_ik.inverse_kinematics(torch.zeros(2, 3, 3), custom_format([(0, 1), (1, 2)]))
    with pytest.raises(ValueError, match="bone_scale"):
        ik.fit_smpl(torch.zeros(2, 24, 3), bone_scale="sometimes")
    with pytest.raises(ValueError, match="confidence"):
        ik.fit_smpl(torch.zeros(2, 24, 3), confidence=torch.ones(2, 23))


def test_ik_command_writes_an_npz(tmp_path, poses, capsys):
    _, joints = poses
    src = tmp_path / "h36.npz"
    y = get_format("h36m17").from_smpl(joints[:12]).numpy()
    np.savez(src, joints=y, confidence=np.ones((12, 17), np.float32))
    out = tmp_path / "fit.npz"
    assert cli_main(["data", "ik", str(src), str(out), "--format", "h36m17"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 12 and summary["residual_mm_max"] < 1.0
    assert summary["within_limits"] == 1.0 and summary["poses_per_s"] > 0
    with np.load(out) as data:
        assert data["pose6d"].shape == (12, 144) and data["pose"].shape == (12, 72)
        assert data["residual"].shape == (12, 17) and data["mpjpe"].max() < 1e-3
        rot = roma.rotvec_to_rotmat(torch.from_numpy(data["pose"]).double().reshape(12, 24, 3))
        rest = _scaled_rest(torch.from_numpy(data["bone_scale"]).double())
        back = _fk(rot, rest) + torch.from_numpy(data["transl"]).double()[:, None]
        assert torch.allclose(back.float(), torch.from_numpy(data["smpl_joints"]), atol=1e-4)
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no temporary left behind
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 17, 2)))
    with pytest.raises(ValueError, match=r"bad\.npy.*\(N, 17, 3\)"):
        ik.ik_file(bad, tmp_path / "x.npz", "h36m17")
