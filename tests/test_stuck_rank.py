"""A stuck rank becomes an error that names the phase, after ``ddp_timeout`` (gloo, 2 processes);
a free rendezvous port is picked per launch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RANK = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    from types import SimpleNamespace
    import torch.distributed as dist
    from posrft.train.guard import run_rank
    from posrft.train.phases import set_phase

    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    def train(cfg):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=2, timeout=timedelta(seconds=cfg.ddp_timeout))
        set_phase("checkpoint save at step 3")
        if rank == 1:
            time.sleep(120)  # stuck (a reward that never returns, a hung write, ...)
        dist.barrier()

    sys.exit(run_rank(train, SimpleNamespace(output_dir=out, ddp_timeout=3)))
""")


def test_a_stuck_rank_is_an_error_naming_the_phase(tmp_path):
    from posrft.launch import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), RANK="0", OMP_NUM_THREADS="1")
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(port), str(tmp_path)],
                              env=dict(env, RANK=str(r)), stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]  # fmt: skip
    try:
        _, err = ranks[0].communicate(timeout=120)
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert ranks[0].returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("posrft (rank 0)")]
    assert len(lines) == 1, err
    assert ("a collective operation failed in phase 'checkpoint save at step 3' after" in lines[0]
            and "(ddp_timeout=3 s)" in lines[0] and "another rank did not get there" in lines[0])  # fmt: skip
    assert "Traceback" not in err
    trace = (tmp_path / "logs" / "error-rank0.txt").read_text()
    assert "barrier" in trace  # the full traceback is kept in a file


def test_free_port_is_not_in_use():
    from posrft.launch import free_port

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise EADDRINUSE if something listened there
