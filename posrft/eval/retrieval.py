"""Text–pose retrieval model: the semantic reward's critic and (another instance) the evaluator.

Two encoders map a caption and a pose into one ``D``-dimensional unit sphere; matching pairs
should have the highest cosine similarity (CLIP-style, trained by :mod:`posrft.eval.retrieval_train`
with a symmetric InfoNCE loss and a learnable temperature).

Text encoder
    ``φ_text(c) = normalize(MLP(E(c)))`` where ``E`` is the frozen all-MiniLM-L6-v2 sentence
    embedding (384-d, :class:`posrft.eval.sentence.SentenceEmbedder`, cached per distinct
    caption) and the MLP is the trainable projection. A frozen encoder keeps training to
    seconds on a CPU and gives paraphrase robustness the tiny caption corpus could not teach.

Pose encoder
    ``φ_pose(p) = normalize(MLP(f(p)))`` over features ``f(p)`` of a 6D pose ``p`` (22 body
    joints, global orientation first), computed after removing the heading (yaw about the
    vertical y axis) of the global orientation — captions describe the body, not which way it
    faces in the world (the pose prior spins poses uniformly):

    * the 6D rotations of the 22 joints (132): joint angles ("knee bent at a right angle"),
      tilt of the whole body ("lying on the back");
    * the pelvis-relative 3D joints of FK on the stored rest skeleton (24 x 3 = 72): the spatial
      relations captions talk about ("hands above the head", "feet wide apart") are non-linear
      functions of the whole rotation chain, cheap to compute (FK runs at ~10⁶ poses/s) and hard
      for a small MLP to rediscover.

    Heading: with ``f = R_0 e_z`` (body forward) and ``l = R_0 e_x`` (body left),
    ``h = (f_x − l_z, f_z + l_x)`` is the forward heading in the ground plane (the projected
    forward plus the projected left turned by −90°); ``ψ = atan2(h_x, h_z)`` and
    ``R_0 ← R_y(−ψ) R_0``. It is exact for any yaw of standing, lying (back, front, side) and
    tilted bodies; every yaw-equivariant heading has singular orientations somewhere (SO(3)
    has no continuous one), and this one puts them at fully inverted bodies (upside down with
    a horizontal forward axis), which the pose prior never produces.

Files (:meth:`RetrievalModel.save_pretrained`, written atomically): ``model.safetensors``
(weights, the learnable temperature and the rest skeleton) and ``config.json``
(:class:`RetrievalConfig` plus free-form training metadata).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import roma
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posrft.body.fk import fk_from_pose6d
from posrft.body.formats import SMPL24_PARENTS
from posrft.body.pose import pad_pose6d
from posrft.body.rotations import pose6d_to_rotmat, rotmat_to_pose6d
from posrft.body.standin import standin_rest_joints
from posrft.eval.metrics import retrieval_recalls
from posrft.eval.sentence import DEFAULT_SENTENCE_MODEL, SentenceEmbedder, shared_embedder
from posrft.policy.checkpoint import atomic_directory, load_module, save_module

MODEL_TYPE = "posrft-text-pose-retrieval"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
POSE_JOINTS = 22
NUM_SMPL_JOINTS = 24


@dataclass
class RetrievalConfig:
    """Architecture of a :class:`RetrievalModel` (everything ``from_pretrained`` needs)."""

    text_encoder: str = DEFAULT_SENTENCE_MODEL
    text_dim: int = 384
    embed_dim: int = 256
    hidden: int = 256
    pose_layers: int = 3
    text_layers: int = 2
    dropout: float = 0.3
    init_temperature: float = 0.07
    model_type: str = MODEL_TYPE
    version: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("text_dim", "embed_dim", "hidden", "pose_layers", "text_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                value = getattr(self, name)
                raise ValueError(f"RetrievalConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"RetrievalConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.init_temperature > 0:
            raise ValueError(
                f"RetrievalConfig.init_temperature must be > 0, got {self.init_temperature}"
            )


def _mlp(d_in: int, hidden: int, d_out: int, layers: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


def remove_heading(rotmat0: Tensor) -> Tensor:
    """``R_y(−ψ) R_0``: global orientations ``(B, 3, 3)`` turned to face +z (see the module)."""
    f, l = rotmat0[..., :, 2], rotmat0[..., :, 0]
    psi = torch.atan2(f[..., 0] - l[..., 2], f[..., 2] + l[..., 0])
    axis = torch.zeros_like(f)
    axis[..., 1] = -psi
    return roma.rotvec_to_rotmat(axis) @ rotmat0


class PoseFeatures(nn.Module):
    """``f(p)``: poses ``(B, J*6)`` (J ≤ 24; J > 22 ignored) -> features ``(B, 132 + 72)``."""

    dim = POSE_JOINTS * 6 + NUM_SMPL_JOINTS * 3

    def __init__(self, rest_joints: Tensor | None = None) -> None:
        super().__init__()
        rest = standin_rest_joints() if rest_joints is None else rest_joints
        rest = torch.as_tensor(rest, dtype=torch.float32)
        if rest.shape != (NUM_SMPL_JOINTS, 3):
            raise ValueError(f"rest_joints must be ({NUM_SMPL_JOINTS}, 3), got {tuple(rest.shape)}")
        self.register_buffer("rest_joints", rest.clone())

    def forward(self, pose6d: Tensor) -> Tensor:
        d = pose6d.shape[-1]
        if pose6d.ndim != 2 or d % 6 or not 6 <= d <= NUM_SMPL_JOINTS * 6:
            raise ValueError(
                f"poses must be (B, J*6) 6D rotations with J <= 24, got {tuple(pose6d.shape)}"
            )
        full = pad_pose6d(pose6d.float(), NUM_SMPL_JOINTS)
        rot = pose6d_to_rotmat(full, NUM_SMPL_JOINTS)
        rot = torch.cat([remove_heading(rot[:, 0])[:, None], rot[:, 1:]], dim=1)
        canon = rotmat_to_pose6d(rot)
        joints = fk_from_pose6d(canon, self.rest_joints.to(canon), SMPL24_PARENTS)
        joints = joints - joints[:, :1]
        return torch.cat([canon[:, : POSE_JOINTS * 6], joints.flatten(1)], dim=1)


class RetrievalModel(nn.Module):
    """Text and pose encoders into one unit sphere (module docstring).

    ``embed_poses((B, J*6)) -> (B, D)``, ``embed_texts(list[str]) -> (B, D)`` (unit vectors),
    ``similarity(texts, poses) -> (B,)`` the cosine of pair ``i``.
    """

    def __init__(self, config: RetrievalConfig | None = None, rest_joints: Tensor | None = None,
                 load_text_encoder: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.config = config or RetrievalConfig()
        c = self.config
        self.features = PoseFeatures(rest_joints)
        self.pose_mlp = _mlp(PoseFeatures.dim, c.hidden, c.embed_dim, c.pose_layers, c.dropout)
        self.text_mlp = _mlp(c.text_dim, c.hidden, c.embed_dim, c.text_layers, c.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))
        self._embedder: SentenceEmbedder | None = None
        if load_text_encoder:
            self.sentence_embedder()

    def sentence_embedder(self) -> SentenceEmbedder:
        """The frozen sentence encoder (loaded on first use, shared per process)."""
        if self._embedder is None:
            emb = shared_embedder(self.config.text_encoder)
            if emb.dim != self.config.text_dim:
                raise ValueError(
                    f"text encoder {self.config.text_encoder!r} gives {emb.dim}-d embeddings but "
                    f"the retrieval model expects text_dim={self.config.text_dim}"
                )
            self._embedder = emb
        return self._embedder

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach().exp())

    def encode_pose_features(self, feats: Tensor) -> Tensor:
        return F.normalize(self.pose_mlp(feats), dim=-1)

    def encode_sentence_embeddings(self, sent: Tensor) -> Tensor:
        """Projected unit embeddings ``(B, D)`` of frozen sentence embeddings ``(B, text_dim)``."""
        return F.normalize(self.text_mlp(sent), dim=-1)

    def embed_poses(self, pose6d: Tensor) -> Tensor:
        return self.encode_pose_features(self.features(pose6d))

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        sent = self.sentence_embedder()(list(texts)).to(self.logit_scale.device)
        return self.encode_sentence_embeddings(sent)

    @torch.no_grad()
    def similarity(self, texts: Sequence[str], pose6d: Tensor) -> Tensor:
        """``cos(φ_text(texts[i]), φ_pose(poses[i]))`` ``(B,)`` in eval mode."""
        was = self.training
        self.eval()
        try:
            return (self.embed_texts(texts) * self.embed_poses(pose6d)).sum(-1)
        finally:
            self.train(was)

    @torch.no_grad()
    def evaluate(self, texts: Sequence[str], pose6d: Tensor, ks: Sequence[int] = (1, 5, 10),
                 pool: int | None = 32, seed: int = 0) -> dict[str, float]:  # fmt: skip
        """Recalls of :func:`posrft.eval.metrics.retrieval_recalls` on paired data."""
        was = self.training
        self.eval()
        try:
            text, pose = self.embed_texts(texts), self.embed_poses(pose6d)
            return retrieval_recalls(text, pose, ks, pool, seed)
        finally:
            self.train(was)

    # ------------------------------------------------------------------ files

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``path`` atomically (replacing it)."""
        with atomic_directory(path) as tmp:
            save_module(self, tmp / WEIGHTS_FILE)
            config = json.dumps(asdict(self.config), indent=2, sort_keys=True)
            (tmp / CONFIG_FILE).write_text(config)
        return Path(path)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, load_text_encoder: bool = True
    ) -> "RetrievalModel":
        """Load a folder written by :meth:`save_pretrained` (safetensors only), in eval mode."""
        folder = Path(path).expanduser()
        cfg_file, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_file.is_file() or not weights.is_file():
            raise FileNotFoundError(
                f"{str(folder)!r} is not a retrieval model folder: expected {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} (train one with `posrft retrieval train --data DIR --out DIR`)"
            )
        try:
            raw = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{cfg_file}: not valid JSON ({err})") from None
        if raw.get("model_type") != MODEL_TYPE:
            raise ValueError(
                f"{cfg_file}: model_type is {raw.get('model_type')!r}, expected {MODEL_TYPE!r}"
            )
        known = set(RetrievalConfig.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{cfg_file}: unknown config keys {unknown}")
        model = cls(RetrievalConfig(**raw), load_text_encoder=False)
        try:
            load_module(model, weights)
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - safetensors' own errors do not name the file
            raise ValueError(f"{weights}: not a readable safetensors file ({err})") from err
        if load_text_encoder:
            model.sentence_embedder()
        return model.eval()
