"""Importing this module registers every built-in reward (see :mod:`rewards.registry`).

| name | target | reward |
|---|---|---|
| ``format`` | text | 1 if the response matches the template (one ``<POSE>``) |
| ``text_similarity`` | text | cos of sentence embeddings of response and reference |
| ``joint``, ``joint_exp`` | pose | min(1/(MPJPE+ε), cap) / exp(−MPJPE/τ), pelvis-aligned |
| ``joint_pa`` | pose | the inverse kind after Procrustes alignment |
| ``reprojection`` | pose | exp(−2D keypoint error / τ) through the sample's camera |
| ``semantic`` | pose | cos of retrieval-model text and pose embeddings (needs ``model_path``) |
| ``plausibility`` | pose | −Σ anatomical joint-limit violation (0 when plausible) |

Heavy dependencies (sentence-transformers, a retrieval model) load when a reward is built,
not on import.
"""

from rewards import format  # noqa: F401
from rewards import joint  # noqa: F401
from rewards import plausibility  # noqa: F401
from rewards import reprojection  # noqa: F401
from rewards import semantic  # noqa: F401
from rewards import text_similarity  # noqa: F401
