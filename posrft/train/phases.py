"""The phase a learner rank is in, so that a stuck or failed collective can be named.

Every rank runs the same sequence of collectives. When one rank hangs (a reward that never
returns, a dead peer) the others wait inside a collective until ``ddp_timeout`` and then fail
with gloo's or NCCL's own message, which says nothing about *what* the run was doing. The
learner marks its phases (``set_phase("hygrpo step 3: scatter")`` or ``with phase(...)``), and
the rank's error handler (:mod:`posrft.train.guard`) reports the last one.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

_current: list[tuple[str, float]] = [("start-up", time.monotonic())]


def set_phase(name: str) -> None:
    """Record that this rank now does ``name`` (cheap: call it at every phase boundary)."""
    _current[0] = (name, time.monotonic())


def current_phase() -> tuple[str, float]:
    """``(name, seconds since it began)``."""
    name, t0 = _current[0]
    return name, time.monotonic() - t0


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark ``name`` for the block; the previous phase is restored after it."""
    before = _current[0]
    set_phase(name)
    try:
        yield
    finally:
        _current[0] = (before[0], time.monotonic())


#: Substrings of the errors torch.distributed backends raise when a peer does not answer.
COLLECTIVE_FAILURES = (
    "timed out", "timeout", "Timed out", "Connection reset", "Connection closed by peer",
    "connection refused", "Broken pipe", "DistStoreError", "recvValue", "NCCL",
    "gloo", "Gloo", "wait timeout", "socket",
)  # fmt: skip


def is_collective_failure(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return type(err).__name__ in ("DistBackendError", "DistStoreError", "DistNetworkError") or (
        isinstance(err, RuntimeError) and any(s in text for s in COLLECTIVE_FAILURES)
    )
