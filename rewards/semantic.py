"""R_semantic = cos(φ_text(c), φ_pose(p)): does the pose match its caption, per a retrieval model?

``φ_text`` and ``φ_pose`` are the two encoders of a trained text–pose retrieval model
(:class:`posrft.eval.retrieval.RetrievalModel`, loaded from ``model_path``, required); ``c`` is
the sample's caption (column ``text_column``, default ``caption``). The result is in [-1, 1].

Use a model trained on one half of the data (``posrft retrieval train ... --subset a``) and
evaluate with another instance (other seed, other half), so that the evaluator is not the
network the policy was optimised against. Caption embeddings are cached per distinct caption
(the G completions of a prompt share one). A completion without a pose, or whose caption is
``None``, gets ``None``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from posrft.eval.retrieval import RetrievalModel
from rewards.columns import gather_pose_inputs, scatter
from rewards.registry import register_reward


class SemanticReward:
    """Factory for R_semantic (module docstring).

    Args:
        model_path: folder written by ``RetrievalModel.save_pretrained`` /
            ``posrft retrieval train --out``.
        text_column: the column holding each sample's description.
        device: where the retrieval model runs.
    """

    def __init__(
        self, model_path: str | None = None, text_column: str = "caption", device: str = "cpu"
    ) -> None:
        self.__name__ = "semantic"
        if not model_path:
            raise ValueError(
                "reward 'semantic' needs kwargs.model_path: a text-pose retrieval model folder "
                "(train one with `posrft retrieval train --data DATA --out DIR --subset a`), e.g. "
                '{"func": "semantic", "kwargs": {"model_path": "models/retrieval_reward"}}'
            )
        try:
            self.model = RetrievalModel.from_pretrained(model_path).to(device).eval()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"reward 'semantic': {err}") from err
        self.text_column, self.device = text_column, device
        self._text_cache: dict[str, Tensor] = {}

    def _text_embeddings(self, texts: list[str]) -> Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            for t, e in zip(missing, self.model.embed_texts(missing)):
                self._text_cache[t] = e
            if len(self._text_cache) > 200_000:  # bounded: drop the oldest half
                for key in list(self._text_cache)[: len(self._text_cache) // 2]:
                    del self._text_cache[key]
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Any = None,
        poses: Sequence[Tensor | None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        n, rows, pose6d, cols = gather_pose_inputs(self.__name__, poses, completions, columns,
                                                   [self.text_column])  # fmt: skip
        texts = cols[self.text_column]
        if not rows:
            return [None] * n
        for i in rows:
            if not isinstance(texts[i], str):
                raise ValueError(
                    f"reward 'semantic': column {self.text_column!r}, sample {i}: expected a "
                    f"string, got {type(texts[i]).__name__}"
                )
        t = self._text_embeddings([texts[i] for i in rows])
        p = self.model.embed_poses(pose6d.to(self.device))
        return scatter(n, rows, (t * p).sum(-1).clamp(-1.0, 1.0).cpu())


register_reward("semantic", target="pose")(SemanticReward)

__all__ = ["SemanticReward"]
