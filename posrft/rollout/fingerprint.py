"""Weight-sync verification: a 64-bit hash of every synced tensor, on both ends.

After each sync a rollout worker reports ``{name: hash}`` of the tensors it now *holds* (read
back from its own parameters after loading, not from the buffers it received), and the learner
compares them with the hashes of its own tensors cast to the worker's dtype. A stale tensor (a
bucket never delivered, an adapter never applied, a load that silently skipped a key), a
corrupted one or a wrong cast shows up as a mismatch naming the worker and the tensor.

The hash is XXH3-64 (``xxhash``, already a dependency of ``datasets``) over the tensor's bytes:
exact (no float tolerance, so a CPU and a GPU end agree bit for bit), any change is missed with
probability 2⁻⁶⁴, and it runs at memory speed: measured here 29 GB/s on one core against
2.8 GB/s for zlib's CRC-32, which made verification cost more than the sync itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import xxhash
from torch import Tensor

#: name → XXH3-64 of the tensor's bytes.
Fingerprint = dict[str, int]


class WeightSyncError(RuntimeError):
    """A rollout worker does not hold what the learner sent (names the worker and the tensor)."""


def _hash_bytes(data: np.ndarray | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data)


def tensor_hash(t: Tensor, dtype: torch.dtype | None = None) -> int:
    """XXH3-64 of ``t``'s bytes (cast to ``dtype`` first when given; copied to the CPU and made
    contiguous when needed)."""
    t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    flat = t.cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return _hash_bytes(b"")
    return _hash_bytes(flat.view(torch.uint8).numpy())


def fingerprint(tensors: Mapping[str, Tensor], dtypes: Mapping[str, torch.dtype] | None = None,
                threads: int = 1) -> Fingerprint:
    """``{name: tensor_hash(tensor, dtypes[name])}``; ``threads`` > 1 hashes tensors in
    parallel (worth it for GPU tensors, whose copies to the CPU overlap)."""
    dtypes = dtypes or {}
    names = list(tensors)
    if threads <= 1 or len(names) < 2:
        return {n: tensor_hash(tensors[n], dtypes.get(n)) for n in names}
    with ThreadPoolExecutor(max_workers=threads) as ex:
        hashes = ex.map(lambda n: tensor_hash(tensors[n], dtypes.get(n)), names)
        return dict(zip(names, hashes))


def expected_fingerprint(state_dict: Mapping[str, Tensor],
                         manifest: Mapping[str, tuple[tuple[int, ...], str]],
                         threads: int = 1) -> Fingerprint:
    """The learner's side: hashes of ``state_dict`` cast to the dtypes the workers hold
    (``manifest``: name → (shape, dtype string), what the workers report), as their loading
    casts them."""
    dtypes = {n: getattr(torch, manifest[n][1].removeprefix("torch.")) for n in state_dict}
    return fingerprint(state_dict, dtypes, threads)


def compare(expected: Fingerprint, got: Fingerprint, where: str) -> None:
    """Raise :class:`WeightSyncError` naming ``where`` (the worker) and the first tensor whose
    hash differs or is missing, with the number of such tensors."""
    bad = [n for n, h in expected.items() if got.get(n) != h]
    if not bad:
        return
    name = bad[0]
    held = got.get(name)
    held_s = "nothing" if held is None else f"hash {held:016x}"
    more = f" ({len(bad) - 1} more tensor(s) differ, e.g. {bad[1:4]})" if len(bad) > 1 else ""
    raise WeightSyncError(
        f"weight sync verification failed on {where}: tensor {name!r} holds {held_s} but the "
        f"learner sent hash {expected[name]:016x}{more}; the worker is not sampling with the "
        f"learner's weights")
