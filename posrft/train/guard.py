"""What every learner rank runs around its training function: orphan watchdog and error report.

**Orphans.** ``posrft train`` starts ``accelerate launch`` (torchrun), which starts one process
per rank, each in its own session; rank 0 may start a local Ray cluster. Killing the launcher
(even with ``kill -9``) must stop all of them. The launcher gives its child a parent-death
signal (:func:`posrft.launch.launch`); every rank also watches its parent and the launcher
(``POSRFT_LAUNCHER_PID``) from a daemon thread. When either disappears the rank

1. raises ``SystemExit`` in its main thread (SIGTERM handler), so ``finally`` blocks shut the
   rollout pool (and the Ray cluster it started) down;
2. after ``grace_s`` kills every process it started (its descendants, snapshotted first) and
   exits, even if the main thread is blocked inside a collective; a detached reaper process
   enforces that deadline a second later even if this process can no longer run Python.

**Errors.** An exception ends the rank with one line on stderr (``posrft (rank R): error: ...``),
naming the phase (:mod:`posrft.train.phases`) when a collective failed or timed out, and the full
traceback in ``OUTPUT_DIR/logs/error-rank{R}.txt``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from posrft.train.phases import current_phase, is_collective_failure

LAUNCHER_PID_ENV = "POSRFT_LAUNCHER_PID"
log = logging.getLogger("posrft.train")


# ---------------------------------------------------------------------------- processes
def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or None
    when it does not exist; with the pid it identifies one process even after pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return int(stat[stat.rindex(")") + 2:].split()[19])


def is_alive(pid: int, start_time: int | None) -> bool:
    now = process_start_time(pid)
    if now is None:
        return False
    if start_time is not None and now != start_time:
        return False  # the pid was reused
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().decode("ascii", "replace")
        return state[state.rindex(")") + 2] != "Z"  # a zombie is dead
    except (OSError, ValueError, IndexError):
        return False


def descendants(pid: int | None = None) -> list[Any]:
    """``psutil.Process`` objects of every process below ``pid`` (default: this one)."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def kill_processes(procs: list[Any], grace_s: float = 2.0) -> None:
    """SIGTERM ``procs``, wait up to ``grace_s``, SIGKILL what is left."""
    import psutil

    alive = []
    for p in procs:
        try:
            p.terminate()
            alive.append(p)
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass


# ---------------------------------------------------------------------------- watchdog
class _Watchdog:
    def __init__(self, poll_s: float, grace_s: float) -> None:
        self.poll_s, self.grace_s = poll_s, grace_s
        self.parent = os.getppid()
        self.parent_start = process_start_time(self.parent)
        launcher = os.environ.get(LAUNCHER_PID_ENV, "")
        self.launcher = int(launcher) if launcher.isdigit() else None
        self.launcher_start = None
        if self.launcher is not None:
            start = os.environ.get(LAUNCHER_PID_ENV + "_START", "")
            self.launcher_start = int(start) if start.isdigit() else process_start_time(self.launcher)
        self.thread = threading.Thread(target=self._run, name="posrft-parent-watchdog", daemon=True)

    def gone(self) -> str | None:
        if os.getppid() != self.parent or not is_alive(self.parent, self.parent_start):
            return f"its parent process (pid {self.parent}) is gone"
        if self.launcher is not None and not is_alive(self.launcher, self.launcher_start):
            return f"the posrft launcher (pid {self.launcher}) is gone"
        return None

    def _run(self) -> None:
        while True:
            time.sleep(self.poll_s)
            reason = self.gone()
            if reason is not None:
                break
        rank = os.environ.get("RANK", "0")
        print(f"posrft (rank {rank}): {reason}: stopping this rank and the processes it started",
              file=sys.stderr, flush=True)  # fmt: skip
        started = descendants()
        # A separate process enforces the deadline: this thread needs the GIL, which the main
        # thread may hold for long inside C code (Ray's shutdown was seen to).
        spawn_reaper(started, self.grace_s + 1.0)
        # However the rank ends from here (its finally blocks done, or forced below), what it
        # had started goes too: a Ray raylet stopped hard leaves its agents behind otherwise.
        atexit.register(lambda: kill_processes(started + descendants(), grace_s=0.3))
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # graceful: SystemExit in the main thread
        except OSError:
            pass
        time.sleep(self.grace_s)
        kill_processes(started + descendants(), grace_s=0.3)
        os._exit(143)


_REAPER = """
import os, signal, sys, time
time.sleep(float(sys.argv[1]))
for item in sys.argv[2:]:
    pid, start = (int(x) for x in item.split(":"))
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        if int(stat[stat.rindex(")") + 2:].split()[19]) == start:  # not a reused pid
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
"""


def spawn_reaper(procs: list[Any], delay_s: float) -> None:
    """After ``delay_s``, SIGKILL ``procs`` and this process if they still run: a detached
    process, so the deadline holds whatever this one is doing."""
    import subprocess

    items = []
    for pid in [p.pid for p in procs] + [os.getpid()]:
        start = process_start_time(pid)
        if start is not None:
            items.append(f"{pid}:{start}")
    try:
        subprocess.Popen([sys.executable, "-S", "-c", _REAPER, str(delay_s), *items],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    except OSError:
        pass  # the in-process deadline below still applies


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    # Let finally blocks run (rollout pool and Ray shutdown); a second SIGTERM exits at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def install_watchdog(poll_s: float = 0.5, grace_s: float = 3.0) -> bool:
    """Start the parent/launcher watchdog (once per process; main thread only). Returns False
    when there is nothing to watch (already orphaned to init)."""
    if os.getppid() == 1 or getattr(install_watchdog, "_installed", False):
        return False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
    _Watchdog(poll_s, grace_s).thread.start()
    install_watchdog._installed = True  # type: ignore[attr-defined]
    return True


# ---------------------------------------------------------------------------- errors
def describe_error(err: BaseException, timeout_s: float | None = None) -> str:
    """One line for ``err``; a collective failure names the phase the rank was in."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if is_collective_failure(err):
        name, seconds = current_phase()
        limit = f" (ddp_timeout={timeout_s:g} s)" if timeout_s else ""
        return (f"a collective operation failed in phase '{name}' after {seconds:.0f} s{limit}: "
                f"another rank did not get there — stuck, or died (then its own error is printed "
                f"too) [{text[:300]}]")  # fmt: skip
    if isinstance(err, (ValueError, TypeError, FileNotFoundError)):  # messages that name their cause
        return text
    return f"{type(err).__name__}: {text}"


def run_rank(train: Callable[[Any], Any], cfg: Any) -> int:
    """``train(cfg)`` with the watchdog installed; returns the process exit code."""
    install_watchdog()
    rank = os.environ.get("RANK", "0")
    try:
        train(cfg)
    except KeyboardInterrupt:
        print(f"posrft (rank {rank}): interrupted", file=sys.stderr, flush=True)
        return 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code:
            print(f"posrft (rank {rank}): stopped (exit {code})", file=sys.stderr, flush=True)
        return code
    except Exception as err:  # noqa: BLE001 - one line here, the traceback in a file
        where = _write_traceback(getattr(cfg, "output_dir", None), rank)
        msg = describe_error(err, getattr(cfg, "ddp_timeout", None))
        tail = f" (traceback: {where})" if where else ""
        print(f"posrft (rank {rank}): error: {msg}{tail}", file=sys.stderr, flush=True)
        return 1
    return 0


def run_entry_point(prog: str, parse: Callable[[Sequence[str]], Any], train: Callable[[Any], Any],
                    argv: Sequence[str] | None = None) -> int:
    """A rank's ``main``: parse the recipe (a bad one exits 2 with one line naming ``prog``),
    then :func:`run_rank`."""
    from posrft.train.recipe import RecipeError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = parse(sys.argv[1:] if argv is None else argv)
    except (RecipeError, ValueError, TypeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return run_rank(train, cfg)


def _write_traceback(output_dir: str | None, rank: str) -> str | None:
    text = traceback.format_exc()
    if not output_dir:
        traceback.print_exc()
        return None
    try:
        path = Path(output_dir) / "logs" / f"error-rank{rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)
    except OSError:  # e.g. the disk is full: print it instead
        traceback.print_exc()
        return None
