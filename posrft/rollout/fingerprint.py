"""Weight-sync verification: a CRC-32 of every synced tensor, on both ends.

After each sync a rollout worker reports ``{name: crc32}`` of the tensors it now *holds* (read
back from its own parameters after loading, not from the buffers it received), and the learner
compares them with the CRC-32 of its own tensors cast to the worker's dtype. A stale tensor (a
bucket never delivered, an adapter never applied, a load that silently skipped a key), a
corrupted one or a wrong cast shows up as a mismatch naming the worker and the tensor.

CRC-32 (zlib) over the tensor's little-endian bytes: exact (no float tolerance, so a CPU and a
GPU end agree bit for bit), detects every change of up to 32 consecutive bits and any other
change with probability 1 − 2⁻³², and runs at memory speed (about 2 GB/s per core here), with
the GIL released, so tensors are checksummed on a few threads in parallel.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

#: name → CRC-32 of the tensor's bytes.
Fingerprint = dict[str, int]


class WeightSyncError(RuntimeError):
    """A rollout worker does not hold what the learner sent (names the worker and the tensor)."""


def _crc_bytes(data: np.ndarray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def tensor_crc(t: Tensor, dtype: torch.dtype | None = None) -> int:
    """CRC-32 of ``t``'s bytes (cast to ``dtype`` first when given; copied to the CPU and made
    contiguous when needed)."""
    t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    flat = t.cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return 0
    return _crc_bytes(flat.view(torch.uint8).numpy())


def fingerprint(tensors: Mapping[str, Tensor], dtypes: Mapping[str, torch.dtype] | None = None,
                threads: int = 1) -> Fingerprint:
    """``{name: tensor_crc(tensor, dtypes[name])}``; ``threads`` > 1 checksums tensors in
    parallel (zlib releases the GIL)."""
    dtypes = dtypes or {}
    names = list(tensors)
    if threads <= 1 or len(names) < 2:
        return {n: tensor_crc(tensors[n], dtypes.get(n)) for n in names}
    with ThreadPoolExecutor(max_workers=threads) as ex:
        crcs = ex.map(lambda n: tensor_crc(tensors[n], dtypes.get(n)), names)
        return dict(zip(names, crcs))


def expected_fingerprint(state_dict: Mapping[str, Tensor],
                         manifest: Mapping[str, tuple[tuple[int, ...], str]],
                         threads: int = 1) -> Fingerprint:
    """The learner's side: CRC-32s of ``state_dict`` cast to the dtypes the workers hold
    (``manifest``: name → (shape, dtype string), what the workers report), as their loading
    casts them."""
    dtypes = {n: getattr(torch, manifest[n][1].removeprefix("torch.")) for n in state_dict}
    return fingerprint(state_dict, dtypes, threads)


def compare(expected: Fingerprint, got: Fingerprint, where: str) -> None:
    """Raise :class:`WeightSyncError` naming ``where`` (the worker) and the first tensor whose
    CRC differs or is missing, with the number of such tensors."""
    bad = [n for n, crc in expected.items() if got.get(n) != crc]
    if not bad:
        return
    name = bad[0]
    held = got.get(name)
    held_s = "nothing" if held is None else f"crc32 {held:08x}"
    more = f" ({len(bad) - 1} more tensor(s) differ, e.g. {bad[1:4]})" if len(bad) > 1 else ""
    raise WeightSyncError(
        f"weight sync verification failed on {where}: tensor {name!r} holds {held_s} but the "
        f"learner sent crc32 {expected[name]:08x}{more}; the worker is not sampling with the "
        f"learner's weights")
