"""Floor 4: evaluation — metrics shared with the rewards, and the text–pose retrieval model.

- :mod:`~posrft.eval.metrics` — MPJPE / PA-MPJPE, retrieval recalls (R@k, random pools, mRecall).
- :mod:`~posrft.eval.sentence` — frozen sentence embeddings (packaged all-MiniLM-L6-v2), cached.
- :mod:`~posrft.eval.retrieval` — the text–pose retrieval model (encoders, save/load).
- :mod:`~posrft.eval.retrieval_train` — contrastive training, the two independent instances,
  ``main`` for ``posrft retrieval train|eval``.

Only the metrics are imported here; the others load sentence-transformers on use.
"""

from posrft.eval.metrics import (
    joint_errors,
    mpjpe,
    pa_mpjpe,
    pool_recall_at_k,
    pose_errors_mm,
    procrustes_align,
    recall_at_k,
    retrieval_recalls,
)

__all__ = [
    "joint_errors",
    "mpjpe",
    "pa_mpjpe",
    "pool_recall_at_k",
    "pose_errors_mm",
    "procrustes_align",
    "recall_at_k",
    "retrieval_recalls",
]
