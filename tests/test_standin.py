"""posrft.body.standin: the generated SMPL-format file loads through smplx and behaves like SMPL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

from posrft.body import standin
from posrft.body.formats import SMPL24_PARENTS


@pytest.fixture(scope="module")
def pkl(tmp_path_factory) -> Path:
    return standin.ensure_standin(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def arrays() -> dict:
    return standin.build_standin()


def load(path: Path, dtype=torch.float32):
    return smplx.create(model_path=str(path), model_type="smpl", dtype=dtype)


def test_loads_through_smplx_and_reproduces_rest_joints(pkl: Path) -> None:
    model = load(pkl)
    zero = torch.zeros(1, 69)
    out = model(betas=torch.zeros(1, 10), body_pose=zero, global_orient=torch.zeros(1, 3))
    assert out.vertices.shape == (1, 6890, 3)
    assert model.faces.shape == (13728, 3)
    rest = torch.tensor(standin.standin_rest_joints(), dtype=torch.float32)
    torch.testing.assert_close(out.joints[0, :24], rest, atol=1e-5, rtol=0)
    assert model.parents.tolist() == list(SMPL24_PARENTS)


def test_proportions(arrays: dict) -> None:
    v, j = arrays["v_template"], arrays["J"]
    assert 1.65 < v[:, 1].max() - v[:, 1].min() < 1.75  # about 1.7 m tall, y up
    assert np.abs(j[0]).max() < 1e-9  # pelvis at the origin
    assert j[16, 0] > 0 > j[17, 0]  # left shoulder at +x
    assert j[10, 2] > j[7, 2]  # toes in front of the ankle: the body faces +z
    assert j[15, 1] > j[12, 1] > j[9, 1] > j[0, 1] > j[4, 1] > j[7, 1]


def test_file_layout(arrays: dict) -> None:
    assert arrays["f"].dtype == np.uint32 and arrays["f"].max() == 6889
    assert arrays["kintree_table"][0, 0] == 4294967295
    assert arrays["kintree_table"][0, 1:].tolist() == list(SMPL24_PARENTS[1:])
    np.testing.assert_allclose(arrays["J_regressor"].sum(1), 1.0)
    np.testing.assert_allclose(arrays["weights"].sum(1), 1.0)
    assert (arrays["weights"] >= 0).all()
    assert arrays["shapedirs"].shape == (6890, 3, 10)
    assert arrays["posedirs"].shape == (6890, 3, 207) and not arrays["posedirs"].any()
    regressed = arrays["J_regressor"] @ arrays["v_template"]
    np.testing.assert_allclose(regressed, arrays["J"], atol=1e-12)


def test_mesh_is_closed_and_outward(arrays: dict) -> None:
    f = arrays["f"].astype(np.int64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert max(Counter(map(tuple, directed)).values()) == 1  # consistently oriented
    undirected = Counter(map(lambda e: (min(e), max(e)), directed.tolist()))
    assert set(undirected.values()) == {2}  # every edge shared by exactly two triangles
    for tube in standin._tubes():
        part = standin._build_tube(tube)
        v, pf = part["v"], part["f"]
        volume = np.einsum("ij,ij->i", v[pf[:, 0]], np.cross(v[pf[:, 1]], v[pf[:, 2]])).sum() / 6
        assert volume > 0, f"{tube.name} faces point inwards"


def test_betas_stature_and_girth(pkl: Path) -> None:
    model = load(pkl, torch.float64)
    zero = torch.zeros(1, 69, dtype=torch.float64)
    go = torch.zeros(1, 3, dtype=torch.float64)
    base = model(betas=torch.zeros(1, 10, dtype=torch.float64), body_pose=zero, global_orient=go)
    tall = torch.zeros(1, 10, dtype=torch.float64)
    tall[0, 0] = 1.0
    out = model(betas=tall, body_pose=zero, global_orient=go)
    torch.testing.assert_close(out.joints[:, :24], 1.1 * base.joints[:, :24])
    wide = torch.zeros(1, 10, dtype=torch.float64)
    wide[0, 1] = 1.0
    out = model(betas=wide, body_pose=zero, global_orient=go)
    torch.testing.assert_close(out.joints[:, :24], base.joints[:, :24])  # joints stay
    assert (out.vertices - base.vertices).norm(dim=-1).max() > 0.005  # the surface moves


def test_differentiable_and_matches_finite_differences(pkl: Path) -> None:
    model = load(pkl, torch.float64)
    gen = torch.Generator().manual_seed(0)
    pose = (0.3 * torch.randn(1, 69, generator=gen, dtype=torch.float64)).requires_grad_()
    go = torch.zeros(1, 3, dtype=torch.float64)
    betas = torch.zeros(1, 10, dtype=torch.float64)

    def f(p: torch.Tensor) -> torch.Tensor:
        out = model(betas=betas, body_pose=p, global_orient=go)
        return out.joints[0, 20, 0] + out.vertices[0, 5000, 1]  # left wrist x, a right-leg vertex y

    f(pose).backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
    eps = 1e-6
    for i in (15 * 3 + 2, 17 * 3 + 1, 3):  # left shoulder z, left elbow y, right hip x
        e = torch.zeros_like(pose)
        e[0, i] = eps
        with torch.no_grad():
            fd = (f(pose + e) - f(pose - e)) / (2 * eps)
        assert abs(fd.item()) > 1e-3  # the entry matters
        assert abs(fd.item() - pose.grad[0, i].item()) < 1e-6


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = standin.write_standin(tmp_path / "a").read_bytes()
    b = standin.write_standin(tmp_path / "b").read_bytes()
    assert a == b


def test_regenerates_only_when_stale(tmp_path: Path) -> None:
    path = standin.ensure_standin(tmp_path)
    stamp = path.stat().st_mtime_ns
    assert standin.ensure_standin(tmp_path) == path and path.stat().st_mtime_ns == stamp
    good = path.read_bytes()
    path.write_bytes(b"not a pickle")  # altered file: hash no longer matches the sidecar
    standin.ensure_standin(tmp_path)
    assert path.read_bytes() == good
    side = tmp_path / standin.SIDECAR_FILE
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "generator_key": "old"}))  # older generator
    stamp = path.stat().st_mtime_ns
    standin.ensure_standin(tmp_path)
    assert json.loads(side.read_text())["generator_key"] == meta["generator_key"]
    assert path.stat().st_mtime_ns != stamp
