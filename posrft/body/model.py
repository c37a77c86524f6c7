"""``BodyModel``: one wrapper over smplx's SMPL, SMPL-H and SMPL-X with the offline stand-in.

Which file is loaded
--------------------
``body_models_dir(model_dir)`` (argument, then ``$POSRFT_BODY_MODELS``) names the user's folder.
Inside it the file for ``(model_type, gender)`` is looked up directly or in a ``smpl/``,
``smplh/``, ``smplx/`` sub-folder (see :data:`MODEL_FILES`), and only that one file is given to
``smplx.create`` (so nothing else in the folder is unpickled). With no folder configured,
``model_type="smpl"`` uses the procedurally generated stand-in (:mod:`posrft.body.standin`)
through the very same ``smplx.create`` call, with a loud warning.

Which joints are returned
-------------------------
``BodyOutput.joints`` are the *body* joints, in SMPL order: all 24 for SMPL (hands included),
the first 22 (pelvis .. right_wrist) for SMPL-H and SMPL-X, whose later joints are fingers and
face. ``parents`` and :meth:`BodyModel.rest_joints` describe exactly these joints, so
``fk_joints(rotmats[:, :J], model.rest_joints(betas), model.parents)`` reproduces them.
``BodyOutput.full_joints`` is everything smplx returns (plus its extra vertex-picked joints).
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import smplx
import torch
from smplx.lbs import blend_shapes, vertices2joints
from torch import Tensor, nn

from posrft.body.fk import fk_joints
from posrft.body.formats import SMPL24_JOINTS
from posrft.body.rotations import (
    axis_angle_pose_to_rotmat,
    rotmat_to_axis_angle_pose,
)
from posrft.body.standin import ensure_standin, warn_standin
from posrft.config import BODY_MODELS_ENV, body_models_dir

logger = logging.getLogger("posrft.body")

__all__ = ["BodyModel", "BodyOutput", "MODEL_FILES", "NUM_BODY_JOINTS", "resolve_model_file"]

#: File names tried, in order, for each model type ({G} = NEUTRAL / MALE / FEMALE).
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "smpl": ("SMPL_{G}.pkl",),
    "smplh": ("SMPLH_{G}.pkl", "SMPLH_{G}.npz"),
    "smplx": ("SMPLX_{G}.npz", "SMPLX_{G}.pkl"),
}
#: Joints returned in ``BodyOutput.joints`` (and described by ``parents``).
NUM_BODY_JOINTS: dict[str, int] = {"smpl": 24, "smplh": 22, "smplx": 22}
GENDERS = ("neutral", "male", "female")


@dataclass
class BodyOutput:
    """Result of :meth:`BodyModel.forward`.

    Attributes:
        joints: (B, J, 3) body joints, J = 24 (SMPL) or 22 (SMPL-H / SMPL-X), SMPL order.
        vertices: (B, V, 3) mesh vertices (V = 6890 for SMPL/SMPL-H), or ``None`` unless asked.
        full_joints: (B, K, 3) all joints smplx returns, extra vertex-picked joints included.
    """

    joints: Tensor
    vertices: Tensor | None
    full_joints: Tensor


def resolve_model_file(model_type: str, gender: str, folder: Path) -> Path:
    """The model file for ``(model_type, gender)`` in ``folder`` or ``folder/<model_type>/``.

    Raises ``FileNotFoundError`` naming the folder and every file name that was expected.
    """
    names = [n.format(G=gender.upper()) for n in MODEL_FILES[model_type]]
    candidates = [folder / n for n in names] + [folder / model_type / n for n in names]
    for path in candidates:
        if path.is_file():
            return path
    expected = ", ".join(str(p.relative_to(folder)) for p in candidates)
    raise FileNotFoundError(
        f"no {model_type.upper()} model for gender {gender!r} in body-model folder "
        f"{str(folder)!r}: expected one of {expected}"
    )


def _load_smplx(path: Path, model_type: str, gender: str, num_betas: int, dtype: torch.dtype):
    kwargs = dict(gender=gender, num_betas=num_betas, dtype=dtype)
    if model_type in ("smplh", "smplx"):
        # Full-rotation hands, zero = flat hand, so an omitted hand pose means a flat hand.
        kwargs.update(ext=path.suffix[1:], use_pca=False, flat_hand_mean=True)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # smplx prints notices on stdout
            module = smplx.create(model_path=str(path), model_type=model_type, **kwargs)
    except ModuleNotFoundError as err:
        raise RuntimeError(
            f"cannot read body-model file {str(path)!r}: it needs the Python module "
            f"{err.name!r} (original SMPL .pkl files pickle 'chumpy' objects). Convert the "
            "file to plain numpy arrays (the SMPL-X project's 'clean_ch' tools do this)"
        ) from err
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, ValueError) as err:
        raise ValueError(
            f"body-model file {str(path)!r} is not a valid {model_type.upper()} model: {err}"
        ) from err
    if captured.getvalue().strip():
        logger.debug("smplx: %s", captured.getvalue().strip())
    return module


class BodyModel(nn.Module):
    """SMPL / SMPL-H / SMPL-X body model (smplx), frozen (no trainable parameters).

    Args:
        model_type: ``"smpl"``, ``"smplh"`` or ``"smplx"``.
        gender: ``"neutral"``, ``"male"`` or ``"female"`` (the stand-in is neutral only).
        model_dir: folder with the user's model files; ``None`` falls back to
            ``$POSRFT_BODY_MODELS``, then (SMPL only) to the stand-in.
        num_betas: shape coefficients (smplx caps it at what the file has).
        device, dtype: where and in which precision the buffers live.
    """

    def __init__(
        self,
        model_type: str = "smpl",
        gender: str = "neutral",
        model_dir: str | Path | None = None,
        num_betas: int = 10,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        model_type, gender = str(model_type).lower(), str(gender).lower()
        if model_type not in MODEL_FILES:
            raise ValueError(
                f"model_type: expected one of {sorted(MODEL_FILES)}, got {model_type!r}"
            )
        if gender not in GENDERS:
            raise ValueError(f"gender: expected one of {list(GENDERS)}, got {gender!r}")
        folder = body_models_dir(model_dir)
        self.is_standin = folder is None
        if folder is None:
            if model_type != "smpl":
                raise FileNotFoundError(
                    f"no body-model folder configured for model_type={model_type!r}: set "
                    f"{BODY_MODELS_ENV} or model_dir to a folder with your "
                    f"{MODEL_FILES[model_type][0].format(G=gender.upper())} (the offline "
                    "stand-in exists only for SMPL)"
                )
            if gender != "neutral":
                raise ValueError(
                    f"gender={gender!r} needs the real SMPL files (set {BODY_MODELS_ENV} or "
                    "model_dir); the offline stand-in is gender-neutral only"
                )
            path = ensure_standin()
            warn_standin(path)
        else:
            path = resolve_model_file(model_type, gender, folder)
        self.model_type, self.gender, self.model_path = model_type, gender, path
        self.smpl = _load_smplx(path, model_type, gender, num_betas, dtype)
        self.smpl.requires_grad_(False)
        self.num_joints = NUM_BODY_JOINTS[model_type]
        self.joint_names = SMPL24_JOINTS[: self.num_joints]
        parents = self.smpl.parents[: self.num_joints].clone()
        parents[0] = -1
        self.register_buffer("parents", parents, persistent=False)
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ properties and shape

    @property
    def num_betas(self) -> int:
        return int(self.smpl.num_betas)

    @property
    def faces(self) -> Tensor:
        """(F, 3) long triangle indices."""
        return self.smpl.faces_tensor

    def _betas(self, betas: Tensor | None, batch: int) -> Tensor:
        buf = self.smpl.shapedirs
        if betas is None:
            return torch.zeros(batch, self.num_betas, dtype=buf.dtype, device=buf.device)
        betas = torch.as_tensor(betas).to(buf)
        if betas.ndim == 1:
            betas = betas[None]
        if betas.ndim != 2 or betas.shape[1] != self.num_betas or betas.shape[0] not in (1, batch):
            raise ValueError(
                f"betas: expected shape ({batch}, {self.num_betas}), (1, {self.num_betas}) or "
                f"({self.num_betas},), got {tuple(betas.shape)}"
            )
        _check_finite(betas, "betas")
        return betas.expand(batch, -1)

    def rest_joints(self, betas: Tensor | None = None) -> Tensor:
        """Rest-pose body joints ``J_regressor @ (v_template + shapedirs @ betas)``.

        ``betas`` (B, nb) or None -> (B, J, 3), J = :attr:`num_joints` (B = 1 for None).
        """
        if betas is not None:
            betas = torch.as_tensor(betas)
            betas = betas[None] if betas.ndim == 1 else betas
        betas = self._betas(betas, 1 if betas is None else betas.shape[0])
        v_shaped = self.smpl.v_template + blend_shapes(betas, self.smpl.shapedirs)
        return vertices2joints(self.smpl.J_regressor[: self.num_joints], v_shaped)

    # ------------------------------------------------------------------ posing

    def _pose(self, x: Tensor, n: int, name: str, batch: int | None) -> Tensor:
        """Accept (B, n*3) axis-angle or (B, n, 3, 3) / (B, 3, 3) for n == 1 rotmats -> rotmats."""
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        if n == 1 and x.ndim == 3 and x.shape[-2:] == (3, 3):
            x = x[:, None]
        if x.ndim == 2 and x.shape[1] == n * 3:
            rot = axis_angle_pose_to_rotmat(x.to(self.smpl.shapedirs), n)
        elif x.ndim == 4 and x.shape[1:] == (n, 3, 3):
            rot = x.to(self.smpl.shapedirs)
        else:
            alt = " or (B, 3, 3)" if n == 1 else ""
            raise ValueError(
                f"{name}: expected (B, {n * 3}) axis-angle or (B, {n}, 3, 3) rotation matrices"
                f"{alt} for {self.model_type.upper()}, got {tuple(x.shape)}"
            )
        if batch is not None and rot.shape[0] != batch:
            raise ValueError(f"{name}: batch size {rot.shape[0]} != global_orient's {batch}")
        _check_finite(rot, name)
        return rot

    def _inputs(self, global_orient, body_pose, betas, transl):
        go = self._pose(global_orient, 1, "global_orient", None)
        batch = go.shape[0]
        bp = self._pose(body_pose, self.smpl.NUM_BODY_JOINTS, "body_pose", batch)
        betas = self._betas(betas, batch)
        if transl is not None:
            transl = torch.as_tensor(transl).to(go)
            if transl.shape != (batch, 3):
                raise ValueError(f"transl: expected shape ({batch}, 3), got {tuple(transl.shape)}")
            _check_finite(transl, "transl")
        return go, bp, betas, transl

    def forward(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
        return_verts: bool = False,
    ) -> BodyOutput:
        """Pose the body with smplx's own forward (linear blend skinning).

        Args:
            global_orient: (B, 3) axis-angle, or (B, 3, 3) / (B, 1, 3, 3) rotation matrix.
            body_pose: (B, 69) SMPL / (B, 63) SMPL-H, SMPL-X axis-angle, or (B, 23|21, 3, 3).
            betas: (B, nb), (1, nb) or (nb,) shape coefficients; zeros when omitted.
            transl: (B, 3) translation added to joints and vertices.
            return_verts: also return the (B, V, 3) vertices.

        Non-finite inputs raise ``ValueError`` naming the input and the first bad sample.
        """
        go, bp, betas, transl = self._inputs(global_orient, body_pose, betas, transl)
        batch = go.shape[0]
        zeros = transl if transl is not None else go.new_zeros(batch, 3)
        if self.model_type == "smpl":
            out = self.smpl(global_orient=go, body_pose=bp, betas=betas, transl=zeros,
                            return_verts=return_verts, pose2rot=False)  # fmt: skip
        else:
            # SMPL-H/X add an axis-angle mean pose inside forward, so they take axis-angle.
            extra = {"left_hand_pose": go.new_zeros(batch, 45),
                     "right_hand_pose": go.new_zeros(batch, 45)}  # fmt: skip
            if self.model_type == "smplx":
                n_expr = self.smpl.num_expression_coeffs
                extra.update(jaw_pose=go.new_zeros(batch, 3), leye_pose=go.new_zeros(batch, 3),
                             reye_pose=go.new_zeros(batch, 3),
                             expression=go.new_zeros(batch, n_expr))  # fmt: skip
            out = self.smpl(global_orient=rotmat_to_axis_angle_pose(go),
                            body_pose=rotmat_to_axis_angle_pose(bp), betas=betas, transl=zeros,
                            return_verts=return_verts, pose2rot=True, **extra)  # fmt: skip
        return BodyOutput(
            joints=out.joints[:, : self.num_joints],
            vertices=out.vertices if return_verts else None,
            full_joints=out.joints,
        )

    def joints_only(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
    ) -> Tensor:
        """Body joints ``(B, J, 3)`` by the fast FK (:func:`posrft.body.fk.fk_joints`).

        Same inputs and result as ``forward(...).joints`` (up to float rounding), without
        skinning the mesh. For SMPL-H/X the wrist rotations do not move any returned joint.
        """
        go, bp, betas, transl = self._inputs(global_orient, body_pose, betas, transl)
        rotmats = torch.cat([go, bp], dim=1)[:, : self.num_joints]
        return fk_joints(rotmats, self.rest_joints(betas), self.parents, transl)

    def extra_repr(self) -> str:
        kind = "stand-in" if self.is_standin else str(self.model_path)
        return (
            f"model_type={self.model_type}, gender={self.gender}, "
            f"joints={self.num_joints}, file={kind}"
        )


def _check_finite(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming the first sample (dim 0) holding NaN or Inf."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}: sample {i} contains NaN or Inf")
