"""Carry a trained DrAction over to another skeleton format (cross-format transfer).

Most renderer parameters do not depend on the format: the Gaussian scales, the appearance MLP,
the person embeddings, the depth-colour mix and the neural feature modulator. Two tensors are
per primitive: the learnable features ``f_i`` and the fixed prior colour/opacity logits. For
those, each primitive of the new format takes the values of the *nearest* primitive of the old
format on the stand-in body's rest pose, with both formats placed through their SMPL joint maps
(``X_fmt = W_fmt @ X_smpl``). So a wrist sample in NTU-25 looks like the SMPL wrist sample it
sits on, and colours mean the same body part in both formats.
"""

from __future__ import annotations

import torch

from posrft.body.formats import get_format
from posrft.data.skeleton import rest_joints
from posrft.render.draction import DrAction
from posrft.render.primitives import PrimitiveLayout

PER_PRIMITIVE = ("appearance.features", "appearance.prior_logit")


def rest_primitive_positions(fmt_name: str, layout: PrimitiveLayout) -> torch.Tensor:
    """``(N, 3)`` primitive centres on the rest pose: ``(1 - t) X[a] + t X[b]``."""
    fmt = get_format(fmt_name)
    x = torch.as_tensor(fmt.smpl_matrix(), dtype=torch.float64) @ rest_joints(torch.float64)
    t = layout.t.to(torch.float64)[:, None]
    return (1 - t) * x[layout.joint_a] + t * x[layout.joint_b]


def nearest_primitives(src_fmt: str, src: PrimitiveLayout, dst_fmt: str, dst: PrimitiveLayout) -> torch.Tensor:
    """``(N_dst,)`` index of the nearest source primitive for every destination primitive."""
    a = rest_primitive_positions(src_fmt, src)
    b = rest_primitive_positions(dst_fmt, dst)
    return torch.cdist(b, a, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)


def transfer_renderer(src: DrAction, dst_fmt: str, *, samples_per_bone: int, nfm: bool) -> DrAction:
    """A frozen renderer for ``dst_fmt`` with ``src``'s (trained) parameters carried over."""
    dst = DrAction(dst_fmt, image_size=(src.height, src.width), num_frames=src.num_frames,
                   samples_per_bone=samples_per_bone, nfm=nfm, learnable=False,
                   max_people=src.max_people)
    near = nearest_primitives(src.fmt.name, src.layout, dst_fmt, dst.layout)
    src_state = src.state_dict()
    new_state = {}
    for key, value in dst.state_dict().items():
        if key in PER_PRIMITIVE:
            new_state[key] = src_state[key][near].clone()
        elif key in src_state and src_state[key].shape == value.shape:
            new_state[key] = src_state[key].clone()
        else:
            raise ValueError(f"cannot carry renderer tensor {key!r} from {src.fmt.name!r} to "
                             f"{dst_fmt!r} (shape {tuple(value.shape)})")
    dst.load_state_dict(new_state)
    return dst.train(src.training)
