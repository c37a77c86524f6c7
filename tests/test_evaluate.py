"""`posrft eval`: pose metrics, retrieval recalls on the policy's poses, JSON + markdown output."""

import json

import numpy as np
import pytest
import torch

from posrft.eval.evaluate import evaluate_model, main, results_markdown, write_results


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory):
    from posrft.eval.retrieval import RetrievalModel

    torch.manual_seed(0)
    model = RetrievalModel().eval()  # untrained: the recalls are still a deterministic function
    return model.save_pretrained(tmp_path_factory.mktemp("ret") / "eval")


def _numpy_recall(sim: np.ndarray, k: int) -> float:
    """Fraction of rows whose own column is among the k largest (ties count against)."""
    own = np.diag(sim)
    better = (sim > own[:, None]).sum(1)
    return float((better < k).mean())


def test_metrics_match_an_independent_computation(tiny_model_dir, text2pose_dir, retrieval, nudge_logits, tmp_path):
    from datasets import load_from_disk

    from posrft.body.pose import pose_to_joints
    from posrft.eval.retrieval import RetrievalModel
    from posrft.policy.model import PosePolicy

    policy = PosePolicy.from_pretrained(tiny_model_dir).eval()
    nudge_logits(policy, {"<POSE>": 30.0})  # the random model answers with <POSE> at once
    res = evaluate_model(tiny_model_dir, text2pose_dir, "text2pose", split="test", policy=policy,
                         retrieval_model=retrieval, max_new_tokens=4)  # fmt: skip
    assert res["num_samples"] == 8 and res["valid_rate"] == 1.0

    rows = load_from_disk(str(text2pose_dir))["test"]
    out = policy.rollout(rows["prompt"], greedy=True, max_new_tokens=4)
    pred = pose_to_joints()(out.pose[:, 0].float()).double().numpy()
    gt = np.asarray(rows["gt_joints"], dtype=np.float64)
    pred, gt = pred - pred[:, :1], gt - gt[:, :1]
    expected = np.linalg.norm(pred - gt, axis=-1).mean() * 1000
    assert res["mpjpe_mm"] == pytest.approx(expected, rel=1e-5)
    assert res["pa_mpjpe_mm"] < res["mpjpe_mm"]

    model = RetrievalModel.from_pretrained(retrieval)
    with torch.no_grad():
        t = model.embed_texts(rows["caption"]).double().numpy()
        p = model.embed_poses(out.pose[:, 0].float()).double().numpy()
    sim = t @ p.T
    # 8 samples, k >= 8: every recall is 1 — use the p2t/t2p R@5 to check the direction too
    assert res["retrieval"]["t2p_r@5"] == pytest.approx(_numpy_recall(sim, 5))
    assert res["retrieval"]["p2t_r@5"] == pytest.approx(_numpy_recall(sim.T, 5))
    six = [res["retrieval"][f"{d}_r@{k}"] for d in ("t2p", "p2t") for k in (5, 10, 20)]
    assert res["retrieval"]["mrecall"] == res["retrieval"]["mrecall_poserft"] == pytest.approx(np.mean(six))
    r1 = [_numpy_recall(sim, 1), _numpy_recall(sim.T, 1)]
    assert res["retrieval"]["t2p_r@1"] == pytest.approx(r1[0])
    posescript = r1 + [res["retrieval"][f"{d}_r@{k}"] for d in ("t2p", "p2t") for k in (5, 10)]
    assert res["retrieval"]["mrecall_posescript"] == pytest.approx(np.mean(posescript))
    assert res["retrieval"]["mrecall_unipose"] == pytest.approx(np.mean(posescript + six[2::3]))
    assert set(res["reference"]) == set(res["retrieval"])  # GT poses scored by the same evaluator
    both = evaluate_model(tiny_model_dir, text2pose_dir, "text2pose", split="test", policy=policy,
                          retrieval_model={"eval": retrieval, "reward": model}, max_new_tokens=4,
                          pictures=tmp_path / "grid.png", num_pictures=3)
    from PIL import Image

    assert Image.open(both["pictures"]).size[0] > 0  # predictions drawn next to the ground truth
    assert both["retrieval_by_model"]["eval"] == both["retrieval_by_model"]["reward"]
    assert both["retrieval_by_model"]["eval"]["retrieval"] == both["retrieval"]


def test_a_sample_without_pose_stays_in_the_gallery_as_a_miss(tiny_model_dir, text2pose_dir, retrieval, nudge_logits):
    from posrft.policy.model import PosePolicy

    policy = PosePolicy.from_pretrained(tiny_model_dir).eval()
    nudge_logits(policy, {"<POSE>": -100.0, "<|im_end|>": 30.0})  # answers end before <POSE>
    res = evaluate_model(tiny_model_dir, text2pose_dir, "text2pose", policy=policy,
                         retrieval_model=retrieval, max_new_tokens=4)  # fmt: skip
    assert res["valid_rate"] == 0.0 and np.isnan(res["mpjpe_mm"])
    assert res["num_samples"] == 8  # counted, not dropped
    assert res["retrieval"]["t2p_r@5"] <= 5 / 8  # every gallery pose is the rest pose: ties lose


def test_outputs_and_cli(tiny_model_dir, text2pose_dir, retrieval, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    assert main(["--model", str(tiny_model_dir), "--data", str(text2pose_dir), "--task", "text2pose",
                 "--retrieval-model", str(retrieval), "--num-samples", "4", "--max-new-tokens", "4",
                 "--out", str(out)]) == 0  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["num_samples"] == 4 and saved["task"] == "text2pose"
    md = out.with_suffix(".md").read_text()
    assert "| MPJPE (mm) |" in md and "text→pose r@5" in md and "GT poses" in md
    assert not list(out.parent.glob(".*tmp"))  # atomic writes leave no temporaries
    assert "MPJPE" in capsys.readouterr().out
    # without a retrieval model the retrieval block is null, not invented
    res = evaluate_model(tiny_model_dir, text2pose_dir, "text2pose", num_samples=2, max_new_tokens=2)
    assert res["retrieval"] is None and "r@5" not in results_markdown(res)
    write_results(res, tmp_path / "r2.json")
    assert json.loads((tmp_path / "r2.json").read_text())["retrieval"] is None


@pytest.mark.parametrize("kwargs, error, match", [
    ({"task": "pose2text"}, ValueError, "task must be one of"),
    ({"task": "text2pose", "split": "dev"}, KeyError, "no split 'dev'"),
    ({"task": "image2pose"}, ValueError, "lacks column 'images'"),
])  # fmt: skip
def test_bad_input_names_the_problem(tiny_model_dir, text2pose_dir, kwargs, error, match):
    task = kwargs.pop("task")
    with pytest.raises(error, match=match):
        evaluate_model(tiny_model_dir, text2pose_dir, task, **kwargs)


def test_heading_and_view_text_metrics():
    """Rest bodies turned by known yaws: heading_within_45 counts |Δyaw| < 45° (across the ±180°
    wrap), view_text_accuracy counts answers holding the true view sentence; plain answers
    report no view accuracy."""
    from posrft.data.skeleton import pose_joints
    from posrft.data.views import VIEW_PHRASES
    from posrft.eval.pose_eval import Predictions, pose_metrics

    def turned(deg):
        pose = torch.zeros(len(deg), 72, dtype=torch.float64)
        pose[:, 1] = torch.deg2rad(torch.tensor(deg, dtype=torch.float64))
        return pose_joints(pose)

    gt, pred = turned([0.0, 170.0, 90.0, -60.0]), turned([30.0, -170.0, 150.0, 100.0])  # Δ 30, 20, 60, 160
    texts = [f"{VIEW_PHRASES['front']} <POSE>", f"{VIEW_PHRASES['front']} <POSE>",
             f"{VIEW_PHRASES['right']} <POSE>", "<POSE>"]
    res = pose_metrics(Predictions(torch.zeros(4, 132), torch.ones(4, dtype=torch.bool), pred, gt, texts))
    assert res["heading_within_45"] == pytest.approx(0.5)
    assert res["view_text_accuracy"] == pytest.approx(0.5)  # rows 0 and 2 state the true view
    plain = pose_metrics(Predictions(torch.zeros(4, 132), torch.ones(4, dtype=torch.bool), pred, gt, ["<POSE>"] * 4))
    assert "view_text_accuracy" not in plain
