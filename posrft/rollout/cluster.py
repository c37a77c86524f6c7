"""Start or join the Ray cluster that hosts the rollout workers, failing fast and clearly.

``ray.init(address)`` on an address nobody answers keeps retrying for about a minute before it
gives up; a TCP connect with a short timeout finds that out in milliseconds, before any work
(model loading, a training step) is spent.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import ray


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (optionally ``ray://``-prefixed) → (host, port); ``ValueError`` otherwise."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ray_address {address!r} is not 'host:port' (or 'ray://host:port' or "
                         f"'auto')")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Raise ``ConnectionError`` naming ``address`` unless a TCP connection opens in time."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise ConnectionError(
            f"Ray cluster at {address!r} is not reachable ({type(err).__name__}: {err}); start it "
            f"with `ray start --head --port {port}` or leave ray_address unset for a local "
            f"cluster") from None


def _package_root() -> str:
    import posrft

    return str(Path(posrft.__file__).resolve().parents[1])


def init_ray(address: str | None, num_cpus: float, num_gpus: float, *,
             connect_timeout_s: float = 3.0, **init_kwargs: Any) -> bool:
    """Make sure this process is connected to Ray; return True if this call started it.

    ``address=None``: a local cluster with ``ceil(num_cpus)`` CPUs (``ceil(num_gpus)`` GPUs when
    asked for), no dashboard, and workers that can import ``posrft`` from this checkout.
    Otherwise the address (``host:port``, ``ray://host:port`` or ``auto``) is joined after a
    reachability check. An already initialised Ray is reused as is. Either way the cluster must
    offer the requested CPUs/GPUs, or ``ValueError`` says what is missing (instead of actors
    waiting forever for resources).
    """
    started = False
    if address is not None and address != "auto":
        check_reachable(address, connect_timeout_s)  # also when reusing a session: fail on typos
    if not ray.is_initialized():
        if address is None:
            kwargs: dict[str, Any] = dict(num_cpus=max(1, math.ceil(num_cpus)),
                                          include_dashboard=False)
            if num_gpus > 0:
                kwargs["num_gpus"] = math.ceil(num_gpus)
            path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
            kwargs.update(init_kwargs)
            ray.init(**kwargs)
        else:
            try:
                ray.init(address=address, **init_kwargs)
            except ConnectionError as err:
                raise ConnectionError(
                    f"could not join the Ray cluster at {address!r}: {err}") from err
        started = True
    have = ray.cluster_resources()
    for name, need in (("CPU", num_cpus), ("GPU", num_gpus)):
        if need > 0 and have.get(name, 0.0) + 1e-9 < need:
            if started:
                ray.shutdown()
            raise ValueError(f"the Ray cluster offers {have.get(name, 0.0):g} {name}(s) but the "
                             f"rollout workers need {need:g}; lower num_workers or the per-worker "
                             f"resources, or add nodes")
    return started
