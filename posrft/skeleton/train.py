"""The SkeletonLLM learner: one loop for the four stages (they differ in questions and parts).

    L = - 1/N Σ_rows (Σ_t m_t log p(a_t | frames(x), question, a_<t)) / (Σ_t m_t)

the answer tokens' (``m``, EOS included) mean negative log-likelihood per row, averaged over
the ``N`` rows of a micro-batch: every question weighs the same whatever its answer length (a
15-token caption would otherwise outweigh a 3-token option 5:1). Frames are rendered by DrAction
in training mode (a random frame per segment). Each optimizer step consumes
``per_device_train_batch_size × num_processes × gradient_accumulation_steps`` clips drawn by a
seeded sampler every rank replays (rank ``r`` takes its slice), as in :mod:`posrft.train.sft`.
The renderer has its own learning rate (``renderer_learning_rate``). The optimisation (accumulation,
clipping, schedule, checkpoints) is :class:`~posrft.train.loop.Learner`'s. Runs under
``accelerate launch`` (DeepSpeed ZeRO-2 from the recipe's accelerate config) or in-process.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from posrft.files import atomic_write_json
from posrft.skeleton.config import SkeletonConfig
from posrft.skeleton.data import load_action_data
from posrft.skeleton.inputs import encode_targets
from posrft.skeleton.model import RendererSettings, SkeletonLLM
from posrft.skeleton.stages import make_source
from posrft.train.accelerator import make_accelerator
from posrft.train.checkpoint import resolve_checkpoint
from posrft.train.common import gather_mean, projector_groups
from posrft.train.data import PromptSampler
from posrft.train.loop import Learner

log = logging.getLogger("posrft.skeleton")


def renderer_settings(cfg: SkeletonConfig) -> RendererSettings:
    return RendererSettings(fmt=cfg.skeleton_format, num_frames=cfg.num_render_frames,
                            image_size=cfg.render_size, samples_per_bone=cfg.samples_per_bone,
                            nfm=cfg.renderer_nfm, seed=cfg.seed, vision_size=cfg.vision_size,
                            token_pool=cfg.token_pool, image_token_norm=cfg.image_token_norm)


def parameter_groups(cfg: SkeletonConfig, model: SkeletonLLM) -> list[dict]:
    """AdamW groups: the renderer at ``renderer_learning_rate``, the projector at
    ``projector_learning_rate`` when set, the rest at ``learning_rate`` (empty groups left out)."""
    groups = []
    if model.renderer_parameters():
        groups.append({"params": model.renderer_parameters(), "lr": cfg.renderer_learning_rate})
    groups += projector_groups(model.lm.named_parameters(), model.family.is_projector,
                               cfg.learning_rate, cfg.projector_learning_rate)
    if not groups:
        raise ValueError(f"train_parts={cfg.train_parts!r}: no trainable parameters")
    return groups


def skip_scalar_broadcast(model: torch.nn.Module) -> None:
    """DeepSpeed's start-up broadcast views every parameter as bytes, which fails for 0-dim
    tensors (DrAction's depth-colour mix). Every rank loads the same files with the same seed,
    so those parameters are already equal; the ``ds_optim_param`` mark makes DeepSpeed skip
    them (it only affects that broadcast and optimizer offloading, which posrft does not use)."""
    for p in model.parameters():
        if p.dim() == 0:
            p.ds_optim_param = True


def load_model(cfg: SkeletonConfig) -> SkeletonLLM:
    if not cfg.model_name_or_path:
        raise ValueError("model_name_or_path is empty: give `posrft model init-tiny`'s folder or "
                         "the previous stage's OUTPUT_DIR/final")
    return SkeletonLLM.from_pretrained(cfg.model_name_or_path, renderer_settings(cfg),
                                       cfg.renderer_learnable)


def extra_unseen_sets(cfg: SkeletonConfig) -> dict[str, list[str]]:
    """``{name: unseen classes}`` of ``eval_unseen_splits`` (same seen classes, checked by the
    config); the name is the split with '/' made '_' (``novel/mirror`` -> ``novel_mirror``)."""
    from posrft.data.action_classes import zero_shot_split

    return {s.replace("/", "_").replace(":", "_"): zero_shot_split(s)[1]
            for s in cfg.eval_unseen_splits}


@torch.no_grad()
def standardize_frame_tokens(model: SkeletonLLM, clips: np.ndarray, count: int = 64, batch: int = 8) -> None:
    """Standardise the projector's frame tokens over ``count`` clips spread evenly through
    ``clips`` ``(N, T, J, 3)`` (the training set is ordered by class), rendered by the current
    renderer; recorded in the renderer settings, which every later stage loads."""
    from posrft.policy.image_tokens import standardize_image_tokens

    pick = np.unique(np.linspace(0, len(clips) - 1, min(count, len(clips))).round().astype(int))
    parts = [pick[i:i + batch] for i in range(0, len(pick), batch)]
    runs = (lambda idx=idx: model.image_tokens(model.pixels(torch.from_numpy(clips[idx]))) for idx in parts)
    standardize_image_tokens(model.hf_model, model.family, runs)
    model.settings.image_tokens_standardized = True


def align_frame_tokens(cfg: SkeletonConfig, model: SkeletonLLM, train, data) -> None:
    """Word-align the projector on the seen training clips (every rank the same: same seed, same
    clips); recorded in the renderer settings, which every later stage loads."""
    from posrft.skeleton.align import align_projector

    res = align_projector(model, train.clips, train.labels, data.seen,
                          steps=cfg.align_projector_steps, learning_rate=cfg.align_learning_rate,
                          seed=cfg.seed)  # fmt: skip
    log.info("projector word alignment: %s", res)
    model.settings.projector_aligned_steps = res.steps


def run_skeleton(cfg: SkeletonConfig, data=None) -> Path:
    """Train one stage, export ``OUTPUT_DIR/final`` (and ``OUTPUT_DIR/eval.json`` when
    ``eval_at_end``); returns the final folder. ``data`` (an ActionData) skips loading."""
    set_seed(cfg.seed)
    acc = make_accelerator(cfg)
    formats = [cfg.skeleton_format] + ([cfg.cross_format] if cfg.cross_format else [])
    if data is None:
        data = load_action_data(cfg.dataset_path, formats=formats, class_split=cfg.class_split,
                                clips_per_class=cfg.clips_per_class, num_frames=cfg.clip_frames,
                                seed=cfg.data_seed, val_fraction=cfg.val_fraction,
                                test_fraction=cfg.test_fraction)  # fmt: skip
    train = data.get(cfg.dataset_train_split, cfg.skeleton_format).subset(data.seen)
    if len(train) == 0:
        raise ValueError(f"split {cfg.dataset_train_split!r} has no {cfg.skeleton_format!r} clips "
                         f"of the seen classes {data.seen}")
    model = load_model(cfg)
    if cfg.standardize_image_tokens and not model.settings.image_tokens_standardized:
        standardize_frame_tokens(model, train.clips)
    if cfg.align_projector_steps and not model.settings.projector_aligned_steps:
        if resolve_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir) is None:
            align_frame_tokens(cfg, model, train, data)
        else:  # the checkpoint about to be restored holds the projector aligned and trained since
            model.settings.projector_aligned_steps = cfg.align_projector_steps
    source = make_source(cfg, model, train, data, acc.is_main_process, acc.wait_for_everyone)
    names = model.set_train_parts(cfg.parts, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                                  lm_head=cfg.train_lm_head, lora_layers=cfg.lora_layers)
    log.info("stage %s: %d trainable tensors (%s)", cfg.stage, len(names), cfg.train_parts)
    skip_scalar_broadcast(model)
    learner = Learner(cfg, acc, model, run_name=f"skeleton-{cfg.stage}", total_steps=cfg.max_steps,
                      param_groups=parameter_groups(cfg, model))  # fmt: skip
    engine = learner.model
    world, rank = acc.num_processes, acc.process_index
    sampler = PromptSampler(len(source.pool), cfg.seed)
    step, _ = learner.resume(sampler)

    bs = cfg.per_device_train_batch_size
    engine.train()
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        sums = {"loss/text": 0.0, "answer/tokens": 0.0}
        for micro in range(cfg.gradient_accumulation_steps):
            idx = sampler.next(bs * world)[rank * bs:(rank + 1) * bs]
            rng = np.random.default_rng([cfg.seed, step, micro, rank])
            questions = source([source.pool[i] for i in idx], rng)
            enc = encode_targets(model.processor, [q.prompt for q in questions],
                                 [q.target for q in questions], model.num_frames,
                                 model.image_seq_length, cfg.max_target_tokens)  # fmt: skip
            joints = torch.from_numpy(train.clips[[q.clip for q in questions]])
            with learner.accumulate():
                total, count = engine(joints, enc.input_ids, enc.attention_mask, enc.target_mask)
                loss = -(total / count.clamp_min(1)).mean()
                learner.backward(loss)
            k = cfg.gradient_accumulation_steps
            sums["loss/text"] += loss.item() / k
            sums["answer/tokens"] += count.mean().item() / k
        opt = learner.optimizer_step()
        step += 1
        metrics = gather_mean(acc, sums)
        metrics.update(opt)
        metrics["time/step"] = time.perf_counter() - t0
        learner.log(step, metrics)
        learner.checkpoint(step, sampler.state_dict())
    learner.checkpoint(step, sampler.state_dict(), final=True)
    final = Path(cfg.output_dir) / "final"

    def write(trained: SkeletonLLM) -> None:
        trained.save_pretrained(final)
        info = {"stage": cfg.stage, "train_parts": cfg.train_parts, "steps": step,
                "questions": source.stats}
        if cfg.eval_at_end:
            from posrft.skeleton.evaluate import evaluate_all

            info["eval"] = evaluate_all(
                trained, data, split=cfg.dataset_eval_split, fmt=cfg.skeleton_format,
                cross_format=cfg.cross_format, num_choices=cfg.num_choices, seed=cfg.seed,
                captions=cfg.eval_captions, extra_unseen=extra_unseen_sets(cfg), bf16=cfg.bf16,
            )  # fmt: skip
            log.info("eval: %s", json.dumps({k: v for k, v in info["eval"].items()
                                              if k.endswith("top1")}))
        atomic_write_json(Path(cfg.output_dir) / "eval.json", info)
        log.info("exported SkeletonLLM to %s", final)

    learner.export(write)
    learner.finish()
    return final
