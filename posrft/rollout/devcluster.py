"""A real multi-node Ray cluster on this machine, for tests, benchmarks and trying a multi-node
recipe before a real cluster: each node is a ``ray start --block`` process, exactly what a user
runs on each machine of a cluster.

    with DevCluster([{"num_cpus": 1, "resources": {"nodeA": 1}},
                     {"num_cpus": 1, "resources": {"nodeB": 1}}], tmp_dir) as cluster:
        run_hygrpo(HyGRPOConfig(..., ray_address=cluster.address, placement_strategy="SPREAD"))
        cluster.stop_node(1)  # node 1 leaves (its raylet and workers exit)

Everything it starts is stopped by process id (SIGTERM to each node's ``ray start --block``,
which stops that node's raylet, workers and agents; SIGKILL to the node's process group after a
grace period), never with ``ray stop`` (which would stop every Ray on the machine); on Linux a
node also gets SIGTERM when the process that started it dies. All nodes share ``temp_dir``, which
also holds the cluster's address file, so a plain ``ray.init()`` elsewhere on the machine never
finds this cluster. Ray token authentication (``RAY_AUTH_MODE=token``) is on for every node.

Ray rewrites ``--node-ip-address=127.0.0.1`` to the machine's address for multi-node clusters
and its core servers listen on every interface, guarded by the token; a dev cluster therefore
also uses free ports found at start (GCS, Ray client server) so that several can coexist.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from posrft.procs import parent_death_preexec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts"]


class DevCluster:
    """``nodes[0]`` is the head; each node: ``{"num_cpus": n, "num_gpus": g, "resources":
    {...}}``. ``env``: extra environment for the nodes (and so for their workers), e.g. a
    ``PYTHONPATH`` so that workers import this checkout; it defaults to this checkout."""

    def __init__(self, nodes: Sequence[Mapping[str, Any]], temp_dir: str | os.PathLike,
                 env: Mapping[str, str] | None = None, start_timeout_s: float = 120.0) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least a head node")
        self.nodes = [dict(n) for n in nodes]
        self.temp_dir = Path(temp_dir).resolve()
        self.start_timeout_s = start_timeout_s
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        # no drain on SIGTERM: a stopped node leaves at once, as a failed machine does
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": path,
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen | None] = []
        self.port = 0
        self.address = ""

    # ------------------------------------------------------------------ start / stop
    def _args(self, node: Mapping[str, Any]) -> list[str]:
        args = [f"--num-cpus={node.get('num_cpus', 1)}", f"--temp-dir={self.temp_dir}", "--block",
                "--disable-usage-stats"]
        if node.get("num_gpus"):
            args.append(f"--num-gpus={node['num_gpus']}")
        if node.get("resources"):
            args.append(f"--resources={json.dumps(node['resources'])}")
        return args

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.temp_dir / log_name, "wb")  # noqa: SIM115 - lives as long as the node
        # its own process group: the node's Ray processes can be stopped with it, by its id
        return subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=parent_death_preexec(signal.SIGTERM))

    def start(self) -> str:
        """Start the head, then the other nodes; return the head's ``host:port`` once every
        node is up (``TimeoutError`` naming the log to read otherwise)."""
        self.port = free_port()
        head = [*_ray_cli(), "start", "--head", "--node-ip-address=127.0.0.1",
                f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                "--include-dashboard=false", *self._args(self.nodes[0])]
        self.procs.append(self._spawn(head, "node0.log"))
        self.address = f"127.0.0.1:{self.port}"
        self._wait_port()
        for k, node in enumerate(self.nodes[1:], start=1):
            cmd = [*_ray_cli(), "start", f"--address={self.address}", *self._args(node)]
            self.procs.append(self._spawn(cmd, f"node{k}.log"))
        self._wait_nodes(len(self.nodes))
        return self.address

    def _check_running(self) -> None:
        for k, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"ray node {k} exited with {proc.returncode}; see "
                                   f"{self.temp_dir / f'node{k}.log'}")

    def _wait_port(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self._check_running()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"the head node did not open port {self.port} within "
                           f"{self.start_timeout_s:g} s; see {self.temp_dir / 'node0.log'}")

    def alive_nodes(self) -> int:
        """Alive nodes as the GCS sees them (asked from a short-lived ``ray status``)."""
        out = subprocess.run([*_ray_cli(), "status", f"--address={self.address}"],
                             env=self.env, capture_output=True, text=True, timeout=60)
        text = out.stdout
        if "Active:" not in text:
            return 0
        block = text.split("Active:", 1)[1].split("Pending:", 1)[0]
        return sum(1 for line in block.splitlines() if line.strip().startswith("1 node_"))

    def _wait_nodes(self, count: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self._check_running()
            if self.alive_nodes() >= count:
                return
            time.sleep(1.0)
        raise TimeoutError(f"{count} ray nodes did not come up within {self.start_timeout_s:g} s; "
                           f"see the node logs in {self.temp_dir}")

    def stop_node(self, index: int, grace_s: float = 20.0) -> None:
        """Stop node ``index``: SIGTERM to its ``ray start`` process, which stops the node's
        raylet, workers and agents at once (no drain) so the cluster sees the node die; after
        ``grace_s``, SIGKILL to the node's process group (started by this object, led by that
        process)."""
        proc = self.procs[index]
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever of the node is left (normally nothing)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=grace_s)
        self.procs[index] = None

    def stop(self) -> None:
        """Stop every node, workers first, then the head."""
        for index in reversed(range(len(self.procs))):
            self.stop_node(index)

    def __enter__(self) -> "DevCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
