"""Writers of small dataset files in their real on-disk formats (used by test_loaders.py).

Nothing here is committed data: every file is written into a pytest tmp dir by the test that
needs it, with the key layout / line layout of the real dataset.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def write_amass(
    path: Path,
    poses: np.ndarray,
    *,
    fps: float = 120.0,
    fps_key: str = "mocap_framerate",
    gender: object = "female",
    betas: np.ndarray | None = None,
    drop: tuple[str, ...] = (),
    trans: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """An AMASS npz: ``poses``, ``trans``, ``betas`` (16), ``gender`` (0-d str), frame rate."""
    n = poses.shape[0]
    rng = np.random.default_rng(n)
    data = {
        "poses": poses,
        "trans": rng.normal(size=(n, 3)) if trans is None else trans,
        "betas": rng.normal(size=16) if betas is None else betas,
        "gender": np.array(gender),
        fps_key: np.array(fps),
        "dmpls": np.zeros((n, 8)),
    }
    for k in drop:
        data.pop(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def threedpw_dict(n: int = 5, actors: int = 2, seed: int = 0) -> dict:
    """A 3DPW sequence dict with the release's keys and per-actor list layout."""
    rng = np.random.default_rng(seed)
    cam = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cam[i, :3, :3] = q * np.sign(np.linalg.det(q))
        cam[i, :3, 3] = rng.normal(size=3)
    return {
        "sequence": "courtyard_test_00",
        "genders": ["m", "f"][:actors],
        "betas": [rng.normal(size=10) for _ in range(actors)],
        "betas_clothed": [rng.normal(size=10) for _ in range(actors)],
        "poses": [rng.normal(scale=0.3, size=(n, 72)) for _ in range(actors)],
        "trans": [rng.normal(size=(n, 3)) for _ in range(actors)],
        "poses_60Hz": [rng.normal(size=(2 * n, 72)) for _ in range(actors)],
        "trans_60Hz": [rng.normal(size=(2 * n, 3)) for _ in range(actors)],
        "jointPositions": [rng.normal(size=(n, 72)) for _ in range(actors)],
        "poses2d": [rng.uniform(0, 1000, size=(n, 3, 18)) for _ in range(actors)],
        "cam_poses": cam,
        "cam_intrinsics": np.array([[1961.9, 0, 540.0], [0, 1969.2, 960.0], [0, 0, 1]]),
        "campose_valid": [rng.integers(0, 2, size=n).astype(bool) for _ in range(actors)],
        "img_frame_ids": np.arange(0, 2 * n, 2),
    }


def write_pickle(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def ntu_body_lines(body_id: int, joints: np.ndarray, info: list[str] | None = None) -> list[str]:
    """Lines of one body: body-info (10 values), joint count, 25 joint lines of 12 values.

    ``joints`` is ``(25, 12)``: x y z depthX depthY colorX colorY oriW oriX oriY oriZ state.
    """
    info = info or [str(body_id), "0", "1", "1", "1", "1", "0", "0.02764709", "0.05745083", "2"]
    lines = [" ".join(info), str(len(joints))]
    for row in joints:
        vals = [repr(float(v)) for v in row[:11]] + [str(int(row[11]))]
        lines.append(" ".join(vals))
    return lines


def ntu_joints(rng: np.random.Generator, spread: float = 1.0) -> np.ndarray:
    """Random ``(25, 12)`` joint rows with values rounded to 4 decimals (exact through text)."""
    j = np.empty((25, 12))
    j[:, :3] = np.round(rng.normal(scale=spread, size=(25, 3)), 4)
    j[:, 3:5] = np.round(rng.uniform(0, 512, size=(25, 2)), 4)
    j[:, 5:7] = np.round(rng.uniform(0, 1920, size=(25, 2)), 4)
    j[:, 7:11] = np.round(rng.normal(size=(25, 4)), 4)
    j[:, 11] = rng.integers(0, 3, size=25)
    return j


def write_ntu(path: Path, frames: list[list[tuple[int, np.ndarray]]]) -> list[str]:
    """Write a ``.skeleton`` file from ``frames[t] = [(body_id, joints (25, 12)), ...]``."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, joints in bodies:
            lines.extend(ntu_body_lines(body_id, joints))
    path.parent.mkdir(parents=True, exist_ok=True)
    # CRLF line ends: the files come from Windows Kinect tooling; the parser must accept them.
    path.write_text("\r\n".join(lines) + "\r\n")
    return lines
