"""``posrft train RECIPE.yaml``: check the run once, then launch it as ``accelerate launch`` would.

    accelerate launch --config_file ACCEL.yaml --main_process_port FREE -m posrft.train \\
        --config RECIPE.yaml [overrides]

1. **Pre-flight** (:mod:`posrft.preflight`) in this process: recipe, overrides, accelerate
   config, model and dataset folders, rewards, Ray, body model, output and resume folders. A
   problem is printed once, without a traceback, and nothing starts.
2. **Launch** accelerate with a free rendezvous port (two runs on one machine no longer meet on
   29500), ``POSRFT_LAUNCHER_PID`` for the ranks' watchdog (:mod:`posrft.train.guard`), and a
   parent-death signal: if this process dies, even by ``kill -9``, accelerate/torchrun dies with
   it and the ranks, watching their parent, stop themselves and their Ray workers.

The accelerate config is, in order: ``--accelerate-config`` (before or after the recipe),
the recipe's ``accelerate_config`` key, then ``recipes/accelerate/zero2.yaml`` when it exists.
The recipe is never evaluated, only parsed; rewards named by path are imported (they are code).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from posrft.procs import parent_death_preexec

DEFAULT_ACCELERATE = Path("recipes/accelerate/zero2.yaml")
#: flags the launcher owns wherever they appear among the overrides
LAUNCHER_FLAGS = {"--accelerate-config": "accelerate_config", "--accelerate_config": "accelerate_config",
                  "--num-processes": "num_processes", "--num_processes": "num_processes"}  # fmt: skip
SKELETON_TRAINERS = ("skeleton",)


def split_launcher_flags(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``({accelerate_config, num_processes}, the other overrides)``: ``posrft train R.yaml
    --accelerate-config X`` means the same as ``posrft train --accelerate-config X R.yaml``."""
    found: dict[str, str] = {}
    rest: list[str] = []
    it = iter(overrides)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in LAUNCHER_FLAGS:
            if not eq:
                value = next(it, None)
                if value is None or value.startswith("--"):
                    raise ValueError(f"{flag} needs a value")
            found[LAUNCHER_FLAGS[flag]] = value
            continue
        rest.append(arg)
    return found, rest


def learner_module(spec: dict) -> str:
    """The ``-m`` module accelerate launches for a parsed recipe."""
    return "posrft.skeleton" if spec.get("trainer") in SKELETON_TRAINERS else "posrft.train"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch_command(recipe: str | os.PathLike, overrides: Sequence[str] = (),
                   accelerate_config: str | None = None, num_processes: int | None = None,
                   main_process_port: int | None = None) -> list[str]:  # fmt: skip
    """The ``accelerate launch`` command line for ``recipe`` (no checks beyond the files)."""
    import yaml

    recipe = Path(recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe {str(recipe)!r} does not exist")
    spec = yaml.safe_load(recipe.read_text())
    if not isinstance(spec, dict):
        raise ValueError(f"recipe {str(recipe)!r} must be a YAML mapping")
    accel = accelerate_config or spec.get("accelerate_config")
    if accel is None and DEFAULT_ACCELERATE.is_file():
        accel = str(DEFAULT_ACCELERATE)
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    if accel is not None:
        if not Path(accel).is_file():
            raise FileNotFoundError(f"accelerate config {accel!r} does not exist")
        cmd += ["--config_file", str(accel)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    if main_process_port is not None:
        cmd += ["--main_process_port", str(main_process_port)]
    return cmd + ["-m", learner_module(spec), "--config", str(recipe), *overrides]


def _process_start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def launch(recipe: str | os.PathLike, overrides: Sequence[str] = (), accelerate_config: str | None = None,
           num_processes: int | None = None, *, check: bool = True, quiet: bool = False) -> int:  # fmt: skip
    """Pre-flight, then run the learner; returns its exit code (non-zero when any rank failed).

    Raises :class:`posrft.preflight.PreflightError` (a ``ValueError``) when the run is wrong.
    """
    flags, overrides = split_launcher_flags(overrides)
    accelerate_config = accelerate_config or flags.get("accelerate_config")
    if num_processes is None and "num_processes" in flags:
        if not flags["num_processes"].isdigit():
            raise ValueError(f"--num-processes must be an integer, got {flags['num_processes']!r}")
        num_processes = int(flags["num_processes"])
    port = None
    if check:
        from posrft.preflight import preflight

        plan = preflight(recipe, overrides, accelerate_config, num_processes)
        accelerate_config = str(plan.accelerate_config) if plan.accelerate_config else accelerate_config
        if plan.num_machines == 1 and plan.num_processes > 1 and "main_process_port" not in plan.accelerate:
            port = free_port()
        if not quiet:
            for note in plan.notes:
                print(f"posrft train: {note}", file=sys.stderr, flush=True)
    cmd = launch_command(recipe, overrides, accelerate_config, num_processes, port)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["POSRFT_LAUNCHER_PID"] = str(os.getpid())
    env["POSRFT_LAUNCHER_PID_START"] = _process_start_time(os.getpid())
    # SIGKILL, not SIGTERM: torchrun answers SIGTERM by waiting up to 30 s for its workers and
    # then tearing its rendezvous down (over 10 s on a loaded machine). Killed at once, it leaves
    # the ranks to their own watchdogs, which stop them and their Ray processes within seconds
    # (posrft.train.guard).
    proc = subprocess.Popen(cmd, env=env, preexec_fn=parent_death_preexec(signal.SIGKILL))
    forwarded = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            forwarded[sig] = signal.signal(sig, lambda s, f: proc.send_signal(s))
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    interrupts = 0
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reaches the foreground group: let the run stop
                interrupts += 1
                proc.send_signal(signal.SIGINT if interrupts == 1 else
                                 signal.SIGTERM if interrupts == 2 else signal.SIGKILL)  # fmt: skip
    finally:
        for sig, handler in forwarded.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
