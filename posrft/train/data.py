"""Training data plumbing: draw prompts, encode SFT targets.

Datasets are the ``DatasetDict`` folders ``posrft data synth`` writes (or any dataset with the
same columns): ``prompt`` (TRL conversational messages), ``completion`` (the target assistant
message), optional ``images`` (list of PIL images), ``gt_pose_6d`` and the columns rewards read
(handed to them by :func:`rewards.api.reward_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from rewards.api import completion_text


@dataclass
class PromptSampler:
    """Deterministic shuffled passes over ``n`` rows; its position is saved in checkpoints."""

    n: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        out: list[int] = []
        order = self._order()
        while len(out) < k:
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            take = min(k - len(out), self.n - self.position)
            out.extend(order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def encode_completions(policy: Any, prompts: Sequence[Any], completions: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """Target completion ids/mask ``(N, T)``, right-padded, ending at the first EOS.

    The target is what the chat template puts after the generation prompt for the assistant
    turn, so SFT teaches exactly the format that sampling continues from.
    """
    proc = policy.processing
    eos = set(policy.eos_token_ids)
    tok = policy.tokenizer
    rows: list[list[int]] = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        head = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = proc.apply_chat_template(
            msgs + [{"role": "assistant", "content": completion_text(c)}], tokenize=False
        )
        if not full.startswith(head):
            raise ValueError(f"completion {i}: the chat template does not render the assistant turn "
                             "as a continuation of the generation prompt")  # fmt: skip
        ids = tok(full[len(head) :], add_special_tokens=False)["input_ids"]
        cut = next((j + 1 for j, t in enumerate(ids) if t in eos), len(ids))
        if cut == len(ids) and (not ids or ids[-1] not in eos):
            ids = ids + [policy.eos_token_ids[0]]
            cut = len(ids)
        rows.append(ids[:cut])
    t = max(len(r) for r in rows)
    out = torch.full((len(rows), t), policy.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return out, mask
