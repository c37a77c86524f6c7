"""Weight buckets: a state dict split into a few objects for the Ray object store.

Ray deserialises NumPy arrays zero-copy (the reader maps the object store's shared memory),
while a ``torch.Tensor`` is pickled and copied on every ``ray.get``. So a bucket holds each
tensor as a flat ``uint8`` NumPy *view* of its bytes (no copy for a contiguous CPU tensor, any
dtype, bf16 included) plus a table of ``(name, dtype, shape)``. ``ray.put`` copies the arrays
into shared memory once (pickle protocol 5 out-of-band buffers, 64-byte aligned); each worker
reads them in place and copies every tensor straight into its parameter. One copy on the
learner's side, one per worker: nothing else.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a bucket: its name, dtype (``str(torch.dtype)``) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class PackedBucket:
    """``arrays[i]``: the bytes of tensor ``entries[i]``, a flat uint8 array (numel · itemsize)."""

    arrays: tuple[np.ndarray, ...]
    entries: tuple[TensorEntry, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]


def _torch_dtype(dtype: str) -> torch.dtype:
    value = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"{dtype!r} is not a torch dtype")
    return value


def _is_float(dtype: str) -> bool:
    return _torch_dtype(dtype).is_floating_point


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def plan_buckets(state_dict: Mapping[str, Tensor], bucket_bytes: int) -> list[list[str]]:
    """Split the keys, in order, into groups of at most ``bucket_bytes`` bytes each; a tensor
    larger than ``bucket_bytes`` gets a bucket of its own."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be > 0 bytes, got {bucket_bytes}")
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, tensor in state_dict.items():
        n = _nbytes(tensor)
        if current and size + n > bucket_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += n
    if current:
        groups.append(current)
    return groups


def _byte_view(t: Tensor) -> np.ndarray:
    # reshape(-1) first: view(uint8) needs a contiguous last dimension; cpu()/contiguous() copy
    # only when they must (GPU or strided tensors)
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def pack_bucket(tensors: Iterable[tuple[str, Tensor]]) -> PackedBucket:
    """``(name, tensor)`` pairs as a bucket. The arrays *view* contiguous CPU tensors (no copy):
    put the bucket in the object store (which copies) before changing the tensors."""
    entries, arrays = [], []
    for name, t in tensors:
        entries.append(TensorEntry(name, str(t.dtype), tuple(t.shape)))
        arrays.append(_byte_view(t))
    return PackedBucket(tuple(arrays), tuple(entries))


def unpack_bucket(bucket: PackedBucket) -> dict[str, Tensor]:
    """Tensors viewing the bucket's arrays (no copy). Arrays from ``ray.get`` are read-only
    shared memory: the views must only be read (e.g. copied into parameters)."""
    if len(bucket.arrays) != len(bucket.entries):
        raise ValueError(f"bucket has {len(bucket.arrays)} arrays for {len(bucket.entries)} "
                         f"entries")
    out: dict[str, Tensor] = {}
    for array, e in zip(bucket.arrays, bucket.entries):
        dtype = _torch_dtype(e.dtype)
        expected = int(np.prod(e.shape, dtype=np.int64)) * dtype.itemsize
        if array.nbytes != expected:
            raise ValueError(f"bucket entry {e.name!r}: {array.nbytes} bytes, but {e.dtype} "
                             f"{tuple(e.shape)} needs {expected}")
        with warnings.catch_warnings():
            # torch warns that the array is not writable; we only read from it
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.from_numpy(array)
        out[e.name] = flat.view(dtype).view(e.shape)
    return out


def pack_state_dict(state_dict: Mapping[str, Tensor], bucket_bytes: int) -> list[PackedBucket]:
    """All of ``state_dict`` as buckets of at most ``bucket_bytes`` (see :func:`plan_buckets`)."""
    return [pack_bucket((name, state_dict[name]) for name in group)
            for group in plan_buckets(state_dict, bucket_bytes)]


#: name → (shape, dtype string) of every tensor a model accepts; what workers report.
Manifest = dict[str, tuple[tuple[int, ...], str]]


def manifest_of(state_dict: Mapping[str, Tensor]) -> Manifest:
    return {name: (tuple(t.shape), str(t.dtype)) for name, t in state_dict.items()}


def check_compatible(target: Manifest, incoming: Manifest, where: str) -> None:
    """Raise ``ValueError`` unless every incoming tensor names a target tensor of the same shape
    and the same kind (floating point or not; a float dtype may differ, it is cast on load)."""
    unknown = [name for name in incoming if name not in target]
    if unknown:
        raise ValueError(
            f"{where}: {len(unknown)} weight key(s) unknown to the rollout model, e.g. "
            f"{unknown[:5]}; the model has keys like {list(target)[:3]} (for a LoRA learner send "
            f"posrft.rollout.merged_state_dict(policy), not policy.state_dict())")
    for name, (shape, dtype) in incoming.items():
        want_shape, want_dtype = target[name]
        if tuple(shape) != tuple(want_shape):
            raise ValueError(f"{where}: weight {name!r} has shape {tuple(shape)} but the rollout "
                             f"model's is {tuple(want_shape)}")
        if _is_float(dtype) != _is_float(want_dtype):
            raise ValueError(f"{where}: weight {name!r} has dtype {dtype} but the rollout model's "
                             f"is {want_dtype}")
