"""Text-pose retrieval: recall metrics, a small model trained on synthetic text2pose data, files,
the two-instance split, the semantic reward built on it, and errors."""

import json
import math

import numpy as np
import pytest
import roma
import torch

from posrft.body.rotations import pose6d_to_rotmat, rotmat_to_pose6d
from posrft.data.synth import build_text2pose
from posrft.eval.metrics import pool_recall_at_k, recall_at_k, retrieval_recalls
from posrft.eval.retrieval import PoseFeatures, RetrievalConfig, RetrievalModel, remove_heading
from posrft.eval.retrieval_train import (
    PairSet,
    TrainSettings,
    load_pairs,
    main,
    mirror_caption,
    mirror_pairs,
    train_on_pairs,
)
from rewards import RewardSpec, resolve_reward
from rewards.columns import RewardInputError

N_TRAIN, N_TEST = 240, 80


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2p") / "text2pose"
    build_text2pose(N_TRAIN, 8, N_TEST, seed=0, out_dir=out)
    return out


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    train = load_pairs(data_dir, "train")  # no mirroring: tested on its own, doubles the captions
    model = train_on_pairs(train, seed=0, settings=TrainSettings(epochs=80, batch_size=128))
    path = model.save_pretrained(tmp_path_factory.mktemp("models") / "retrieval")
    return model, path


# ----------------------------------------------------------------------------- metrics


def test_recall_at_k_matches_numpy_ranks():
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(50, 50, generator=gen, dtype=torch.float64)
    order = np.argsort(-sim.numpy(), axis=1, kind="stable")
    ranks = np.array([list(row).index(i) for i, row in enumerate(order)])
    got = recall_at_k(sim, (1, 5, 10))
    assert got == {k: pytest.approx(float((ranks < k).mean())) for k in (1, 5, 10)}
    assert recall_at_k(torch.zeros(5, 5), (1, 4))[4] == 0.0  # ties count against the query
    t, p = torch.randn(50, 8, generator=gen), torch.randn(50, 8, generator=gen)
    r = retrieval_recalls(t, p, ks=(5, 10, 20), pool=32)
    full = [r[f"{d}_R@{k}"] for d in ("t2p", "p2t") for k in (5, 10, 20)]
    assert r["mRecall_full"] == pytest.approx(np.mean(full))
    assert r["mRecall"] == pytest.approx(np.mean([v for k, v in r.items() if "R@" in k]))


def test_pool_recall_properties():
    gen = torch.Generator().manual_seed(1)
    sim = torch.randn(64, 64, generator=gen, dtype=torch.float64)
    sim += 0.8 * torch.eye(64, dtype=torch.float64)
    full = recall_at_k(sim, (1, 5))
    assert pool_recall_at_k(sim, (1, 5), pool=64) == pytest.approx(full)
    pooled = pool_recall_at_k(sim, (1, 5), pool=8, seed=3)
    assert pooled[1] >= full[1] and pooled[5] >= full[5]
    assert pool_recall_at_k(sim, (1, 5), pool=8, seed=3) == pooled  # seeded
    assert pool_recall_at_k(torch.eye(10), (1,), pool=4) == {1: 1.0}
    r = retrieval_recalls(torch.eye(40), torch.eye(40), ks=(1, 5), pool=32)
    assert r["mRecall"] == 1.0
    assert set(r) >= {"t2p_R@1", "p2t_R@5", "t2p_pool32_R@1", "p2t_pool32_R@5"}
    with pytest.raises(ValueError, match="pool must be in"):
        pool_recall_at_k(sim, (1,), pool=100)


# ----------------------------------------------------------------------------- features


def test_pose_features_ignore_heading_but_not_tilt():
    gen = torch.Generator().manual_seed(2)
    rot = roma.random_rotmat((6, 22), generator=gen)
    angles = (0.3, 1.0, 2.0, -2.5, 3.0, -0.7)
    yaw = roma.rotvec_to_rotmat(torch.tensor([[0.0, a, 0.0] for a in angles]))
    turned = rot.clone()
    turned[:, 0] = yaw @ rot[:, 0]
    feats = PoseFeatures()
    base = feats(rotmat_to_pose6d(rot))
    torch.testing.assert_close(feats(rotmat_to_pose6d(turned)), base, atol=2e-5, rtol=0)
    tilted = rot.clone()
    tilted[:, 0] = roma.rotvec_to_rotmat(torch.tensor([0.5, 0.0, 0.0])) @ rot[:, 0]
    assert (feats(rotmat_to_pose6d(tilted)) - base).abs().max() > 0.1
    # the canonical global orientation faces +z: its forward axis has no x component
    canon = remove_heading(roma.rotvec_to_rotmat(torch.tensor([0.0, 1.2, 0.0])))
    torch.testing.assert_close(canon, torch.eye(3), atol=1e-6, rtol=0)


def test_mirror_augmentation():
    text = "The Left knee is bent, right hand up. Upright."
    assert mirror_caption(text) == "The Right knee is bent, left hand up. Upright."
    gen = torch.Generator().manual_seed(3)
    pose = rotmat_to_pose6d(roma.random_rotmat((4, 22), generator=gen))
    pairs = PairSet(pose, ["left arm up"] * 4, torch.arange(4))
    twice = mirror_pairs(mirror_pairs(pairs))
    back = pose6d_to_rotmat(twice.pose6d, 22)
    torch.testing.assert_close(back, pose6d_to_rotmat(pose, 22), atol=1e-5, rtol=0)
    assert twice.captions == pairs.captions
    assert set(mirror_pairs(pairs).pose_ids.tolist()).isdisjoint(range(4))


# ----------------------------------------------------------------------------- trained model


def test_trained_model_far_above_chance_on_held_out_split(trained, data_dir):
    model, _ = trained
    test = load_pairs(data_dir, "test")
    r = model.evaluate(test.captions, test.pose6d, ks=(1, 5, 10), pool=32)
    chance10, chance_pool5 = 10 / N_TEST, 5 / 32
    for d in ("t2p", "p2t"):
        assert r[f"{d}_R@10"] > 3 * chance10, r
        assert r[f"{d}_pool32_R@5"] > 3 * chance_pool5, r
    assert model.logit_scale.requires_grad and abs(model.temperature - 0.07) > 1e-5  # learned


def test_save_load_round_trip(trained, data_dir):
    model, path = trained
    assert (path / "model.safetensors").is_file()
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "posrft-text-pose-retrieval" and cfg["embed_dim"] == 256
    loaded = RetrievalModel.from_pretrained(path)
    test = load_pairs(data_dir, "test")
    poses, texts = test.pose6d[:8], test.captions[:8]
    torch.testing.assert_close(loaded.embed_poses(poses), model.embed_poses(poses))
    torch.testing.assert_close(loaded.embed_texts(texts), model.embed_texts(texts))


def test_semantic_reward_prefers_the_described_pose(trained, data_dir):
    _, path = trained
    test = load_pairs(data_dir, "test")
    reward = resolve_reward("semantic", {"model_path": str(path)})
    assert RewardSpec(func="semantic", kwargs={"model_path": str(path)}).target == "pose"
    n = len(test)
    kw = dict(prompts=["p"] * n, completions=["c"] * n, poses=list(test.pose6d))
    own = reward(**kw, caption=test.captions)
    other = reward(**kw, caption=[test.captions[(i + 7) % n] for i in range(n)])
    own, other = np.array(own), np.array(other)
    assert ((-1 <= own) & (own <= 1)).all() and own.mean() > other.mean() + 0.2
    assert (own > other).mean() > 0.75
    out = reward(prompts=["p"] * 3, completions=["c"] * 3, poses=[test.pose6d[0], None, test.pose6d[2]],
                 caption=[test.captions[0], test.captions[1], None])  # fmt: skip
    assert out[1] is None and out[2] is None and out[0] == pytest.approx(own[0], abs=1e-5)


def test_semantic_reward_errors(trained, tmp_path):
    _, path = trained
    with pytest.raises(ValueError, match="needs kwargs.model_path"):
        resolve_reward("semantic")
    with pytest.raises(FileNotFoundError, match="not a retrieval model folder"):
        resolve_reward("semantic", {"model_path": str(tmp_path / "missing")})
    reward = resolve_reward("semantic", {"model_path": str(path)})
    with pytest.raises(RewardInputError, match=r"'semantic' needs the dataset column 'caption'.*gt_joints"):
        reward(prompts=["p"], completions=["c"], poses=[torch.zeros(132)], gt_joints=[None])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"")
    (bad / "config.json").write_text(json.dumps({"model_type": "something-else"}))
    with pytest.raises(ValueError, match="model_type is 'something-else'"):
        RetrievalModel.from_pretrained(bad)
    (bad / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        RetrievalModel.from_pretrained(bad)
    with pytest.raises(ValueError, match="dropout must be in"):
        RetrievalConfig(dropout=1.5)


# ----------------------------------------------------------------------------- two instances, CLI


def test_two_instances_train_on_disjoint_halves(data_dir):
    train = load_pairs(data_dir, "train")
    a, b = train.subset("a"), train.subset("b")
    assert len(a) + len(b) == len(train)
    assert set(a.pose_ids.tolist()).isdisjoint(b.pose_ids.tolist())
    with pytest.raises(ValueError, match="subset must be one of"):
        train.subset("c")


def test_cli_train_and_eval(data_dir, tmp_path, capsys):
    out = tmp_path / "reward_model"
    assert main(["train", "--data", str(data_dir), "--out", str(out), "--seed", "1", "--subset", "b",
                 "--epochs", "2", "--batch-size", "64"]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"t2p_R@1", "p2t_R@10", "t2p_pool32_R@5", "mRecall"} <= set(metrics)
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["subset"] == "b" and meta["seed"] == 1 and meta["train_poses"] == N_TRAIN // 2
    assert meta["eval_split"] == "test"
    assert meta["metrics"]["mRecall"] == pytest.approx(metrics["mRecall"], abs=1e-4)
    assert main(["eval", "--model", str(out), "--data", str(data_dir)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) >= {"t2p_R@20", "p2t_R@5"}
    with pytest.raises(FileNotFoundError, match="not a text2pose DatasetDict folder"):
        main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    with pytest.raises(KeyError, match="no split 'validation'"):
        load_pairs(data_dir, "validation")
    assert not math.isnan(metrics["mRecall"])
