"""Word alignment of the projector (posrft.skeleton.align): the loss against an explicit sum,
and that training the projector alone makes clips read as their class's words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posrft.data.actions import make_clip
from posrft.skeleton import align
from posrft.skeleton.model import RendererSettings, SkeletonLLM


def test_bag_of_words_loss_equals_the_explicit_sum():
    g = torch.Generator().manual_seed(0)
    b, n, d, v, s = 3, 4, 5, 11, 7.0
    tokens = torch.randn(b, n, d, generator=g) * 3
    emb = torch.randn(v, d, generator=g)
    q = torch.rand(b, v, generator=g)
    q = q / q.sum(-1, keepdim=True)
    loss, probs = align.bag_of_words_loss(tokens, align.unit_rows(emb), q, s)
    t, e, qq = tokens.double().numpy(), emb.double().numpy(), q.double().numpy()
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    total = 0.0
    for i in range(b):
        p = np.zeros(v)
        for j in range(n):
            z = s * e @ (t[i, j] / np.linalg.norm(t[i, j]))
            p += np.exp(z - z.max()) / np.exp(z - z.max()).sum() / n
        np.testing.assert_allclose(probs[i].double().numpy(), p, rtol=1e-5)
        total += -(qq[i] * np.log(p)).sum()
    assert loss.item() == pytest.approx(total / b, rel=1e-5)


def test_word_targets_are_uniform_over_each_class_and_reject_an_empty_one():
    q = align.word_targets([[1, 3], [2]], 5)
    assert q.tolist() == [[0, 0.5, 0, 0.5, 0], [0, 0, 1.0, 0, 0]]
    with pytest.raises(ValueError, match="class 1 has no words"):
        align.word_targets([[1], []], 5)


def test_alignment_trains_the_projector_alone_until_clips_read_as_their_words(tiny_model_dir):
    torch.manual_seed(0)
    model = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=3))
    classes = ["squat", "wave left hand", "bow"]
    labels = [classes[i % 3] for i in range(12)]
    clips = np.stack([make_clip(y, num_frames=16, seed=i) for i, y in enumerate(labels)])
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trains = {k: p.requires_grad for k, p in model.named_parameters()}
    ids = align.class_word_ids(model.tokenizer, classes)
    targets = align.word_targets(ids, model.hf_model.get_input_embeddings().weight.shape[0])
    inputs = align.projector_inputs(model, clips)
    y = torch.tensor([classes.index(c) for c in labels])
    chance = (align.word_class_scores(model, inputs, targets).argmax(-1) == y).float().mean().item()

    res = align.align_projector(model, clips, labels, classes, steps=200,
                                learning_rate=3e-3, batch=6, inputs=inputs)
    assert res.loss_last < 0.5 * res.loss_first
    assert res.train_top1 >= 0.75 > chance  # the tiny random tower does not separate all clips
    projector = set(align.projector_module_names(model.hf_model, model.family))
    moved = []
    for name, p in model.named_parameters():
        if any(f".{m}." in f".{name}" for m in projector):
            moved.append(not torch.equal(p, before[name]))
        else:
            assert torch.equal(p, before[name]), f"{name} is not the projector's but moved"
        assert p.requires_grad == trains[name] and p.dtype == before[name].dtype, name
    assert moved and all(moved)
    projector = align._projector(model)
    tokens = align.frame_tokens(model, projector, inputs, 3)  # a word's size now
    assert torch.equal(torch.cat(list(align.clip_tokens(model, projector, inputs, chunk=5))), tokens)
    norm = align.text_embedding_norm(model.hf_model)
    assert tokens.norm(dim=-1).mean().item() == pytest.approx(norm, rel=1e-4)


def test_alignment_rejects_labels_outside_the_classes(tiny_model_dir):
    model = SkeletonLLM.from_pretrained(tiny_model_dir, RendererSettings(num_frames=2))
    clips = np.stack([make_clip("squat", num_frames=16, seed=0)])
    with pytest.raises(ValueError, match=r"labels \['squat'\] are not among"):
        align.align_projector(model, clips, ["squat"], ["bow"], steps=1)
