"""SFT warm-up: response cross-entropy + a pose loss at ``<POSE>`` (same launch path as HyGRPO).

    L = w_text · CE(response tokens) + w_pose · L_pose + w_joint · L_joint,
    L_pose = -1/D Σ_d log N(p*_d; μ_d, σ_d²)       (pose_loss="nll": trains μ and σ)
           = 1/D ‖μ - p*‖²                          (pose_loss="l2": deterministic baseline)
           (and "l2_nll", "beta_nll": see :func:`pose_loss_per_sample`)
    L_joint = 1/24 Σ_j ‖FK(μ)_j - FK(p*)_j‖          (metres; off unless pose_joint_loss_weight > 0)

averaged over the samples whose target contains ``<POSE>``. Each optimizer step consumes
``per_device_train_batch_size × num_processes × gradient_accumulation_steps`` rows drawn by a
seeded sampler that every rank replays identically (rank ``r`` takes its slice). The
optimisation itself (accumulation, clipping, schedule, checkpoints) is :class:`Learner`'s.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from posrft.body.pose import PoseToJoints
from posrft.data.splits import load_split
from posrft.policy.pose_head import PoseDistribution
from posrft.policy.prompts import encode_prompts
from posrft.train.accelerator import make_accelerator
from posrft.train.common import build_policy, export_policy, gather_mean, policy_param_groups
from posrft.train.config import SFTConfig
from posrft.train.data import PromptSampler, encode_completions
from posrft.train.loop import Learner


def pose_loss_per_sample(dist: Any, gt_pose: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """Pose loss of each sample ``(N,)``, averaged over the D dimensions:

        nll       -log N(p*; μ, σ²)                          (μ's gradient is scaled by 1/σ²)
        l2        (μ - p*)²                                   (σ untrained)
        l2_nll    (μ - p*)² - log N(p*; sg(μ), σ²)            (μ as l2, σ fitted to μ's error;
                                                              run_sft also stops σ's gradient
                                                              into the shared features)
        beta_nll  -sg(σ^2β) · log N(p*; μ, σ²)                (β = 1: μ as l2, σ as nll)

    ``sg`` is stop-gradient.
    """
    if kind == "nll":
        return -dist.log_prob(gt_pose, per_dim=True).mean(-1)
    l2 = (dist.mean - gt_pose) ** 2
    if kind == "l2":
        return l2.mean(-1)
    if kind == "l2_nll":
        return (l2 - PoseDistribution(dist.mean.detach(), dist.log_std).log_prob(gt_pose, per_dim=True)).mean(-1)
    if kind == "beta_nll":
        weight = (2 * beta * dist.log_std).exp().detach()
        return -(weight * dist.log_prob(gt_pose, per_dim=True)).mean(-1)
    raise ValueError(f"pose_loss must be one of nll, l2, l2_nll, beta_nll; got {kind!r}")


def sft_losses(policy_out: Any, completion_mask: torch.Tensor, gt_pose: torch.Tensor,
               pose_loss: str, beta: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, int]:  # fmt: skip
    """(text CE, pose loss, number of rows with a ``<POSE>``) for one micro-batch."""
    mask = completion_mask.to(policy_out.token_logps.dtype)
    text = -(policy_out.token_logps * mask).sum() / mask.sum().clamp(min=1)
    valid = policy_out.pose_valid
    per_sample = pose_loss_per_sample(policy_out.pose_dist, gt_pose, pose_loss, beta)
    w = valid.to(per_sample.dtype)
    pose = (per_sample * w).sum() / w.sum().clamp(min=1)
    return text, pose, int(valid.sum())


def joint_loss(mean: torch.Tensor, gt_pose: torch.Tensor, valid: torch.Tensor, fk: PoseToJoints) -> torch.Tensor:
    """Mean per-joint position error (metres) of μ ``(N, D)`` against p* ``(N, D)``, both posed by
    ``fk`` (pelvis at rest, so the error is pelvis-aligned MPJPE), averaged over the ``valid`` rows."""
    err = (fk(mean.float()) - fk(gt_pose.float())).norm(dim=-1).mean(-1)
    w = valid.to(err.dtype)
    return (err * w).sum() / w.sum().clamp(min=1)


@torch.no_grad()
def fit_pose_head_input(policy: Any, data: Any, use_images: bool, rows: int = 256, batch: int = 16, *,
                        hidden: bool = True, image: bool = True) -> None:
    """Fit the pose head's input statistics on the first ``rows`` training rows (the same rows
    on every rank, so every replica gets the same statistics without a collective): with
    ``hidden``, the normalisation of the ``<POSE>`` state (``pose_head_input_norm``); with
    ``image`` and a head that reads the image, the per-channel standardisation of its image
    tokens, over those rows' pictures."""
    head = policy.active_pose_head
    image = image and head.reads_image
    states: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []

    def keep(_m: Any, args: tuple, _o: Any) -> None:
        states.append(args[0].detach().float())
        if image:
            tokens.append(args[1][args[2]].detach().float())  # the real tokens, padding left out

    hook = head.register_forward_hook(keep)
    was_training = policy.training
    policy.eval()
    try:
        for i in range(0, min(rows, len(data)), batch):
            part = data.select(range(i, min(i + batch, rows, len(data))))
            enc = encode_prompts(policy.processing, part["prompt"], part["images"] if use_images else None,
                                 policy.multimodal, policy.family)  # fmt: skip
            comp_ids, comp_mask = encode_completions(policy, part["prompt"], part["completion"])
            out = policy(enc.input_ids, enc.attention_mask, comp_ids, comp_mask, mm_inputs=enc.mm_inputs)
            states[-1] = states[-1][out.pose_valid.cpu()]  # rows whose answer has a <POSE>
    finally:
        hook.remove()
        policy.train(was_training)
    if image:
        if not sum(len(t) for t in tokens):
            raise ValueError(f"the pose head reads the image but the first {rows} training rows have no pictures")
        head.image_reader.fit_normalization(torch.cat(tokens))
    if hidden:
        head.fit_input_normalization(torch.cat(states))


@torch.no_grad()
def fit_image_token_standardization(policy: Any, data: Any, rows: int = 256, batch: int = 16) -> None:
    """Standardise the projector's tokens over the pictures of the first ``rows`` training rows
    (:func:`posrft.policy.image_tokens.standardize_image_tokens`; the same rows on every rank)
    and record it in the policy's config."""
    from posrft.policy.image_tokens import standardize_image_tokens

    def runner(part: Any) -> Any:
        def run() -> None:
            enc = encode_prompts(policy.processing, part["prompt"], part["images"], True, policy.family)
            policy.model(input_ids=enc.input_ids.to(policy.device), attention_mask=enc.attention_mask.to(policy.device),
                         **policy.model_inputs(enc.mm_inputs, None))  # fmt: skip

        return run

    n = min(rows, len(data))
    parts = (data.select(range(i, min(i + batch, n))) for i in range(0, n, batch))
    was_training = policy.training
    policy.eval()
    try:
        standardize_image_tokens(policy.model, policy.family, (runner(p) for p in parts))
    finally:
        policy.train(was_training)
    policy.config.image_tokens_standardized = True


def run_sft(cfg: SFTConfig) -> Path:
    """Train, checkpoint every ``save_steps``, export ``OUTPUT_DIR/final``; returns that path."""
    set_seed(cfg.seed)
    acc = make_accelerator(cfg)
    data = load_split(cfg.dataset_path, cfg.dataset_train_split, ["prompt", "completion", "gt_pose_6d"])
    use_images = "images" in data.column_names

    def before_adapters(policy: Any) -> None:
        if not cfg.standardize_image_tokens or policy.config.image_tokens_standardized:
            return
        if not (use_images and policy.multimodal):
            raise ValueError(f"standardize_image_tokens needs pictures and a multimodal model; dataset "
                             f"{cfg.dataset_path!r} has {'' if use_images else 'no '}images and the model is "
                             f"{'multimodal' if policy.multimodal else 'text-only'}")  # fmt: skip
        fit_image_token_standardization(policy, data)

    policy = build_policy(cfg, before_adapters)
    # l2_nll's contract: μ, the trunk and the backbone train exactly as with l2 (σ's NLL stays in
    # σ's own layer); without the stop-gradient σ's NLL reaches the shared features and, measured
    # on the tiny text→pose study, left μ 25 mm MPJPE behind l2 (docs/results/hygrpo_study.md)
    policy.pose_head.sigma_stops_gradient = cfg.pose_loss == "l2_nll"
    if use_images and not policy.multimodal:
        raise ValueError(f"dataset {cfg.dataset_path!r} has images but the model is text-only")
    head = policy.active_pose_head
    fit_hidden = cfg.pose_head_input_norm and not head.has_input_normalization
    # a head that reads the image cannot do without its tokens' standardisation (module
    # docstring of posrft.policy.image_reader), so it is fitted whenever missing
    fit_image = head.reads_image and not head.image_reader.has_normalization
    if fit_hidden or fit_image:
        fit_pose_head_input(policy, data, use_images, hidden=fit_hidden, image=fit_image)
    world, rank = acc.num_processes, acc.process_index
    bs = cfg.per_device_train_batch_size
    total = cfg.max_steps
    if cfg.num_train_epochs is not None:
        total = max(1, math.ceil(cfg.num_train_epochs * len(data) / (bs * world * cfg.gradient_accumulation_steps)))
    dim = policy.config.pose_dim
    fk = PoseToJoints(cfg.body_model_dir).to(acc.device) if cfg.pose_joint_loss_weight > 0 else None
    learner = Learner(cfg, acc, policy, run_name="sft", total_steps=total,
                      param_groups=policy_param_groups(cfg, policy))
    sampler = PromptSampler(len(data), cfg.seed)
    step, _ = learner.resume(sampler)
    model = learner.model
    model.train()
    while step < total:
        t0 = time.perf_counter()
        k = cfg.gradient_accumulation_steps
        sums = {"loss/sft_text": 0.0, "loss/sft_pose": 0.0, "pose/valid_frac": 0.0, "pose/sigma": 0.0}
        if fk is not None:
            sums["loss/sft_joints"] = 0.0
        for _ in range(k):
            rows = data.select(sampler.next(bs * world)[rank * bs:(rank + 1) * bs])
            prompts, completions = rows["prompt"], rows["completion"]
            enc = encode_prompts(policy.processing, prompts, rows["images"] if use_images else None,
                                 policy.multimodal, policy.family)  # fmt: skip
            comp_ids, comp_mask = encode_completions(policy, prompts, completions)
            gt = torch.tensor(rows["gt_pose_6d"], dtype=torch.float32)
            if gt.shape[1] != dim:
                raise ValueError(f"gt_pose_6d has {gt.shape[1]} values per row, the policy predicts {dim}")
            with learner.accumulate():
                out = model(enc.input_ids, enc.attention_mask, comp_ids, comp_mask,
                            mm_inputs=enc.mm_inputs)  # fmt: skip
                text, pose, n_valid = sft_losses(out, comp_mask.to(out.token_logps.device),
                                                 gt.to(out.token_logps.device), cfg.pose_loss,
                                                 cfg.beta_nll_beta)  # fmt: skip
                loss = cfg.text_loss_weight * text + cfg.pose_loss_weight * pose
                if fk is not None:
                    joints = joint_loss(out.pose_dist.mean, gt.to(out.pose_dist.mean.device), out.pose_valid, fk)
                    loss = loss + cfg.pose_joint_loss_weight * joints
                    sums["loss/sft_joints"] += joints.item() / k
                learner.backward(loss)
            sums["loss/sft_text"] += text.item() / k
            sums["loss/sft_pose"] += pose.item() / k
            sums["pose/valid_frac"] += n_valid / bs / k
            sums["pose/sigma"] += out.pose_dist.std.mean().item() / k
        opt = learner.optimizer_step()
        step += 1
        metrics = gather_mean(acc, sums)
        metrics.update(opt)
        metrics["time/step"] = time.perf_counter() - t0
        learner.log(step, metrics)
        learner.checkpoint(step, sampler.state_dict())
    learner.checkpoint(step, sampler.state_dict(), final=True)
    out = export_policy(learner, Path(cfg.output_dir) / "final", cfg.merge_lora_on_export)
    learner.finish()
    return out
