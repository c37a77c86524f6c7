"""LoRA trains the rows of the token posrft adds (``<POSE>``) in the input embedding and the LM
head, tied (SmolLM2-style) or not, and every way out of the learner (merged sync, adapter sync,
merge_lora, checkpoint) carries them."""

from __future__ import annotations

import pytest
import torch

from posrft.policy.lora import apply_lora, merge_lora, trainable_parameter_names
from posrft.policy.model import PosePolicy
from posrft.policy.prompts import encode_prompts
from posrft.policy.tiny import build_tiny_model, build_tiny_text_model
from posrft.rollout.buckets import pack_state_dict
from posrft.rollout.weights import adapter_state_dict, merged_state_dict
from posrft.rollout.worker import RolloutWorker


@pytest.fixture(scope="module", params=["tied", "untied"])
def text_dir(request, tmp_path_factory):
    tie = request.param == "tied"
    return build_tiny_text_model(tmp_path_factory.mktemp(request.param) / "m", seed=0,
                                 num_layers=2, tie_word_embeddings=tie)


def _tied(policy: PosePolicy) -> bool:
    model = policy.hf_model
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def _token_logps(policy: PosePolicy) -> torch.Tensor:
    """Teacher-forced log-probs of the completion "a b <POSE> c" for two prompts, (2, 4):
    <POSE> is both an output (column 2) and an input (for column 3)."""
    enc = encode_prompts(policy.processing, ["Generate the pose.", "A person sits"], None, False)
    completion = torch.tensor([[31, 32, policy.pose_token_id, 33]] * 2)
    out = policy.forward_logprobs(enc.input_ids, enc.attention_mask, completion,
                                  torch.ones_like(completion), torch.zeros(2, 132))
    return out.token_logps


def _pose_logp(policy: PosePolicy) -> torch.Tensor:
    """log p(<POSE> | prompt, "a b"), shape (2,)."""
    return _token_logps(policy)[:, 2]


def _train(policy: PosePolicy, steps: int = 5, lr: float = 1e-2) -> None:
    """Adam steps of SFT on the completion (so both <POSE> rows get gradients)."""
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = -_token_logps(policy).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()


def _rows(policy: PosePolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding and LM-head matrices the model computes with now (PEFT-merged views)."""
    model = policy.hf_model
    return (model.get_input_embeddings().weight.detach().clone(),
            model.get_output_embeddings().weight.detach().clone())


def test_pose_rows_train_and_nothing_else_in_the_embeddings(text_dir):
    policy = PosePolicy.from_pretrained(text_dir)
    tied = _tied(policy)
    pose = policy.pose_token_id
    emb0, head0 = _rows(policy)
    apply_lora(policy, r=2, alpha=4)
    assert policy.config.lora["trainable_tokens"] == [pose]
    names = trainable_parameter_names(policy)
    rows = [n for n in names if "trainable_tokens_delta" in n]
    assert len(rows) == (1 if tied else 2), rows  # tied: the head shares the embedding's rows
    with torch.no_grad():
        before = _pose_logp(policy)
    _train(policy)
    with torch.no_grad():
        after = _pose_logp(policy)
    assert (after - before).min() > 1.0, (before, after)
    emb, head = _rows(policy)
    others = torch.arange(emb.shape[0]) != pose
    assert torch.equal(emb[others], emb0[others]) and torch.equal(head[others], head0[others])
    assert not torch.allclose(emb[pose], emb0[pose]) and not torch.allclose(head[pose], head0[pose])
    if tied:  # the head computes with the very row the embedding learnt
        assert torch.equal(emb[pose], head[pose])
    with torch.no_grad(), policy.disable_adapter():  # π_ref keeps the initial rows
        torch.testing.assert_close(_pose_logp(policy), before, atol=1e-5, rtol=0)


def test_switched_off_the_rows_stay_frozen(text_dir):
    policy = apply_lora(PosePolicy.from_pretrained(text_dir), r=2, trainable_tokens=[])
    assert policy.config.lora["trainable_tokens"] == []
    assert not any("trainable_tokens" in n for n in trainable_parameter_names(policy))


def test_merged_sync_adapter_sync_merge_and_checkpoint_keep_the_rows(text_dir, tmp_path):
    learner = apply_lora(PosePolicy.from_pretrained(text_dir), r=2, alpha=4)
    _train(learner, steps=3)
    learner.eval()
    with torch.no_grad():
        want = _pose_logp(learner)
    base = PosePolicy.from_pretrained(text_dir).eval()
    with torch.no_grad():
        assert (want - _pose_logp(base)).min() > 0.5  # the check below can tell them apart
    # merged sync into a plain policy: the embedding (and an untied head) with the new rows
    state = merged_state_dict(learner)
    embed_key = "model.model.embed_tokens.weight"
    assert embed_key in state and set(state) <= set(base.state_dict())
    assert ("model.lm_head.weight" in state) == (not _tied(base))
    assert not any("token_adapter" in k for k in state)
    base.load_state_dict(state, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(_pose_logp(base), want, atol=1e-5, rtol=0)
    # adapter-only sync into a worker that rebuilds the structure from config.lora
    adapter = adapter_state_dict(learner)
    assert sum("trainable_tokens_delta" in k for k in adapter) == (1 if _tied(base) else 2)
    for merge in (True, False):
        worker = RolloutWorker(str(text_dir), lora=learner.config.lora, merge_adapter=merge)
        worker.update_weights(pack_state_dict(adapter, bucket_bytes=50_000), 1)
        with torch.no_grad():
            torch.testing.assert_close(_pose_logp(worker.policy), want, atol=1e-5, rtol=0)
    # LoRA checkpoint round trip, then merge_lora (PEFT's merge_and_unload folds the rows)
    loaded = PosePolicy.from_pretrained(learner.save_pretrained(tmp_path / "ckpt")).eval()
    assert loaded.is_lora
    merged = merge_lora(loaded)
    assert not any("token_adapter" in n for n, _ in merged.named_parameters())
    assert _tied(merged) == _tied(base)
    with torch.no_grad():
        torch.testing.assert_close(_pose_logp(merged), want, atol=1e-5, rtol=0)
    reloaded = PosePolicy.from_pretrained(merged.save_pretrained(tmp_path / "plain")).eval()
    with torch.no_grad():
        torch.testing.assert_close(_pose_logp(reloaded), want, atol=1e-5, rtol=0)


def test_multimodal_tied_head_shares_the_pose_row(tmp_path):
    """LLaVA-style: the embedding is ``model.language_model.embed_tokens``."""
    folder = build_tiny_model(tmp_path / "llava", seed=0, num_layers=1, tie_word_embeddings=True)
    policy = apply_lora(PosePolicy.from_pretrained(folder), r=2)
    assert _tied(PosePolicy.from_pretrained(folder))
    delta = [n for n in trainable_parameter_names(policy) if "trainable_tokens_delta" in n]
    assert delta == ["model.base_model.model.model.language_model.embed_tokens.token_adapter"
                     ".trainable_tokens_delta.default"]
    with torch.no_grad():
        delta_param = dict(policy.named_parameters())[delta[0]]
        delta_param.add_(1.0)
    emb, head = _rows(policy)
    assert torch.equal(emb[policy.pose_token_id], head[policy.pose_token_id])
    state = merged_state_dict(policy)
    plain = PosePolicy.from_pretrained(folder)
    plain.load_state_dict(state, strict=False)
    assert torch.equal(plain.hf_model.get_output_embeddings().weight[policy.pose_token_id],
                       head[policy.pose_token_id])
