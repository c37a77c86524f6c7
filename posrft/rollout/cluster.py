"""Start or join the Ray cluster that hosts the rollout workers, failing fast and clearly.

Which cluster (``address``):

* ``None``: the cluster named by ``RAY_ADDRESS`` when it is set (``ray job submit`` sets it for
  the job's driver), else a new local cluster that only this process uses. Ray's own default
  would also join whatever cluster the last ``ray start`` on this machine recorded; posrft never
  does that silently.
* ``"host:port"`` (or ``"ray://host:port"``): that cluster, after a TCP check, because
  ``ray.init`` on an address nobody answers retries for about a minute.
* ``"auto"``: ``RAY_ADDRESS``, else the cluster the last ``ray start`` on this node recorded.

A local cluster is bound to loopback: the node advertises 127.0.0.1 and every Ray process
(GCS, raylet, workers, runtime-env agent) listens there only, with no dashboard and no Ray
client server. Ray offers no ``ray.init`` option for it (``_node_ip_address="127.0.0.1"`` is
rewritten to the machine's address); its single-machine mode (what it uses on macOS/Windows,
switched by ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) does it, so that mode is turned on while
the local cluster starts. Measured with ``ss -ltnp``: without it the GCS, raylet and workers
listen on ``*`` and the runtime-env agent on the machine's address; with it, all on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray

log = logging.getLogger("posrft.rollout")

_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


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


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS`` if set; None means "start a
    local cluster"."""
    if address is None:
        env = os.environ.get("RAY_ADDRESS", "").strip()
        return env or None
    address = address.strip()
    if not address:
        raise ValueError("ray_address is empty; leave it unset for a local cluster")
    return address


def _package_root() -> str:
    import posrft

    return str(Path(posrft.__file__).resolve().parents[1])


@contextlib.contextmanager
def loopback_only() -> Iterator[bool]:
    """Within the block, a Ray node started by this process binds to 127.0.0.1 only (see the
    module docstring); yields False (and changes nothing) when this Ray has no such switch."""
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without the private module
        yield False
        return
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):  # pragma: no cover
        yield False
        return
    old_flag, old_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_SINGLE_MACHINE_ENV)
    # the flag for this process, the variable for the Ray processes it spawns
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    try:
        yield True
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_SINGLE_MACHINE_ENV] = old_env


def _is_local(host: str) -> bool:
    """Whether ``host`` is an address of this machine (a socket can bind to it)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def _connected_to(address: str) -> bool:
    """Whether the initialised Ray session is the cluster at ``address`` (same port, and the
    same host or both hosts this machine: Ray rewrites 127.0.0.1 to the machine's address)."""
    try:
        current = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - no way to tell: assume it is
        return True
    want_host, want_port = parse_address(address)
    host, _, port = current.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) != want_port:
        return False
    return host == want_host or (_is_local(host) and _is_local(want_host))


def init_ray(address: str | None, required: Mapping[str, float], *,
             connect_timeout_s: float = 3.0, **init_kwargs: Any) -> bool:
    """Make sure this process is connected to Ray; return True if this call connected it (and
    so should disconnect it, or stop the local cluster it started).

    ``required``: resources the rollout workers need in total (``CPU``, ``GPU``, custom ones).
    A new local cluster gets ``ceil`` of the CPUs and GPUs asked for, no dashboard, loopback
    only, and workers that import ``posrft`` from this checkout. A cluster to join (see the
    module docstring for ``address``) is checked for reachability first. A Ray session already
    initialised in this process is reused, but must be the cluster asked for. Either way the
    cluster must offer ``required`` in total, or ``ValueError`` names what is missing (instead
    of workers waiting forever for resources).
    """
    target = resolve_address(address)
    if target is not None and target != "auto":
        check_reachable(target, connect_timeout_s)  # also when reusing a session: fail on typos
    started = False
    if ray.is_initialized():
        if target is not None and target != "auto" and not _connected_to(target):
            raise RuntimeError(
                f"this process is already connected to the Ray cluster at "
                f"{ray.get_runtime_context().gcs_address}, not {target!r}; call ray.shutdown() "
                f"first or drop ray_address")
    elif target is None:
        kwargs: dict[str, Any] = dict(address="local", include_dashboard=False,
                                      num_cpus=max(1, math.ceil(required.get("CPU", 0.0))))
        if required.get("GPU", 0.0) > 0:
            kwargs["num_gpus"] = math.ceil(required["GPU"])
        custom = {k: float(v) for k, v in required.items() if k not in ("CPU", "GPU")}
        if custom:
            kwargs["resources"] = custom
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        kwargs.update(init_kwargs)
        with loopback_only() as bound:
            ray.init(**kwargs)
        if not bound:  # pragma: no cover
            log.warning("this Ray has no single-machine switch: the local cluster's ports may "
                        "listen on every interface (Ray token auth still applies)")
        started = True
    else:
        try:
            ray.init(address=target, **init_kwargs)
        except ConnectionError as err:
            hint = ""
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                hint = ("; a cluster started by `ray start` uses token authentication by default: "
                        "set RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token or "
                        "RAY_AUTH_TOKEN) before starting the learner")
            raise ConnectionError(f"could not join the Ray cluster at {target!r}: {err}{hint}"
                                  ) from err
        log.info("joined the Ray cluster at %s (%d node(s) alive)", target,
                 sum(1 for n in ray.nodes() if n.get("Alive")))
        started = True
    have = ray.cluster_resources()
    for name, need in required.items():
        if need > 0 and have.get(name, 0.0) + 1e-9 < need:
            if started:
                ray.shutdown()
            raise ValueError(f"the Ray cluster offers {have.get(name, 0.0):g} {name} but the "
                             f"rollout workers need {need:g} in total; lower the number of "
                             f"workers or their resources, or add nodes")
    return started
