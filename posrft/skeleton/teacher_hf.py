"""A teacher backed by a local Hugging Face causal LM / chat model (offline, batched).

The prompt (:func:`~posrft.skeleton.teacher_base.build_messages`) gives the kinematic account of
the clip, the candidate labels and the true label, and asks for a rationale ending with
``Label: <label>``. It goes through the tokenizer's chat template when it has one (system turn
folded into the user turn if the template rejects it), else a plain ``System/User/Assistant``
transcript. ``prefill`` is appended after the assistant's turn opens and is part of the output,
so a caller can steer the start of every answer. Decoding is greedy unless ``temperature > 0``;
outputs are validated by the base class (an unfinished or wrong label line is ``"invalid"``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from posrft.skeleton.teacher_base import TeacherBase, TeacherRequest, build_messages


class HFTeacher(TeacherBase):
    """``HFTeacher(model_path)``: load with ``local_files_only=True`` and explain in batches.

    ``model`` / ``tokenizer`` are the Hugging Face objects, loaded on first use.
    """

    def __init__(self, model_path: str | Path, *, max_new_tokens: int = 256, batch_size: int = 4,
                 temperature: float = 0.0, top_p: float = 1.0, prefill: str = "",
                 device: str = "cpu", dtype: str | None = None, seed: int = 0) -> None:
        path = Path(model_path)
        if not path.is_dir():
            raise FileNotFoundError(f"HF teacher model_path {str(path)!r} is not a folder")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) and batch_size ({batch_size}) "
                             "must be >= 1")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model_path = path
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.prefill, self.seed = prefill, int(seed)
        self.device, self.dtype = device, dtype
        self._tokenizer = self._model = None  # loaded on first use: a fully cached run never loads
        settings = json.dumps([self.max_new_tokens, self.temperature, top_p, prefill, seed])
        self.name = f"hf:{path.name}@{hashlib.sha256(settings.encode()).hexdigest()[:8]}"

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            tok.padding_side = "left"  # decoder-only batching: prompts end at the same column
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._tokenizer = tok
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            kwargs = {"dtype": getattr(torch, self.dtype)} if self.dtype else {}
            model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True,
                                                         **kwargs)
            self._model = model.to(self.device).eval()
        return self._model

    def prompt(self, req: TeacherRequest) -> str:
        """The exact text fed to the model for ``req`` (prefill included)."""
        messages = build_messages(req)
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            try:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # some templates (e.g. Gemma's) refuse a system turn
                merged = [{"role": "user",
                           "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
                text = tok.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        else:
            text = (f"System: {messages[0]['content']}\n\nUser: {messages[1]['content']}\n\n"
                    "Assistant:" + (" " if self.prefill and not self.prefill[0].isspace() else ""))
        return text + self.prefill

    @torch.no_grad()
    def generate(self, prompts: list[str]) -> list[str]:
        """Completions (prefill + generated text, special tokens dropped) of ``prompts``."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        kw = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            out = self.model.generate(**enc, **kw)
        new = out[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [self.prefill + t for t in texts]

    def _run(self, requests: list[TeacherRequest], emit) -> None:
        for s in range(0, len(requests), self.batch_size):
            chunk = requests[s : s + self.batch_size]
            for j, text in enumerate(self.generate([self.prompt(r) for r in chunk])):
                emit(s + j, text)
