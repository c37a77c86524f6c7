"""posrft.body.fk: agreement with smplx, with the full body model, and with a naive reference."""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch
from smplx.lbs import batch_rigid_transform

from posrft.body import BodyModel, JointFK, fk_from_axis_angle, fk_from_pose6d, fk_joints
from posrft.body.fk import BATCH_INNERMOST_MIN, build_schedule
from posrft.body.formats import SMPL24_PARENTS
from posrft.body.rotations import rotmat_to_axis_angle_pose, rotmat_to_pose6d
from posrft.body.standin import standin_rest_joints

PARENTS = torch.tensor(SMPL24_PARENTS)


def naive_fk(rotmats: np.ndarray, rest: np.ndarray, parents: list[int]) -> np.ndarray:
    """Per-joint 4x4 chain, recursion over parents in any order (float64 numpy)."""
    batch, n = rotmats.shape[:2]
    rest = np.broadcast_to(rest, (batch, n, 3))
    out = np.zeros((batch, n, 3))
    for b in range(batch):
        glob: dict[int, np.ndarray] = {}

        def world(j: int) -> np.ndarray:
            if j not in glob:
                local = np.eye(4)
                local[:3, :3] = rotmats[b, j]
                p = parents[j]
                local[:3, 3] = rest[b, j] - (rest[b, p] if p >= 0 else 0.0)
                glob[j] = (world(p) if p >= 0 else np.eye(4)) @ local
            return glob[j]

        for j in range(n):
            out[b, j] = world(j)[:3, 3]
    return out


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def test_matches_smplx_on_standin_skeleton(gen: torch.Generator) -> None:
    rot = roma.random_rotmat((256, 24), generator=gen)
    rest = torch.tensor(standin_rest_joints(), dtype=torch.float32)
    ref = batch_rigid_transform(rot, rest.expand(256, 24, 3), PARENTS)[0]
    torch.testing.assert_close(fk_joints(rot, rest, SMPL24_PARENTS), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(JointFK(SMPL24_PARENTS, rest)(rot), ref, atol=1e-5, rtol=0)


# Batch sizes on both sides of BATCH_INNERMOST_MIN exercise both kernels.
BATCHES = [5, BATCH_INNERMOST_MIN + 3]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("per_sample", [False, True])
def test_matches_smplx_on_random_rest_joints(gen, per_sample: bool, batch: int) -> None:
    rot = roma.random_rotmat((batch, 24), generator=gen)
    shape = (batch, 24, 3) if per_sample else (24, 3)
    rest = 0.3 * torch.randn(shape, generator=gen)
    ref = batch_rigid_transform(rot, rest.expand(batch, 24, 3), PARENTS)[0]
    torch.testing.assert_close(fk_joints(rot, rest, PARENTS), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch", BATCHES)
def test_float64_is_exact_to_rounding(gen: torch.Generator, batch: int) -> None:
    rot = roma.random_rotmat((batch, 24), dtype=torch.float64, generator=gen)
    rest = torch.randn(24, 3, dtype=torch.float64, generator=gen)
    ref = batch_rigid_transform(rot, rest.expand(batch, 24, 3), PARENTS, dtype=torch.float64)[0]
    torch.testing.assert_close(fk_joints(rot, rest, SMPL24_PARENTS), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("batch", BATCHES)
def test_gradients_match_smplx(gen: torch.Generator, batch: int) -> None:
    rot = roma.random_rotmat((batch, 24), dtype=torch.float64, generator=gen)
    rest = torch.randn(batch, 24, 3, dtype=torch.float64, generator=gen)
    weight = torch.randn(batch, 24, 3, dtype=torch.float64, generator=gen)
    grads = []
    for use_smplx in (True, False):
        r, j = rot.clone().requires_grad_(), rest.clone().requires_grad_()
        if use_smplx:
            out = batch_rigid_transform(r, j, PARENTS, dtype=torch.float64)[0]
        else:
            out = fk_joints(r, j, PARENTS)
        (out * weight).sum().backward()
        grads.append((r.grad, j.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])


@pytest.mark.parametrize("batch", [2, BATCH_INNERMOST_MIN])
def test_gradcheck_against_finite_differences(gen: torch.Generator, batch: int) -> None:
    parents = [-1, 0, 1, 1, 3]
    rot = roma.random_rotmat((batch, 5), dtype=torch.float64, generator=gen).requires_grad_()
    rest = torch.randn(5, 3, dtype=torch.float64, generator=gen).requires_grad_()
    # fast_mode checks random directional derivatives: the full Jacobian is slow at batch 128.
    fast = batch >= BATCH_INNERMOST_MIN
    fn = lambda r, j: fk_joints(r, j, parents)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (rot, rest), fast_mode=fast)


@pytest.mark.parametrize(
    "parents",
    [
        [-1, 0, 1, 2, 3],  # a 5-joint chain
        [3, -1, 1, -1, 0, 1, 5],  # a forest with parents after children
        [-1],  # a single joint
    ],
)
@pytest.mark.parametrize("batch", BATCHES)
def test_arbitrary_trees_match_naive_reference(gen, parents: list[int], batch: int) -> None:
    n = len(parents)
    rot = roma.random_rotmat((batch, n), dtype=torch.float64, generator=gen)
    rest = torch.randn(n, 3, dtype=torch.float64, generator=gen)
    ref = naive_fk(rot.numpy(), rest.numpy(), parents)
    np.testing.assert_allclose(fk_joints(rot, rest, parents).numpy(), ref, atol=1e-12)


def test_schedule_levels_of_smpl() -> None:
    sched = build_schedule(SMPL24_PARENTS)
    assert len(sched.levels) == 9  # pelvis .. spine .. collar .. shoulder .. elbow .. wrist .. hand
    assert sorted(sched.order.tolist()) == list(range(24))
    assert set(sched.rot_joints.tolist()) == set(SMPL24_PARENTS) - {-1}  # leaves need no rotation


def test_pose6d_axis_angle_and_transl_entry_points(gen: torch.Generator) -> None:
    rot = roma.random_rotmat((8, 24), dtype=torch.float64, generator=gen)
    rest = torch.tensor(standin_rest_joints())
    transl = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    ref = fk_joints(rot, rest, PARENTS) + transl[:, None]
    torch.testing.assert_close(fk_from_pose6d(rotmat_to_pose6d(rot), rest, PARENTS, transl), ref)
    aa = rotmat_to_axis_angle_pose(rot)
    torch.testing.assert_close(fk_from_axis_angle(aa, rest, PARENTS, transl), ref)
    fk = JointFK(SMPL24_PARENTS, rest)
    torch.testing.assert_close(fk.from_pose6d(rotmat_to_pose6d(rot), transl), ref)
    torch.testing.assert_close(fk.from_axis_angle(rotmat_to_axis_angle_pose(rot), transl), ref)


def test_matches_full_body_model_forward(gen: torch.Generator, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POSRFT_CACHE", str(tmp_path))
    monkeypatch.delenv("POSRFT_BODY_MODELS", raising=False)
    model = BodyModel()
    rot = roma.random_rotmat((32, 24), generator=gen)
    out = model(rot[:, :1], rot[:, 1:])
    fast = fk_joints(rot, model.rest_joints()[0], model.parents)
    torch.testing.assert_close(fast, out.joints, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("parents", "match"),
    [
        ([-1, 0, 5], r"parents\[2\] = 5"),
        ([1, 0], "cycle"),
        ([-1, 1], "its own parent"),
        ([], "empty"),
    ],
)
def test_bad_trees_raise(parents: list[int], match: str) -> None:
    n = max(len(parents), 1)
    with pytest.raises(ValueError, match=match):
        fk_joints(torch.eye(3).expand(1, n, 3, 3), torch.zeros(n, 3), parents)


def test_bad_shapes_raise() -> None:
    eye = torch.eye(3).expand(2, 24, 3, 3)
    with pytest.raises(ValueError, match=r"rotmats: expected shape \(B, J, 3, 3\)"):
        fk_joints(torch.zeros(2, 24, 9), torch.zeros(24, 3), PARENTS)
    with pytest.raises(ValueError, match="has 22 joints but the tree"):
        fk_joints(eye[:, :22], torch.zeros(24, 3), PARENTS)
    with pytest.raises(ValueError, match=r"rest_joints: expected shape \(24, 3\) or \(2, 24, 3\)"):
        fk_joints(eye, torch.zeros(3, 24, 3), PARENTS)
    with pytest.raises(ValueError, match="transl"):
        fk_joints(eye, torch.zeros(24, 3), PARENTS, transl=torch.zeros(2, 4))
