"""posrft.body.model.BodyModel: file resolution, stand-in fallback, forward, fast joints."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from posrft.body import BodyModel, fk_joints
from posrft.body.rotations import rotmat_to_axis_angle_pose
from posrft.body.standin import build_standin, standin_rest_joints


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache, no user body-model folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSRFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("POSRFT_BODY_MODELS", raising=False)
        yield mp


@pytest.fixture(scope="module")
def model(env) -> BodyModel:
    return BodyModel()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(2)


def random_pose(gen: torch.Generator, batch: int, joints: int = 23):
    go = 0.5 * torch.randn(batch, 3, generator=gen)
    bp = 0.4 * torch.randn(batch, joints * 3, generator=gen)
    return go, bp


def test_standin_fallback_warns(env, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="posrft.body"):
        m = BodyModel()
    assert m.is_standin and m.model_path.name == "SMPL_NEUTRAL.pkl"
    messages = [r.getMessage() for r in caplog.records]
    assert any("STAND-IN" in m and "NOT THE LICENSED SMPL" in m for m in messages)
    assert not [p for p in m.parameters() if p.requires_grad]  # frozen


def test_forward_shapes_and_rest(model: BodyModel, gen: torch.Generator) -> None:
    go, bp = random_pose(gen, 5)
    out = model(go, bp)
    assert out.joints.shape == (5, 24, 3) and out.vertices is None
    assert out.full_joints.shape[1] > 24  # smplx's extra vertex joints
    assert model(go, bp, return_verts=True).vertices.shape == (5, 6890, 3)
    assert model.parents.tolist()[:4] == [-1, 0, 0, 0] and model.num_joints == 24
    rest = model.rest_joints()
    assert rest.shape == (1, 24, 3)
    torch.testing.assert_close(rest[0], torch.tensor(standin_rest_joints(), dtype=torch.float32))


def test_rotmat_and_axis_angle_inputs_agree(model: BodyModel, gen: torch.Generator) -> None:
    rot = roma.random_rotmat((4, 24), generator=gen)
    by_rot = model(rot[:, 0], rot[:, 1:]).joints  # (B, 3, 3) global orientation accepted
    aa = rotmat_to_axis_angle_pose(rot)
    by_aa = model(aa[:, :3], aa[:, 3:]).joints
    torch.testing.assert_close(by_rot, by_aa, atol=1e-5, rtol=0)


def test_joints_only_matches_forward(model: BodyModel, gen: torch.Generator) -> None:
    go, bp = random_pose(gen, 16)
    betas = torch.randn(16, 10, generator=gen)
    transl = torch.randn(16, 3, generator=gen)
    ref = model(go, bp, betas=betas, transl=transl).joints
    fast = model.joints_only(go, bp, betas=betas, transl=transl)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
    shifted = model(go, bp, transl=transl).joints - model(go, bp).joints
    torch.testing.assert_close(shifted, transl[:, None].expand(16, 24, 3), atol=1e-6, rtol=0)


def test_rest_joints_follow_betas(model: BodyModel, gen: torch.Generator) -> None:
    betas = torch.randn(3, 10, generator=gen)
    zero = model(torch.zeros(3, 3), torch.zeros(3, 69), betas=betas).joints
    torch.testing.assert_close(model.rest_joints(betas), zero, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.rest_joints(betas[0]), zero[:1], atol=1e-6, rtol=0)


def test_non_finite_inputs_name_the_sample(model: BodyModel, gen: torch.Generator) -> None:
    go, bp = random_pose(gen, 6)
    bp[3, 7] = float("nan")
    with pytest.raises(ValueError, match="body_pose: sample 3 contains NaN"):
        model(go, bp)
    go[1, 0] = float("inf")
    with pytest.raises(ValueError, match="global_orient: sample 1"):
        model.joints_only(go, bp)
    betas = torch.zeros(6, 10)
    betas[5, 0] = float("nan")
    with pytest.raises(ValueError, match="betas: sample 5"):
        model(torch.zeros(6, 3), torch.zeros(6, 69), betas=betas)


def test_bad_shapes(model: BodyModel) -> None:
    with pytest.raises(ValueError, match=r"body_pose: expected \(B, 69\) .* or \(B, 23, 3, 3\)"):
        model(torch.zeros(2, 3), torch.zeros(2, 63))
    with pytest.raises(ValueError, match="batch size 3 != global_orient's 2"):
        model(torch.zeros(2, 3), torch.zeros(3, 69))
    with pytest.raises(ValueError, match=r"betas: expected shape \(2, 10\)"):
        model(torch.zeros(2, 3), torch.zeros(2, 69), betas=torch.zeros(2, 16))
    with pytest.raises(ValueError, match=r"transl: expected shape \(2, 3\)"):
        model(torch.zeros(2, 3), torch.zeros(2, 69), transl=torch.zeros(3))


def test_model_selection_errors(env, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="POSRFT_BODY_MODELS.*stand-in exists only"):
        BodyModel("smplx")
    with pytest.raises(ValueError, match="gender-neutral only"):
        BodyModel(gender="male")
    with pytest.raises(ValueError, match="model_type: expected one of"):
        BodyModel("mano")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BodyModel(model_dir=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"SMPL_NEUTRAL\.pkl, smpl/SMPL_NEUTRAL\.pkl"):
        BodyModel(model_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"SMPLX_FEMALE\.npz, SMPLX_FEMALE\.pkl, smplx/"):
        BodyModel("smplx", gender="female", model_dir=tmp_path)


def test_user_folder_loads_only_the_configured_file(model, tmp_path: Path, caplog) -> None:
    (tmp_path / "smpl").mkdir()
    shutil.copy(model.model_path, tmp_path / "smpl" / "SMPL_MALE.pkl")
    # Other model files in the folder are never opened (unpickling these would fail).
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(b"garbage")
    (tmp_path / "smpl" / "SMPL_FEMALE.pkl").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="posrft.body"):
        male = BodyModel(gender="male", model_dir=tmp_path / "smpl")
    assert not male.is_standin and male.model_path.name == "SMPL_MALE.pkl"
    assert not any("STAND-IN" in r.getMessage() for r in caplog.records)
    go, bp = torch.zeros(1, 3), torch.zeros(1, 69)
    torch.testing.assert_close(male(go, bp).joints, model(go, bp).joints)
    with pytest.raises(ValueError, match="SMPL_NEUTRAL.pkl' is not a valid SMPL model"):
        BodyModel(model_dir=tmp_path)


def _write_extended(folder: Path, kind: str) -> None:
    """An SMPL-H / SMPL-X-format file built from the stand-in (test data, not a real model).

    SMPL-H: 52 joints (15 finger joints per hand); SMPL-X: 55 (jaw and eyes under the head,
    then the fingers) and 10475 vertices (extra ones at the pelvis, in no face, so smplx's
    SMPL-X vertex ids exist). Finger and face joints sit at the stand-in's hand / head joint and
    the stand-in's hand weights go to each hand's first finger joint, so with flat hands it
    must pose exactly like the stand-in.
    """
    a = build_standin()
    parents = [-1] + [int(p) for p in a["kintree_table"][0, 1:22]]
    rows = list(range(22))
    if kind == "smplx":
        parents += [15, 15, 15]
        rows += [15, 15, 15]
    base = len(parents)
    for wrist, hand in ((20, 22), (21, 23)):
        for finger in range(5):
            b = len(parents)
            parents += [wrist, b, b + 1]
            rows += [hand] * 3
    n_joints, n_verts = len(parents), 10475 if kind == "smplx" else 6890
    extra = n_verts - 6890
    v = np.concatenate([a["v_template"], np.zeros((extra, 3))])
    reg = np.concatenate([a["J_regressor"][rows], np.zeros((n_joints, extra))], 1)
    weights = np.zeros((n_verts, n_joints))
    weights[:6890, :22] = a["weights"][:, :22]
    weights[:6890, base] = a["weights"][:, 22]
    weights[:6890, base + 15] = a["weights"][:, 23]
    weights[6890:, 0] = 1.0
    n_dirs = 20 if kind == "smplx" else 10  # SMPL-X: 10 shape + 10 expression directions
    shapedirs = np.zeros((n_verts, 3, n_dirs))
    shapedirs[:6890, :, :10] = a["shapedirs"]
    kintree = np.stack([np.array(parents, dtype=np.int64), np.arange(n_joints)])
    kintree[0, 0] = 4294967295
    data = {
        "v_template": v, "f": a["f"], "J_regressor": reg, "weights": weights,
        "kintree_table": kintree, "shapedirs": shapedirs,
        "posedirs": np.zeros((n_verts, 3, (n_joints - 1) * 9), dtype=np.float32),
        "hands_componentsl": np.eye(45), "hands_componentsr": np.eye(45),
        "hands_meanl": np.zeros(45), "hands_meanr": np.zeros(45),
        "lmk_faces_idx": np.arange(51), "lmk_bary_coords": np.full((51, 3), 1 / 3),
    }  # fmt: skip
    (folder / kind).mkdir(parents=True)
    with open(folder / kind / f"{kind.upper()}_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(data, fh)


@pytest.mark.parametrize("kind", ["smplh", "smplx"])
def test_smplh_smplx_body_joints(model, tmp_path: Path, gen: torch.Generator, kind: str) -> None:
    _write_extended(tmp_path, kind)
    body = BodyModel(kind, model_dir=tmp_path)
    assert body.model_path.suffix == ".pkl" and body.num_joints == 22
    assert body.parents.shape == (22,)
    go, bp = random_pose(gen, 4, joints=21)
    betas = torch.randn(4, 10, generator=gen)
    out = body(go, bp, betas=betas, return_verts=True)
    assert out.joints.shape == (4, 22, 3)
    # Same body as the stand-in SMPL with still hand joints: smplx's SMPL and SMPL-H/X paths agree.
    ref = model(go, torch.cat([bp, torch.zeros(4, 6)], 1), betas=betas, return_verts=True)
    torch.testing.assert_close(out.joints, ref.joints[:, :22], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.vertices[:, :6890], ref.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(body.joints_only(go, bp, betas=betas), out.joints, atol=1e-5, rtol=0)
    rot = roma.rotvec_to_rotmat(torch.cat([go, bp], 1).view(4, 22, 3))
    fast = fk_joints(rot, body.rest_joints(betas), body.parents)
    torch.testing.assert_close(fast, out.joints, atol=1e-5, rtol=0)


def test_float64_model(env, gen: torch.Generator) -> None:
    m = BodyModel(dtype=torch.float64)
    go, bp = random_pose(gen, 3)
    out = m(go.double(), bp.double())
    assert out.joints.dtype == torch.float64
    fast = m.joints_only(go.double(), bp.double())
    torch.testing.assert_close(fast, out.joints, atol=1e-10, rtol=0)
