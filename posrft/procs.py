"""Child processes that stop with the process that started them (floor 1).

``subprocess.Popen(..., preexec_fn=parent_death_preexec(sig))`` makes the child receive ``sig``
when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``). The C function is looked up here,
before the fork: between fork and exec the child of a multi-threaded process (torch, Ray) may
only make async-signal-safe calls, and loading a library there can deadlock on a lock another
thread held at the fork.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def parent_death_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child ``sig`` when this process dies, or None where there
    is no ``prctl`` (not Linux: callers then rely on stopping their children themselves).

    If this process died between the fork and the call, the child sends ``sig`` to itself:
    the kernel would not, as its parent is already gone."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    sig = int(sig)

    def preexec() -> None:  # in the child, between fork and exec: no imports, no library loads
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec
