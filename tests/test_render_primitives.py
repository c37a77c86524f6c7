"""Primitive layout and skinning: positions follow the joints, covariances follow the bones."""

from __future__ import annotations

import torch

from posrft.body.formats import NTU25, custom_format
from posrft.render.primitives import build_layout, samples_per_bone_counts, skin


def test_layout_and_linear_blend_skinning():
    fmt = custom_format([(0, 1), (1, 2)])
    layout = build_layout(fmt, [3, 1])
    assert layout.num_primitives == 3 + 3 + 1
    assert layout.t.tolist() == [0, 0, 0, 0.25, 0.5, 0.75, 0.5]
    joints = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.4, 0.0], [0.3, 0.4, 0.0]], dtype=torch.float64)
    means, _ = skin(joints, layout, 0.15, 0.7, 0.1)
    torch.testing.assert_close(means[:3], joints)
    torch.testing.assert_close(means[3:6, 1], torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    torch.testing.assert_close(means[6], torch.tensor([0.15, 0.4, 0.0], dtype=torch.float64))
    # rigidly moving the skeleton moves every primitive the same way
    shift = torch.tensor([0.2, -1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(skin(joints + shift, layout, 0.15, 0.7, 0.1)[0], means + shift)


def test_covariances_are_elongated_along_bones_and_isotropic_at_joints():
    fmt = NTU25
    layout = build_layout(fmt, samples_per_bone_counts(fmt, 10))
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(25, 3, generator=g, dtype=torch.float64) * 0.3
    _, cov = skin(joints, layout, 0.15, 0.7, 0.1)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    J = fmt.num_joints
    torch.testing.assert_close(evals[:J, 0], evals[:J, 2])  # joints: isotropic
    for p in range(J, layout.num_primitives):
        a, b = int(layout.joint_a[p]), int(layout.joint_b[p])
        d = (joints[b] - joints[a]) / (joints[b] - joints[a]).norm()
        assert evals[p, 2] > 1.5 * evals[p, 1]  # (1.25x in sigma) anisotropic
        torch.testing.assert_close(evals[p, 0], evals[p, 1])  # round cross-section
        assert abs(float(evecs[p, :, 2] @ d)) > 1 - 1e-9  # long axis = bone direction
    # rotating the skeleton rotates the covariances: R Sigma R^T
    Q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    _, cov_r = skin(joints @ Q.T, layout, 0.15, 0.7, 0.1)
    torch.testing.assert_close(cov_r, Q @ cov @ Q.T)


def test_length_proportional_samples():
    ref = torch.zeros(3, 3)
    ref[1, 1], ref[2, 1] = 0.5, 0.6
    fmt = custom_format([(0, 1), (1, 2)])
    assert samples_per_bone_counts(fmt, "length", density=20.0, reference_joints=ref) == [10, 2]
