"""A real 2-node Ray cluster on this machine (two ``ray start --block`` nodes, each with 2 CPUs
and its own custom resource; one cluster per module and test worker, stopped by pid even when a
test fails): HyGRPO joins it by address with its workers SPREAD over both nodes, LoRA
adapter-only sync (verified every step) and rewards on the workers, then resumes with one worker
without losing a step or a group; a node that dies mid-step costs no sample, its worker is
logged, counted and replaced on the surviving node."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import pytest
import ray

from posrft.rollout.devcluster import DevCluster
from posrft.rollout.pool import RolloutPool

# no xdist_group: under `--dist load` the two tests may land on two workers, each then starts
# its own cluster (free ports, own temp dir)
pytestmark = pytest.mark.slow

G = 4
SAMPLING = {"max_new_tokens": 24, "temperature": 1.0}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # this process must join the dev cluster, not a leftover session
        ray.shutdown()
    from ray._private.authentication_test_utils import reset_auth_token_state

    old_mode = os.environ.get("RAY_AUTH_MODE")
    # the driver joins with the cluster's token, as a user does with RAY_AUTH_MODE=token set
    # before starting Python; here Ray's config must be re-read after the change
    os.environ["RAY_AUTH_MODE"] = "token"
    reset_auth_token_state()
    # short path: Ray's unix sockets live under it (108-character limit)
    temp = tempfile.mkdtemp(prefix="posrft-ray-", dir="/tmp")
    try:
        with DevCluster([{"num_cpus": 2, "resources": {"nodeA": 1}},
                         {"num_cpus": 2, "resources": {"nodeB": 1}}], temp) as c:
            yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if old_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_mode
        reset_auth_token_state()
        shutil.rmtree(temp, ignore_errors=True)


def test_hygrpo_across_two_nodes_then_resumes_with_one_worker(cluster, tiny_model_dir,
                                                              text2pose_dir, tmp_path):
    from posrft.train.config import HyGRPOConfig
    from posrft.train.hygrpo import run_hygrpo

    common = dict(model_name_or_path=str(tiny_model_dir), dataset_path=str(text2pose_dir),
                  output_dir=str(tmp_path / "run"), per_device_train_batch_size=8,
                  num_generations=G, max_completion_length=8, learning_rate=1e-3,
                  report_to=["none"], beta=0.0, save_steps=1, ray_address=cluster.address,
                  placement_strategy="SPREAD", use_peft=True, lora_r=4, lora_alpha=8,
                  lora_sync="adapter", rewards_on_workers=True,
                  rewards=[{"func": "format", "target": "text"},
                           {"func": "joint", "target": "pose"}])  # fmt: skip
    run_hygrpo(HyGRPOConfig(num_rollout_workers=2, max_steps=2, **common))
    assert not ray.is_initialized()  # the pool left the cluster; the cluster stays up
    run_hygrpo(HyGRPOConfig(num_rollout_workers=1, max_steps=3, resume_from_checkpoint="latest",
                            **common))
    log = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3]  # no step lost or repeated
    for r in log:  # every step: 2 prompts × G samples, whole groups, rewards from the workers
        assert r["rollout/samples"] == 2 * G and r["rollout/restarts"] == 0
        assert r["sync/bytes"] > 0 and r["sync/verify_s"] > 0  # sync verified every step
        assert "rewards/format/mean" in r and "rewards/joint/masked" in r
    assert [r["rollout/workers_used"] for r in log] == [2, 2, 1]
    assert [r["rollout/nodes_used"] for r in log] == [2, 2, 1]  # SPREAD: one worker per node
    # adapter-only: A/B + projector copy + pose head (0.5 MB), not the 3.5 MB of merged layers
    assert log[0]["sync/bytes"] < 1_000_000


def test_a_dead_node_costs_no_sample_and_its_worker_is_replaced(cluster, tiny_model_dir, caplog):
    prompts = [f"Describe pose number {i}." for i in range(6)]
    with RolloutPool(tiny_model_dir, 2, ray_address=cluster.address,
                     placement_strategy="SPREAD", startup_timeout_s=180) as pool:
        label = {n["NodeID"]: ("nodeA" if "nodeA" in n["Resources"] else "nodeB")
                 for n in ray.nodes() if n["Alive"]}
        placed = sorted(label[w["node_id"]] for w in pool.worker_info)
        assert placed == ["nodeA", "nodeB"]  # SPREAD put one worker on each node
        reference = pool.generate(prompts, num_generations=G, sampling=SAMPLING, seed=7)
        on_b = next(w["slot"] for w in pool.worker_info if label[w["node_id"]] == "nodeB")
        handle = pool.submit(prompts, num_generations=G, sampling=SAMPLING, seed=7)
        with caplog.at_level(logging.WARNING, logger="posrft.rollout"):
            cluster.stop_node(1)  # node B leaves the cluster mid-step
            result = pool.gather(handle, timeout_s=300)
        # the lost shard ran again on node A with the same seed: nothing lost, nothing changed
        assert len(result.batch) == len(prompts) * G
        assert result.batch.completion_texts == reference.batch.completion_texts
        assert result.metrics["restarts"] >= 1
        death = next(d for d in pool.deaths if d["worker"] == on_b)
        assert "node" in death["cause"].lower()
        assert any(f"rollout worker {on_b} (pid {death['pid']}" in r.getMessage()
                   and "died during" in r.getMessage() for r in caplog.records)
        # Ray moves the worker's bundle to node A (room for it there); the replacement joins
        assert pool.wait_ready(180) == 2
        assert {label.get(w["node_id"]) for w in pool.worker_info} == {"nodeA"}
        after = pool.generate(prompts, num_generations=G, sampling=SAMPLING, seed=7)
        assert after.metrics["workers_used"] == 2 and after.metrics["nodes_used"] == 1
        assert after.batch.completion_texts == reference.batch.completion_texts
