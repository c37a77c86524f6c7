"""An offline, procedurally generated body model in the SMPL file format (NOT the licensed SMPL).

Real SMPL files are licensed and never shipped. So that every code path (smplx loading,
skinning, joints, rewards) runs offline, this module generates a body with SMPL's *format*:

- the SMPL 24-joint skeleton and kinematic tree (joint order of
  :data:`posrft.body.formats.SMPL24_JOINTS`), adult proportions, about 1.7 m tall; y up, the
  body faces +z, its left side is +x, the pelvis is at the origin; T-pose (arms along +-x);
- 6890 vertices (smplx picks extra joints by SMPL-H vertex ids, so the count must match) made of
  13 closed tubes around the bones (torso, neck, 2 x {leg, foot, collar, arm, hand}) and a head
  sphere; every tube is ``M = 16``-vertex rings plus two poles, 13728 triangles in all;
- linear-blend-skinning ``weights`` (each ring follows the joint that drives its bone segment,
  blended smoothly, with a smoothstep, over a few centimetres around every joint);
- a ``J_regressor`` (24 x 6890) that averages one ring per joint. Each such ring is centred on
  its joint, so ``J_regressor @ v_template`` reproduces :func:`standin_rest_joints` exactly;
- ``shapedirs`` (6890 x 3 x 10) with two meaningful directions: ``betas[0]`` = stature (every
  vertex scaled about the pelvis by 10% per unit, so joints scale too) and ``betas[1]`` = girth
  (every ring widened about its centre by 15% per unit; joints do not move); ``betas[2:]`` are 0;
- ``posedirs`` (6890 x 3 x 207) all zero (no pose-corrective blend shapes).

There is no randomness: the geometry is a closed-form function of the tables below. The pickle
is written once under ``cache_dir()/body_models/standin/`` (atomically) with a JSON sidecar that
records a key of this generator's source and the pickle's SHA-256; a missing, stale or altered
file is regenerated. It is then loaded through ``smplx.create`` exactly like a real model file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posrft.body.formats import SMPL24_JOINTS, SMPL24_PARENTS
from posrft.config import cache_dir
from posrft.files import atomic_write_bytes

logger = logging.getLogger("posrft.body")

__all__ = [
    "STANDIN_VERSION",
    "NUM_VERTICES",
    "standin_rest_joints",
    "build_standin",
    "write_standin",
    "ensure_standin",
    "standin_dir",
    "warn_standin",
]

STANDIN_VERSION = "1"
NUM_VERTICES = 6890
RING = 16  # vertices per ring
STANDIN_FILE = "SMPL_NEUTRAL.pkl"
SIDECAR_FILE = "standin.json"
ROOT_PARENT = 4294967295  # how SMPL files store the root's parent (uint32 -1)
STATURE_PER_UNIT = 0.10
GIRTH_PER_UNIT = 0.15

_J = {name: i for i, name in enumerate(SMPL24_JOINTS)}

# Left half and centre of the rest skeleton (metres); the right half mirrors x.
_LEFT_AND_CENTRE = {
    "pelvis": (0.0, 0.0, 0.0),
    "left_hip": (0.07, -0.09, -0.01),
    "spine1": (0.0, 0.11, -0.02),
    "left_knee": (0.10, -0.48, 0.0),
    "spine2": (0.0, 0.24, 0.0),
    "left_ankle": (0.09, -0.88, -0.04),
    "spine3": (0.0, 0.30, 0.01),
    "left_foot": (0.11, -0.94, 0.08),
    "neck": (0.0, 0.52, -0.02),
    "left_collar": (0.07, 0.43, -0.01),
    "head": (0.0, 0.60, 0.03),
    "left_shoulder": (0.17, 0.46, -0.02),
    "left_elbow": (0.43, 0.45, -0.03),
    "left_wrist": (0.68, 0.45, -0.02),
    "left_hand": (0.77, 0.45, -0.03),
}


def standin_rest_joints() -> np.ndarray:
    """The stand-in's rest joints, (24, 3) float64, SMPL joint order."""
    out = np.zeros((24, 3))
    for name, xyz in _LEFT_AND_CENTRE.items():
        out[_J[name]] = xyz
        if name.startswith("left_"):
            out[_J["right_" + name[5:]]] = (-xyz[0], xyz[1], xyz[2])
    return out


@dataclass(frozen=True)
class _Tube:
    """A closed tube along a polyline ``points`` (first and last are pole tips, not joints).

    ``joints[k]`` is the joint sitting at interior node ``k`` (``None`` for a plain bend);
    ``drivers[s]`` is the joint whose transform moves segment ``s`` (``points[s] -> [s+1]``);
    ``radii[k]`` are the cross-section half-axes along (``ref`` projected, its normal);
    ``rings`` is the number of rings; ``cap`` the length over which the ends round off.
    """

    name: str
    points: tuple[tuple[float, float, float], ...]
    joints: tuple[str | None, ...]
    drivers: tuple[str, ...]
    radii: tuple[tuple[float, float], ...]
    ref: tuple[float, float, float]
    rings: int
    cap: float


def _tubes() -> list[_Tube]:
    j = {n: tuple(v) for n, v in zip(SMPL24_JOINTS, standin_rest_joints().tolist())}
    X, Y = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    centre = [
        _Tube("torso",
              ((0, -0.14, -0.01), j["pelvis"], j["spine1"], j["spine2"], j["spine3"],
               (0, 0.44, -0.01), j["neck"], (0, 0.56, -0.02)),
              (None, "pelvis", "spine1", "spine2", "spine3", None, "neck", None),
              ("pelvis", "pelvis", "spine1", "spine2", "spine3", "spine3", "neck"),
              ((0.14, 0.10), (0.16, 0.11), (0.15, 0.10), (0.15, 0.10), (0.17, 0.11),
               (0.16, 0.10), (0.07, 0.06), (0.06, 0.05)), X, 61, 0.05),
        _Tube("neck", ((0, 0.50, -0.02), j["head"], (0, 0.64, 0.03)), (None, "head", None),
              ("neck", "head"), ((0.055, 0.05), (0.05, 0.05), (0.045, 0.045)), X, 10, 0.02),
        # A sphere is a tube of length 2r whose end caps (length r) meet in the middle.
        _Tube("head", ((0, 0.545, 0.03), (0, 0.745, 0.03)), (None, None), ("head",),
              ((0.10, 0.10), (0.10, 0.10)), X, 36, 0.10),
    ]  # fmt: skip
    left = [
        _Tube("left_leg",
              ((0.07, -0.02, -0.01), j["left_hip"], j["left_knee"], j["left_ankle"],
               (0.09, -0.92, -0.045)),
              (None, "left_hip", "left_knee", "left_ankle", None),
              ("pelvis", "left_hip", "left_knee", "left_ankle"),
              ((0.08, 0.08), (0.085, 0.085), (0.055, 0.055), (0.04, 0.04), (0.035, 0.035)),
              X, 65, 0.04),
        _Tube("left_foot", ((0.09, -0.93, -0.09), j["left_foot"], (0.12, -0.945, 0.17)),
              (None, "left_foot", None), ("left_ankle", "left_foot"),
              ((0.035, 0.03), (0.045, 0.025), (0.04, 0.02)), X, 16, 0.03),
        _Tube("left_collar", ((0.02, 0.44, -0.01), j["left_collar"], (0.15, 0.46, -0.02)),
              (None, "left_collar", None), ("spine3", "left_collar"),
              ((0.05, 0.05), (0.06, 0.055), (0.055, 0.05)), Y, 10, 0.03),
        _Tube("left_arm",
              ((0.13, 0.46, -0.02), j["left_shoulder"], j["left_elbow"], j["left_wrist"],
               (0.72, 0.45, -0.02)),
              (None, "left_shoulder", "left_elbow", "left_wrist", None),
              ("left_collar", "left_shoulder", "left_elbow", "left_wrist"),
              ((0.055, 0.055), (0.05, 0.05), (0.04, 0.04), (0.03, 0.025), (0.03, 0.022)),
              Y, 58, 0.03),
        _Tube("left_hand", ((0.66, 0.45, -0.02), j["left_hand"], (0.86, 0.45, -0.03)),
              (None, "left_hand", None), ("left_wrist", "left_hand"),
              ((0.025, 0.04), (0.02, 0.045), (0.012, 0.035)), Y, 12, 0.02),
    ]  # fmt: skip
    return centre + left + [_mirror(t) for t in left]


def _mirror(t: _Tube) -> _Tube:
    def side(name: str | None) -> str | None:
        return "right_" + name[5:] if name and name.startswith("left_") else name

    return _Tube(
        name=side(t.name),
        points=tuple((-x, y, z) for x, y, z in t.points),
        joints=tuple(side(n) for n in t.joints),
        drivers=tuple(side(n) for n in t.drivers),
        radii=t.radii,
        ref=t.ref,
        rings=t.rings,
        cap=t.cap,
    )


def _ring_counts(lengths: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` rings over segments by length, at least one each (deterministic)."""
    raw = total * lengths / lengths.sum()
    n = np.maximum(1, np.floor(raw)).astype(int)
    while n.sum() < total:
        n[int(np.argmax(raw - n))] += 1
    while n.sum() > total:
        n[int(np.argmax(n))] -= 1
    return n


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _build_tube(t: _Tube) -> dict[str, np.ndarray]:
    """Vertices, faces, per-vertex skinning weights, girth directions and joint rings of a tube.

    Rings sit at arc positions chosen so that every interior node has a ring exactly on it;
    the poles sit at the two tips.
    """
    pts = np.asarray(t.points, dtype=np.float64)
    seg = pts[1:] - pts[:-1]
    seg_len = np.linalg.norm(seg, axis=1)
    node_s = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = node_s[-1]
    counts = _ring_counts(seg_len, t.rings)
    last = len(seg) - 1
    ring_s, ring_seg = [], []
    for s, n in enumerate(counts):
        denom = n + 1 if s == last else n  # the final segment must stop short of the tip
        for k in range(1, n + 1):
            ring_s.append(node_s[s] + seg_len[s] * k / denom)
            ring_seg.append(s)
    ring_s, ring_seg = np.asarray(ring_s), np.asarray(ring_seg)

    # Tangent per ring: the segment direction, averaged with the next one exactly at a node.
    dirs = seg / seg_len[:, None]
    tang = dirs[ring_seg].copy()
    at_node = np.isclose(ring_s, node_s[ring_seg + 1]) & (ring_seg < last)
    tang[at_node] += dirs[ring_seg[at_node] + 1]
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    ref = np.asarray(t.ref, dtype=np.float64)
    u = ref - (tang @ ref)[:, None] * tang
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(tang, u)

    frac = (ring_s - node_s[ring_seg]) / seg_len[ring_seg]
    centre = pts[ring_seg] + frac[:, None] * seg[ring_seg]
    radii = np.asarray(t.radii, dtype=np.float64)
    rad = radii[ring_seg] + frac[:, None] * (radii[ring_seg + 1] - radii[ring_seg])
    to_tip = np.minimum(ring_s, total - ring_s)
    rounding = np.sqrt(1.0 - (1.0 - np.minimum(to_tip / t.cap, 1.0)) ** 2)
    rad = rad * rounding[:, None]

    theta = 2.0 * np.pi * np.arange(RING) / RING
    cos, sin = np.cos(theta), np.sin(theta)
    offset = (rad[:, 0, None, None] * cos[None, :, None] * u[:, None, :]
              + rad[:, 1, None, None] * sin[None, :, None] * v[:, None, :])  # fmt: skip
    ring_verts = centre[:, None, :] + offset  # (K, RING, 3)
    verts = np.concatenate([pts[:1], ring_verts.reshape(-1, 3), pts[-1:]])
    girth = np.concatenate([np.zeros((1, 3)), offset.reshape(-1, 3), np.zeros((1, 3))])
    vert_s = np.concatenate([[0.0], np.repeat(ring_s, RING), [total]])

    # Skinning: segment s follows drivers[s]; around each interior node blend the two drivers.
    weights = np.zeros((len(verts), 24))
    seg_of_vert = np.clip(np.searchsorted(node_s, vert_s, side="right") - 1, 0, last)
    weights[np.arange(len(verts)), [_J[t.drivers[s]] for s in seg_of_vert]] = 1.0
    for k in range(1, len(pts) - 1):
        before, after = _J[t.drivers[k - 1]], _J[t.drivers[k]]
        if before == after:
            continue
        h = min(0.05, 0.3 * min(seg_len[k - 1], seg_len[k]))
        near = np.abs(vert_s - node_s[k]) < h
        a = _smoothstep((vert_s[near] - node_s[k] + h) / (2.0 * h))
        weights[near] = 0.0
        weights[near, after] = a
        weights[near, before] = 1.0 - a

    # Faces: pole fans and quads between rings; (u, v, tangent) is right-handed, so this
    # winding points the normals outwards.
    k_rings = len(ring_s)
    ring = 1 + np.arange(k_rings)[:, None] * RING + np.arange(RING)[None, :]  # (K, RING)
    nxt = np.roll(ring, -1, axis=1)
    start = np.stack([nxt[0], ring[0], np.zeros(RING, int)], 1)
    end = np.stack([ring[-1], nxt[-1], np.full(RING, len(verts) - 1)], 1)
    a, b, c, d = ring[:-1], nxt[:-1], nxt[1:], ring[1:]
    quads = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], 1).reshape(-1, 3)
    faces = np.concatenate([start, quads, end])

    joint_rings = {}
    for k, name in enumerate(t.joints):
        if name is not None:
            r = int(np.flatnonzero(np.isclose(ring_s, node_s[k]))[0])
            joint_rings[_J[name]] = ring[r]
    return {"v": verts, "f": faces, "w": weights, "girth": girth, "joint_rings": joint_rings}


def build_standin() -> dict[str, np.ndarray | str]:
    """Generate the SMPL-format arrays (the dict that is pickled; smplx reads these keys)."""
    v, f, w, girth = [], [], [], []
    j_regressor = np.zeros((24, NUM_VERTICES))
    base = 0
    for tube in _tubes():
        part = _build_tube(tube)
        v.append(part["v"])
        f.append(part["f"] + base)
        w.append(part["w"])
        girth.append(part["girth"])
        for joint, ids in part["joint_rings"].items():
            j_regressor[joint, ids + base] = 1.0 / len(ids)
        base += len(part["v"])
    v_template = np.concatenate(v)
    if v_template.shape[0] != NUM_VERTICES:
        raise AssertionError(f"stand-in has {v_template.shape[0]} vertices, not {NUM_VERTICES}")
    rest = standin_rest_joints()
    if not np.allclose(j_regressor @ v_template, rest, atol=1e-12):
        raise AssertionError("stand-in J_regressor does not reproduce the rest joints")

    shapedirs = np.zeros((NUM_VERTICES, 3, 10))
    shapedirs[:, :, 0] = STATURE_PER_UNIT * (v_template - rest[0])
    shapedirs[:, :, 1] = GIRTH_PER_UNIT * np.concatenate(girth)
    kintree = np.stack([np.asarray(SMPL24_PARENTS, dtype=np.int64), np.arange(24)])
    kintree[0, 0] = ROOT_PARENT
    return {
        "v_template": v_template,
        "f": np.concatenate(f).astype(np.uint32),
        "J_regressor": j_regressor,
        "J": rest,
        "weights": np.concatenate(w),
        "kintree_table": kintree,
        "shapedirs": shapedirs,
        # float32 halves the file; these are all zero anyway.
        "posedirs": np.zeros((NUM_VERTICES, 3, 207), dtype=np.float32),
        "bs_type": "lrotmin",
        "bs_style": "lbs",
        "posrft_standin_version": STANDIN_VERSION,
    }


def _generator_key() -> str:
    """Changes whenever this generator (its source or version) changes."""
    src = Path(__file__).read_bytes()
    return hashlib.sha256(STANDIN_VERSION.encode() + b"\0" + src).hexdigest()


def standin_dir(root: Path | None = None) -> Path:
    """Folder of the stand-in file: ``root`` or ``cache_dir()/body_models/standin``."""
    return Path(root) if root is not None else cache_dir() / "body_models" / "standin"


def write_standin(folder: Path) -> Path:
    """Generate and write ``folder/SMPL_NEUTRAL.pkl`` plus its sidecar; return the pkl path."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(build_standin(), protocol=4)
    path = folder / STANDIN_FILE
    atomic_write_bytes(path, payload)
    meta = {
        "version": STANDIN_VERSION,
        "generator_key": _generator_key(),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    # Sidecar last: a crash in between leaves a sidecar that does not match, so we regenerate.
    atomic_write_bytes(folder / SIDECAR_FILE, json.dumps(meta, indent=1).encode())
    return path


def _is_fresh(folder: Path) -> bool:
    path, side = folder / STANDIN_FILE, folder / SIDECAR_FILE
    if not (path.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("version") != STANDIN_VERSION or meta.get("generator_key") != _generator_key():
        return False
    return meta.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_standin(root: Path | None = None) -> Path:
    """Path of an up-to-date stand-in ``SMPL_NEUTRAL.pkl``, generating it when needed.

    The pickle is only trusted if its SHA-256 matches the sidecar written with it, so nothing
    but a file this module wrote is ever handed to the unpickler.
    """
    folder = standin_dir(root)
    if not _is_fresh(folder):
        logger.info("generating the posrft stand-in body model in %s", folder)
        write_standin(folder)
    return folder / STANDIN_FILE


def warn_standin(path: Path) -> None:
    """The loud warning logged whenever the stand-in is used in place of SMPL."""
    logger.warning(
        "USING THE POSRFT STAND-IN BODY MODEL (%s), NOT THE LICENSED SMPL MODEL: a procedurally "
        "generated SMPL-format body (same skeleton and file layout, made-up mesh). Numbers are "
        "not comparable with published SMPL results. Set POSRFT_BODY_MODELS (or model_dir) to "
        "a folder with your SMPL files to use the real model.",
        path,
    )
