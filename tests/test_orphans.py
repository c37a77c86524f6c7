"""``kill -9`` on ``posrft train`` stops everything it started: the accelerate/torchrun agent,
both DeepSpeed ranks (each in its own session) and rank 0's local Ray cluster with its rollout
worker, within 10 s; the run writes no ``final`` without a parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _alive(procs):
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_killing_the_launcher_stops_ranks_and_ray_workers(tmp_path, tiny_model_dir, text2pose_dir):
    import psutil

    out = tmp_path / "run"
    recipe = tmp_path / "hygrpo.yaml"
    recipe.write_text(yaml.safe_dump({
        "trainer": "hygrpo", "model_name_or_path": str(tiny_model_dir), "dataset_path": str(text2pose_dir),
        "output_dir": str(out), "max_steps": 500, "per_device_train_batch_size": 4, "num_generations": 4,
        "max_completion_length": 8, "num_rollout_workers": 1, "worker_num_cpus": 1.0, "report_to": ["none"],
        "rewards": [{"func": "format", "target": "text"}, {"func": "joint", "target": "pose"}],
    }))  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = open(tmp_path / "launcher.log", "w")
    launcher = subprocess.Popen([sys.executable, "-m", "posrft.cli", "train", str(recipe),
                                 "--accelerate-config", str(ROOT / "recipes/accelerate/zero2.yaml")],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    tree = []
    try:
        deadline = time.monotonic() + 300
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip():
            assert launcher.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no training step within 300 s"
            time.sleep(1)
        tree = psutil.Process(launcher.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in _alive(tree))
        assert names.count("posrft.train") >= 2 and "raylet" in names and "RolloutWorker" in names, names
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        t0 = time.monotonic()
        while _alive(tree) and time.monotonic() - t0 < 10:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline())[:80]) for p in _alive(tree)]
        said = (tmp_path / "launcher.log").read_text().splitlines()[-60:]
        assert not left, f"still running 10 s after kill -9 of the launcher: {left}; the log ends:\n" + "\n".join(said)
        print(f"{len(tree)} processes gone {time.monotonic() - t0:.1f} s after kill -9 of the launcher")
    finally:  # whatever is left (also what was orphaned to init) must not outlive the test
        for p in _alive(tree + psutil.Process().children(recursive=True)):
            p.kill()
    time.sleep(1)
    assert not (out / "final").exists()


_STARTER = """
import signal, subprocess, sys, threading, time
from posrft.procs import parent_death_preexec
# other threads at the fork, as under torch or Ray: the child may only make async-signal-safe
# calls before exec
for _ in range(4):
    threading.Thread(target=threading.Event().wait, daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=parent_death_preexec(getattr(signal, sys.argv[1])))
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_child_started_with_parent_death_preexec_dies_with_its_parent(sig):
    import psutil

    starter = subprocess.Popen([sys.executable, "-c", _STARTER, sig], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child = psutil.Process(int(starter.stdout.readline()))
        assert child.is_running() and child.ppid() == starter.pid
        starter.kill()
        starter.wait(10)
        deadline = time.monotonic() + 10
        while _alive([child]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive([child]), f"the child outlived its parent ({sig} was not delivered)"
    finally:
        starter.kill()
