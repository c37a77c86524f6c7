"""posrft.body.rotations: conventions checked against closed forms and against roma."""

from __future__ import annotations

import math

import pytest
import roma
import torch

from posrft.body import rotations as rot


def rot_z(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def rot_x(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_axis_angle_about_z_matches_closed_form() -> None:
    theta = 0.7
    aa = torch.tensor([0.0, 0.0, theta], dtype=torch.float64)
    torch.testing.assert_close(rot.axis_angle_to_rotmat(aa), rot_z(theta))
    torch.testing.assert_close(rot.rotmat_to_axis_angle(rot_z(theta)), aa)


def test_axis_angle_round_trip_and_roma(gen: torch.Generator) -> None:
    axis = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(50, 1, generator=gen, dtype=torch.float64) * 3.0  # < pi: unique rotvec
    aa = axis * angle
    mats = rot.axis_angle_to_rotmat(aa)
    torch.testing.assert_close(mats, roma.rotvec_to_rotmat(aa))
    torch.testing.assert_close(rot.rotmat_to_axis_angle(mats), aa)


def test_quaternion_is_xyzw() -> None:
    theta = 1.1
    q = torch.tensor([0.0, 0.0, math.sin(theta / 2), math.cos(theta / 2)], dtype=torch.float64)
    torch.testing.assert_close(rot.quat_to_rotmat(q), rot_z(theta))
    q_x = torch.tensor([math.sin(0.3), 0.0, 0.0, math.cos(0.3)], dtype=torch.float64)
    torch.testing.assert_close(rot.quat_to_rotmat(q_x), rot_x(0.6))


def test_quaternion_round_trip_up_to_sign(gen: torch.Generator) -> None:
    q = roma.random_unitquat(40, dtype=torch.float64, generator=gen)
    back = rot.rotmat_to_quat(rot.quat_to_rotmat(q))
    sign = torch.sign((q * back).sum(-1, keepdim=True))
    torch.testing.assert_close(back * sign, q)


def test_rot6d_identity_and_closed_form() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(
        rot.rotmat_to_rot6d(eye), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    )
    c, s = math.cos(0.4), math.sin(0.4)
    # First two columns of Rz, row-major over the 3x2 block: [R00, R01, R10, R11, R20, R21].
    expected = torch.tensor([c, -s, s, c, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(rot.rotmat_to_rot6d(rot_z(0.4)), expected)
    torch.testing.assert_close(rot.rot6d_to_rotmat(expected), rot_z(0.4))
    ident = torch.tensor([[1.0, 0, 0, 1, 0, 0] * 2] * 3)
    torch.testing.assert_close(rot.identity_pose6d(2, 3), ident)


def test_rot6d_gram_schmidt_is_a_rotation(gen: torch.Generator) -> None:
    x = torch.randn(100, 6, generator=gen, dtype=torch.float64)
    r = rot.rot6d_to_rotmat(x)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    torch.testing.assert_close(r.transpose(-1, -2) @ r, eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(100, dtype=torch.float64))
    # Independent Gram-Schmidt: column 0 = a/|a|, column 1 = normalised b minus its a part.
    a, b = x[:, 0::2], x[:, 1::2]
    e0 = a / a.norm(dim=-1, keepdim=True)
    b_perp = b - (b * e0).sum(-1, keepdim=True) * e0
    torch.testing.assert_close(r[..., 0], e0)
    torch.testing.assert_close(r[..., 1], b_perp / b_perp.norm(dim=-1, keepdim=True))


def test_rot6d_round_trip(gen: torch.Generator) -> None:
    mats = roma.random_rotmat(30, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(rot.rot6d_to_rotmat(rot.rotmat_to_rot6d(mats)), mats)


def test_pose_helpers_shapes_and_round_trips(gen: torch.Generator) -> None:
    mats = roma.random_rotmat((4, 24), dtype=torch.float64, generator=gen)
    p6 = rot.rotmat_to_pose6d(mats)
    assert p6.shape == (4, 144)
    torch.testing.assert_close(p6[:, 6:12], rot.rotmat_to_rot6d(mats[:, 1]))
    torch.testing.assert_close(rot.pose6d_to_rotmat(p6, num_joints=24), mats)
    aa = rot.pose6d_to_axis_angle(p6)
    assert aa.shape == (4, 72)
    torch.testing.assert_close(aa.view(4, 24, 3), roma.rotmat_to_rotvec(mats))
    torch.testing.assert_close(rot.axis_angle_to_pose6d(aa), p6)
    torch.testing.assert_close(rot.axis_angle_pose_to_rotmat(aa), mats)
    torch.testing.assert_close(rot.rotmat_to_axis_angle_pose(mats), aa)


def test_rot6d_is_differentiable(gen: torch.Generator) -> None:
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot.rot6d_to_rotmat, (x,))


@pytest.mark.parametrize(
    ("fn", "arg", "err", "match"),
    [
        (rot.axis_angle_to_rotmat, torch.zeros(2, 4), ValueError, r"axis_angle: .*\(\.\.\., 3\)"),
        (rot.rot6d_to_rotmat, torch.zeros(2, 5), ValueError, r"rot6d: .*\(\.\.\., 6\)"),
        (rot.quat_to_rotmat, torch.zeros(3, 3), ValueError, r"quat: expected shape \(\.\.\., 4\)"),
        (rot.rotmat_to_rot6d, torch.zeros(3, 2, 3), ValueError, r"rotmat: .*\(\.\.\., 3, 3\)"),
        (rot.pose6d_to_rotmat, torch.zeros(2, 143), ValueError, "not a multiple of 6"),
        (rot.axis_angle_pose_to_rotmat, torch.zeros(2, 70), ValueError, "not a multiple of 3"),
        (rot.axis_angle_to_rotmat, torch.zeros(2, 3, dtype=torch.long), TypeError, "floating"),
        (rot.rotmat_to_rot6d, [[1.0, 0.0, 0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_shapes_raise_clear_errors(fn, arg, err, match) -> None:
    with pytest.raises(err, match=match):
        fn(arg)


def test_joint_count_is_checked() -> None:
    with pytest.raises(ValueError, match="expected 24 joints"):
        rot.pose6d_to_rotmat(torch.zeros(2, 22 * 6), num_joints=24)
