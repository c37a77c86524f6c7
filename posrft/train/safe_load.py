"""Resume without running code from checkpoint files.

``accelerate.save_state`` under DeepSpeed writes pickles (``torch.save``) and DeepSpeed reads them
back with ``torch.load(weights_only=False)``: a crafted ``*_optim_states.pt`` runs any code on
resume. posrft never unpickles a checkpoint that way:

1. :func:`scan_checkpoint` disassembles every pickle in the folder *statically*
   (``torch.serialization.get_unsafe_globals_in_checkpoint``) and refuses the checkpoint when a
   file names a global outside torch's weights-only set plus :data:`ALLOWED_GLOBALS` (the few
   plain-data classes DeepSpeed and accelerate store), naming the file and the global;
2. :func:`weights_only_loads` makes every ``torch.load`` inside the block (DeepSpeed's and
   accelerate's) a ``weights_only=True`` load with that allow-list, so what the scan did not see
   cannot run either.

Our own state (step, sampler position, LR schedule) is JSON (``trainer_state.json``).
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch

#: Globals a checkpoint may name besides torch's weights-only defaults: DeepSpeed's ZeRO
#: optimizer state (a fragment-address dataclass, its loss scaler, the stage enum) and
#: accelerate's RNG state (numpy arrays). All are plain data: building them runs no user code.
ALLOWED_GLOBALS = (
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
)
_NUMPY_DTYPE_PREFIX = "numpy.dtypes."  # numpy.dtypes.UInt32DType and friends

PICKLE_SUFFIXES = (".pt", ".bin", ".pkl", ".pth")


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file would run code (or is not a torch checkpoint) when loaded."""


def is_allowed(name: str) -> bool:
    return name in ALLOWED_GLOBALS or (name.startswith(_NUMPY_DTYPE_PREFIX) and name.endswith("DType"))


def scan_file(path: str | Path) -> list[str]:
    """The globals ``path`` names that are not allowed (empty: safe to load weights-only).

    Raises :class:`UnsafeCheckpointError` when ``path`` is not a ``torch.save`` zip archive
    (a raw pickle, a truncated file): it cannot be checked without unpickling it.
    """
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, pickle.UnpicklingError, EOFError, OSError) as err:
        raise UnsafeCheckpointError(
            f"checkpoint file {str(path)!r} is not a readable torch.save archive ({err}); it is "
            "not loaded because checking a raw or damaged pickle would mean running it"
        ) from None
    return sorted(g for g in found if not is_allowed(g))


def scan_checkpoint(folder: str | Path) -> None:
    """Refuse ``folder`` when any pickle in it names a global outside the allow-list."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.suffix in PICKLE_SUFFIXES:
            bad = scan_file(path)
            if bad:
                raise UnsafeCheckpointError(
                    f"refusing to resume from {str(folder)!r}: {str(path)!r} holds a pickled "
                    f"reference to {', '.join(bad)}, which is not plain tensor/optimizer data; "
                    "loading it could run code. Resume only from checkpoints this toolkit wrote."
                )


def _resolve(name: str) -> Any | None:
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def allowed_objects() -> list[Any]:
    """The allow-listed globals that can be imported here (DeepSpeed's only where installed)."""
    import numpy as np

    objs = [o for o in (_resolve(n) for n in ALLOWED_GLOBALS) if o is not None]
    objs += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return objs


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Inside the block, ``torch.load`` ignores ``weights_only=False`` and loads weights-only
    with :func:`allowed_objects` allowed; a refused global raises
    :class:`UnsafeCheckpointError` naming the file."""
    original = torch.load
    allowed = allowed_objects()

    def load(f: Any, map_location: Any = None, *args: Any, weights_only: Any = None, **kwargs: Any) -> Any:
        with torch.serialization.safe_globals(allowed):
            try:
                return original(f, map_location, *args, weights_only=True, **kwargs)
            except pickle.UnpicklingError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise UnsafeCheckpointError(
                    f"refusing to load {str(f)!r}: it holds objects that a weights-only load does "
                    f"not allow ({first})"
                ) from None

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
