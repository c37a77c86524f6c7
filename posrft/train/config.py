"""Trainer configs: one dataclass per trainer, TRL field names where the meaning is the same.

Every cross-field check lives in ``__post_init__`` and names the field. Values may come from a
YAML recipe (``--config``), which sets them without argparse's type conversion, so
``__post_init__`` also checks each field's type (:func:`check_types`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from posrft.algo.hygrpo_loss import HyGRPOLossSettings
from posrft.policy.pose_head import SigmaSettings
from posrft.train.config_checks import check_ranges, check_types, hygrpo_ranges, target_of

#: The paper's rewards: format and text similarity feed the text advantage, joints the pose one.
#: (The semantic reward needs a trained retrieval model; recipes add it with its path.)
DEFAULT_REWARDS: list[dict[str, Any]] = [
    {"func": "format", "weight": 1.0, "target": "text"},
    {"func": "joint", "weight": 1.0, "target": "pose"},
]


#: K when num_pose_samples is not given, and the exploration σ of pose_sigma fixed (see their help).
DEFAULT_POSE_SAMPLES = 16
DEFAULT_POSE_SIGMA = 0.05


def _asks_per_joint_terms(rewards: list[Any]) -> bool:
    """Whether a reward entry is a built-in joint or reprojection reward scoring poses with
    ``per_joint: true``."""
    return any(isinstance(r, dict) and r.get("func") in ("joint", "reprojection")
               and r.get("target", "pose") != "text"
               and bool((r.get("kwargs") or {}).get("per_joint")) for r in rewards)


def _help(text: str) -> dict[str, Any]:
    return {"metadata": {"help": text}}


@dataclass
class BaseTrainConfig:
    """Fields shared by the SFT and HyGRPO trainers (model, data, optimisation, bookkeeping)."""

    trainer: str = field(default="", **_help("Which learner: 'sft' or 'hygrpo' (set by the config class)."))
    accelerate_config: Optional[str] = field(default=None, **_help("accelerate config file that "
        "`posrft train` launches with (default recipes/accelerate/zero2.yaml)."))  # fmt: skip
    # ---- model and data
    model_name_or_path: str = field(default="", **_help("Model folder (HF save_pretrained layout, "
        "optionally with pose_head.safetensors); no hub downloads."))  # fmt: skip
    dataset_path: str = field(default="", **_help("DatasetDict folder written by `posrft data synth` "
        "(datasets.load_from_disk)."))  # fmt: skip
    dataset_train_split: str = field(default="train", **_help("Split to train on."))
    dataset_eval_split: str = field(default="val", **_help("Split for evaluation during training."))
    output_dir: str = field(default="runs/train", **_help("Where checkpoints, logs and the final model go."))
    body_model_dir: Optional[str] = field(default=None, **_help("Folder with SMPL files; default "
        "$POSRFT_BODY_MODELS, else the offline stand-in."))  # fmt: skip

    # ---- optimisation
    learning_rate: float = field(default=1e-5, **_help("AdamW learning rate."))
    weight_decay: float = field(default=0.0, **_help("AdamW weight decay."))
    adam_beta1: float = field(default=0.9, **_help("AdamW beta1."))
    adam_beta2: float = field(default=0.999, **_help("AdamW beta2."))
    max_grad_norm: float = field(default=1.0, **_help("Gradient clipping norm (0 disables)."))
    lr_scheduler_type: Literal["constant", "linear", "cosine"] = field(default="constant", **_help(
        "Learning-rate schedule after warm-up."))  # fmt: skip
    warmup_steps: int = field(default=0, **_help("Linear warm-up steps."))
    per_device_train_batch_size: int = field(default=8, **_help("Samples (completions for RL) per "
        "device per micro-step."))  # fmt: skip
    gradient_accumulation_steps: int = field(default=1, **_help("Micro-steps per optimizer step."))
    max_steps: int = field(default=100, **_help("Optimizer steps to run."))
    seed: int = field(default=0, **_help("Seed for data order, sampling and initialisation."))
    bf16: bool = field(default=False, **_help(
        "bf16 mixed precision (autocast; the pose head stays fp32). GPUs, and CPUs with AVX-512 BF16 "
        "(SmolLM2 LoRA SFT step 1.4-1.8x faster here: benchmarks/bf16_speed.py)."))

    # ---- which parameters train
    use_peft: bool = field(default=False, **_help("Train LoRA adapters on the language model."))
    lora_r: int = field(default=16, **_help("LoRA rank."))
    lora_alpha: int = field(default=32, **_help("LoRA alpha."))
    lora_dropout: float = field(default=0.0, **_help("LoRA dropout."))
    lora_layers: Optional[int] = field(default=None, **_help("LoRA only in the last N decoder layers "
        "(default: all). With the projector frozen, backward stops below them."))  # fmt: skip
    lora_train_pose_token: bool = field(default=True, **_help("With use_peft, train the <POSE> rows "
        "of the input embedding and LM head (PEFT trainable_token_indices); off, a LoRA model "
        "keeps <POSE>'s initial row and rarely learns to emit it."))  # fmt: skip
    train_projector: bool = field(default=True, **_help("Train the multimodal projector (with "
        "use_peft, as a PEFT modules_to_save copy; without, it follows freeze_vision_tower)."))  # fmt: skip
    projector_learning_rate: Optional[float] = field(default=None, **_help("Learning rate of the "
        "multimodal projector when it trains (default: learning_rate). Lower keeps more of what "
        "the pretrained projector passes on while the LoRA learns to read it."))  # fmt: skip
    freeze_vision_tower: bool = field(default=True, **_help("Keep the vision encoder frozen."))

    # ---- bookkeeping
    logging_steps: int = field(default=1, **_help("Log every N optimizer steps."))
    save_steps: int = field(default=0, **_help("Save a resumable checkpoint every N steps (0: only at the end)."))
    save_total_limit: Optional[int] = field(default=2, **_help("Keep at most N checkpoints."))
    resume_from_checkpoint: Optional[str] = field(default=None, **_help("A checkpoint folder, or "
        "'latest' for the newest under output_dir."))  # fmt: skip
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], **_help(
        "Accelerate trackers: tensorboard, wandb, ... or none."))  # fmt: skip
    pose_grid_steps: int = field(default=0, **_help("Every N steps write a PNG of sampled vs ground-truth poses (0: off)."))
    ddp_timeout: int = field(default=1800, **_help("Seconds a collective (all-reduce, scatter, barrier) "
        "may wait for the other ranks before the run fails naming the phase (TRL/transformers name)."))  # fmt: skip
    merge_lora_on_export: bool = field(default=True, **_help("Merge LoRA into the exported model."))

    KIND = ""

    def __post_init__(self) -> None:
        check_types(self)
        if self.trainer not in ("", self.KIND):
            raise ValueError(f"trainer: this recipe is for {self.trainer!r} but was parsed as {self.KIND!r}")
        self.trainer = self.KIND
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                     "logging_steps"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.projector_learning_rate is not None:
            if not self.projector_learning_rate > 0:
                raise ValueError(f"projector_learning_rate must be > 0, got {self.projector_learning_rate}")
            if not self.train_projector:
                raise ValueError("projector_learning_rate is set but train_projector is false")
        for name in ("save_steps", "warmup_steps", "pose_grid_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise ValueError(f"lora_layers must be >= 1, got {self.lora_layers}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        check_ranges(self)


@dataclass
class SFTConfig(BaseTrainConfig):
    """SFT warm-up: cross-entropy on response tokens + a loss on the pose at ``<POSE>``.

    ``pose_loss="nll"`` trains the Gaussian head (mean and σ) by negative log-likelihood;
    ``"l2"`` trains only the mean with a squared error (the deterministic-head baseline);
    ``"l2_nll"`` and ``"beta_nll"`` train both without NLL's 1/σ² down-weighting of the
    uncertain dimensions (see :func:`posrft.train.sft.pose_loss_per_sample`).
    """

    KIND = "sft"
    learning_rate: float = field(default=1e-4, **_help("AdamW learning rate."))
    output_dir: str = field(default="runs/sft", **_help("Where checkpoints, logs and the final model go."))
    num_train_epochs: Optional[float] = field(default=None, **_help("If set, overrides max_steps."))
    pose_loss: Literal["nll", "l2", "l2_nll", "beta_nll"] = field(default="nll", **_help(
        "Gaussian NLL (μ and σ); L2 on μ only (deterministic head); l2_nll: L2 on μ plus NLL for "
        "σ on a detached μ (μ trains exactly as with l2, σ is calibrated); beta_nll: NLL weighted "
        "per dimension by the detached σ^(2·beta_nll_beta) (Seitzer et al. 2022)."))  # fmt: skip
    beta_nll_beta: float = field(default=0.5, **_help("β of pose_loss: beta_nll (0: NLL, 1: ~L2 for μ)."))
    pose_loss_weight: float = field(default=1.0, **_help("Weight of the pose loss."))
    text_loss_weight: float = field(default=1.0, **_help("Weight of the response cross-entropy."))
    pose_joint_loss_weight: float = field(default=0.0, **_help(
        "Weight of a 3D joint loss on μ (HMR/SPIN-style keypoint supervision): the mean over the "
        "24 SMPL joints of ||FK(μ)_j - FK(p*)_j|| in metres, pelvis at rest. It weights each "
        "rotation by how far it moves the joints; the 6D loss puts ~80 % of its squared error on "
        "the 21 body joints, although the global orientation moves every joint. Measured on the "
        "pretrained image->pose SFT: lower MPJPE, higher PA-MPJPE (docs/pretrained.md)."))  # fmt: skip
    pose_head_input_norm: bool = field(default=False, **_help(
        "Before the first step, centre and scale the pose head's input with the <POSE> hidden "
        "states of the first 256 training rows (skipped if the head already has statistics, e.g. a "
        "second SFT stage). For pretrained LMs, whose hidden state there is 96 % the same vector "
        "for every prompt: measured on SmolLM2 text->pose (docs/pretrained.md)."))
    standardize_image_tokens: bool = field(default=False, **_help(
        "Before the first step, refit the projector's output layer so that each channel of the "
        "image tokens has zero mean and the text embeddings' spread over the first 256 training "
        "pictures (skipped if the model was standardised before). For a composed start whose "
        "fresh projector emits nearly the same token for every picture; the pretrained image->pose "
        "pilot was no better with it (docs/pretrained.md)."))
    max_length: int = field(default=256, **_help("Truncate prompt+response to this many tokens."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.beta_nll_beta <= 1:
            raise ValueError(f"beta_nll_beta must be in [0, 1], got {self.beta_nll_beta}")
        for name in ("pose_loss_weight", "text_loss_weight", "pose_joint_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.pose_loss_weight == 0 and self.text_loss_weight == 0 and self.pose_joint_loss_weight == 0:
            raise ValueError("pose_loss_weight, text_loss_weight and pose_joint_loss_weight are all 0: "
                             "nothing to train")


@dataclass
class HyGRPOConfig(BaseTrainConfig):
    """HyGRPO: GRPO over text tokens + a clipped surrogate over the Gaussian pose (DESIGN §1)."""

    KIND = "hygrpo"
    max_steps: int = field(default=100, **_help("Rollout iterations to run (each generates one batch and "
        "takes steps_per_generation × num_iterations optimizer steps on it, then syncs the workers)."))  # fmt: skip
    output_dir: str = field(default="runs/hygrpo", **_help("Where checkpoints, logs and the final model go."))
    # ---- sampling (TRL names)
    num_generations: int = field(default=8, **_help("G: completions sampled per prompt."))
    temperature: float = field(default=1.0, **_help("Sampling temperature (logits are divided by it)."))
    top_p: float = field(default=1.0, **_help("Nucleus sampling."))
    max_completion_length: int = field(default=32, **_help("Maximum generated tokens."))
    # ---- loss (TRL names)
    beta: float = field(default=0.04, **_help("KL coefficient (k3 estimator per text token)."))
    epsilon: float = field(default=0.2, **_help("Lower clip range of the token ratio."))
    epsilon_high: Optional[float] = field(default=None, **_help("Upper clip range (default: epsilon)."))
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = field(default="grpo", **_help("Token aggregation."))
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", **_help(
        "Advantage normalisation: by group std, batch std, or centring only."))  # fmt: skip
    steps_per_generation: int = field(default=1, **_help("Optimizer steps per generated batch (TRL's "
        "name): one rollout batch holds per_device_train_batch_size × gradient_accumulation_steps × "
        "steps_per_generation samples per rank, consumed in that many consecutive optimizer steps, so "
        "every step after the first sees a moved policy and the clipped surrogates act."))  # fmt: skip
    num_iterations: int = field(default=1, **_help("Passes over each generated batch (TRL's μ); "
        "each pass takes steps_per_generation optimizer steps against the stored sampling log-probs."))  # fmt: skip
    # ---- pose
    pose_epsilon: float = field(default=0.2, **_help("Clip range of the pose ratio."))
    pose_ratio: Literal["per_dim", "joint"] = field(default="per_dim", **_help(
        "Ratio per pose dimension (clipped like tokens) or one joint ratio."))  # fmt: skip
    pose_beta: Optional[float] = field(default=None, **_help("KL coefficient on the pose (closed form; default beta)."))
    pose_coef: float = field(default=1.0, **_help("Weight of the pose term."))
    pose_kl: Literal["gaussian", "mean_l2"] = field(default="mean_l2", **_help(
        "Pose KL form: (μ-μ_ref)²/(2·pose_kl_scale²), which does not depend on σ (default), or "
        "the closed-form Gaussian KL, whose mean term grows as 1/σ_ref² and so pins μ to the "
        "reference when σ is small (the study: +7 mm test MPJPE at β_p 0.04, σ 0.05)."))  # fmt: skip
    pose_kl_scale: float = field(default=0.1, **_help("Scale s of pose_kl: mean_l2 (pose units)."))
    discrete_only: bool = field(default=False, **_help("Turn the pose term off (text-only GRPO ablation): rewards score the head's mean μ and only text tokens are updated."))
    # ---- pose exploration and credit
    num_pose_samples: Optional[int] = field(default=None, **_help("K: poses sampled from each "
        "text rollout's Gaussian (a nested pose group; 1 is the paper). The language model runs "
        "once per text rollout, so K multiplies pose samples at almost no cost; text rewards use "
        "the mean over the K siblings. Default: 16 (1 with discrete_only) — on the tiny "
        "text→pose study K 16 gave test MPJPE −10.9 % against −7.8 % for K 1, at 0.96× the step time "
        "(docs/results/hygrpo_study.md, benchmarks/pose_samples.py)."))  # fmt: skip
    pose_advantage_group: Literal["prompt", "siblings"] = field(default="prompt", **_help(
        "Pose advantages normalised over all V×K pose samples of a prompt, or over the K "
        "siblings of one text rollout (needs num_pose_samples >= 2)."))  # fmt: skip
    per_joint_credit: Optional[bool] = field(default=None, **_help("Credit each joint rotation "
        "with the pose-reward terms of the joints it moves (its kinematic subtree) instead of the "
        "whole reward: unbiased, less variance. Needs a pose reward that returns per-joint terms "
        "(joint kinds mean_exp / neg_mean or reprojection kind neg_mean, with per_joint: true, "
        "or your own returning PerJointRewards) and pose_ratio per_dim. Default: on when a pose "
        "reward entry is the built-in joint or reprojection reward with per_joint: true (the "
        "study: pose-gradient cosine 0.23 → 0.35) and counterfactual_credit is off, otherwise "
        "off."))  # fmt: skip
    counterfactual_credit: bool = field(default=False, **_help("Credit each joint rotation with "
        "the pose reward minus the pose reward of the same sample with that rotation at the "
        "Gaussian's mean: unbiased, and it also removes what the other rotations' noise did, "
        "which per-joint credit keeps. Works with any pose reward (no per-joint terms needed); "
        "scores R extra rows per pose sample (R = 22 rotations) on the learner. Needs pose_ratio "
        "per_dim; excludes per_joint_credit and rewards_on_workers."))  # fmt: skip
    pose_sigma: Literal["learned", "fixed", "state_independent"] = field(default="fixed", **_help(
        "Exploration σ during RL: one fixed σ (no σ gradient; default), the head's learned σ(h), "
        "or one learned σ per dimension shared by all inputs. In the study the SFT head's σ(h) "
        "explored so widely that HyGRPO gained 4 % MPJPE instead of 11 % with σ fixed at 0.05."))  # fmt: skip
    pose_sigma_value: Optional[float] = field(default=None, **_help("σ of pose_sigma: fixed; "
        "initial σ of state_independent (default 0.05 for both)."))  # fmt: skip
    pose_sigma_min: Optional[float] = field(default=None, **_help("Hard lower clamp of σ during RL."))
    pose_sigma_max: Optional[float] = field(default=None, **_help("Hard upper clamp of σ during RL."))
    normalize_rewards: bool = field(default=False, **_help("Normalise each reward within its "
        "group (z-score) before the weighted sum, so weights, not reward scales, decide how "
        "much each counts (each reward's within-group std is logged either way)."))  # fmt: skip
    pose_grad_check_samples: int = field(default=0, **_help("Diagnostic: every logging step draw "
        "this many extra poses per text rollout and log grad/pose_cosine, the cosine between the "
        "pose-gradient estimate the loss uses and a large-sample one (0: off)."))  # fmt: skip
    # ---- rollout workers
    num_rollout_workers: int = field(default=2, **_help("Ray actors that sample rollouts (0: sample "
        "in-process on rank 0 with the learner's weights, no Ray)."))  # fmt: skip
    ray_address: Optional[str] = field(default=None, **_help("Join this Ray cluster ('host:port', "
        "'ray://host:port' or 'auto'); default: $RAY_ADDRESS if set (ray job submit sets it), else a "
        "new local cluster bound to 127.0.0.1."))  # fmt: skip
    worker_num_cpus: float = field(default=1.0, **_help("CPUs per rollout worker."))
    worker_num_gpus: float = field(default=0.0, **_help("GPUs per rollout worker."))
    max_staleness: int = field(default=0, **_help("Bounded staleness N: rollouts for a step are generated "
        "with weights at most N versions old (a version per step), so sampling can run ahead of the "
        "learner by N steps. 0: strictly on-policy."))  # fmt: skip
    weight_sync_bucket_mb: float = field(default=64.0, **_help("Bucket size for weight sync to workers."))
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD", "none"] = field(
        default="PACK", **_help("How the workers' placement group puts them on nodes: PACK (few "
        "nodes), SPREAD (across nodes), the STRICT_ forms, or none (no placement group)."))  # fmt: skip
    worker_resources: Optional[Union[dict, str]] = field(default=None, **_help("Custom Ray resources "
        "each worker needs, e.g. {\"rollout_node\": 1} to keep workers on nodes started with "
        "--resources '{\"rollout_node\": 8}' (JSON on the command line)."))  # fmt: skip
    lora_sync: Literal["merged", "adapter"] = field(default="merged", **_help("With use_peft: send "
        "merged LoRA layers to the workers, or only the adapter (A/B, projector, pose head) that "
        "workers apply on top of the base they keep."))  # fmt: skip
    lora_adapter_merge: bool = field(default=True, **_help("With lora_sync: adapter, workers fold "
        "each received adapter into a kept copy of their base weights (W = W0 + s·BA, merged-speed "
        "sampling, one extra copy of the adapted weights); false: sample through the unmerged "
        "adapter (no extra memory, slower)."))  # fmt: skip
    verify_weight_sync: bool = field(default=True, **_help("After every sync each worker reports a "
        "64-bit hash of every tensor it holds, checked against the learner's; a mismatch stops the run "
        "naming the worker and the tensor."))  # fmt: skip
    rewards_on_workers: bool = field(default=False, **_help("Compute rewards on the rollout workers, "
        "next to their rollouts (a heavy reward model then scales with the pool)."))  # fmt: skip
    rollout_timeout_s: Optional[float] = field(default=None, **_help("Fail the step with a clear "
        "error if its rollouts take longer than this (a hung worker), instead of waiting forever."))  # fmt: skip
    worker_max_restarts: int = field(default=3, **_help("Times one step's shard may lose its worker "
        "before the step fails (dead workers are replaced and their shard re-sampled)."))  # fmt: skip
    # ---- rewards
    # Typed str for the command line (a JSON list); a YAML recipe gives the list itself.
    rewards: str = field(default=json.dumps(DEFAULT_REWARDS), **_help(
        "List of {func, weight, target, name, on_error, kwargs}; JSON on the command line."))
    log_completions: bool = field(default=True, **_help("Write a completions table (jsonl) every logging step."))

    @property
    def samples_per_rank(self) -> int:
        """Samples of one rollout batch that each learner rank trains on."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.steps_per_generation

    @property
    def optimizer_steps_per_step(self) -> int:
        return self.steps_per_generation * self.num_iterations

    @property
    def on_policy_single_step(self) -> bool:
        """One optimizer step per batch, sampled by the current weights: the sampling policy's
        log-probs are the learner's own first pass, no separate scoring pass is needed."""
        return self.optimizer_steps_per_step == 1 and self.max_staleness == 0

    def loss_settings(self) -> HyGRPOLossSettings:
        return HyGRPOLossSettings(
            epsilon=self.epsilon, epsilon_high=self.epsilon_high, pose_epsilon=self.pose_epsilon,
            pose_ratio=self.pose_ratio, loss_type=self.loss_type, beta=self.beta,
            pose_beta=self.pose_beta, pose_coef=self.pose_coef, discrete_only=self.discrete_only,
            max_completion_length=self.max_completion_length, pose_kl=self.pose_kl,
            pose_kl_scale=self.pose_kl_scale,
        )  # fmt: skip

    def sigma_settings(self) -> SigmaSettings:
        return SigmaSettings(self.pose_sigma, self.pose_sigma_value, self.pose_sigma_min,
                             self.pose_sigma_max)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rewards, str):
            try:
                self.rewards = json.loads(self.rewards)
            except json.JSONDecodeError as err:
                raise ValueError(f"rewards: not valid JSON ({err})") from None
        if not isinstance(self.rewards, list) or not self.rewards:
            raise ValueError(f"rewards must be a non-empty list of reward entries, got {self.rewards!r}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 for group-relative advantages, got {self.num_generations}")
        if self.steps_per_generation < 1:
            raise ValueError(f"steps_per_generation must be >= 1, got {self.steps_per_generation}")
        if self.samples_per_rank % self.num_generations:
            raise ValueError(
                "per_device_train_batch_size × gradient_accumulation_steps × steps_per_generation "
                f"({self.per_device_train_batch_size} × {self.gradient_accumulation_steps} × "
                f"{self.steps_per_generation}) must be a multiple of num_generations "
                f"({self.num_generations}) so that every group is whole"
            )
        if self.pose_sigma_value is None and self.pose_sigma in ("fixed", "state_independent"):
            self.pose_sigma_value = DEFAULT_POSE_SIGMA
        if self.num_pose_samples is None:
            self.num_pose_samples = 1 if self.discrete_only else DEFAULT_POSE_SAMPLES
        if self.per_joint_credit is None:
            self.per_joint_credit = (self.pose_ratio == "per_dim" and not self.discrete_only
                                     and not self.counterfactual_credit
                                     and _asks_per_joint_terms(self.rewards))
        self.loss_settings()  # the loss validates its own coefficients (epsilons, betas, ...)
        self.sigma_settings()  # and the head its σ settings
        if self.num_pose_samples < 1:
            raise ValueError(f"num_pose_samples must be >= 1, got {self.num_pose_samples}")
        if self.pose_advantage_group == "siblings" and self.num_pose_samples < 2:
            raise ValueError("pose_advantage_group='siblings' needs num_pose_samples >= 2 (a "
                             "group of one sample has no baseline)")
        if self.per_joint_credit and self.pose_ratio != "per_dim":
            raise ValueError("per_joint_credit needs pose_ratio='per_dim' (a joint ratio has one "
                             "advantage per pose)")
        if self.counterfactual_credit:
            clash = [name for name, on in (("per_joint_credit", self.per_joint_credit),
                                           ("rewards_on_workers", self.rewards_on_workers),
                                           ("discrete_only", self.discrete_only)) if on]
            if self.pose_ratio != "per_dim":
                clash.append(f"pose_ratio={self.pose_ratio!r} (it needs 'per_dim')")
            if clash:
                raise ValueError(f"counterfactual_credit cannot be combined with {', '.join(clash)}: it "
                                 "credits each rotation itself and scores its extra rows on the learner")
        if self.discrete_only and (self.num_pose_samples != 1 or self.per_joint_credit):
            raise ValueError("discrete_only scores μ: num_pose_samples must be 1 and "
                             "per_joint_credit off")
        if self.pose_grad_check_samples < 0 or self.pose_grad_check_samples == 1:
            raise ValueError(f"pose_grad_check_samples must be 0 or >= 2, got {self.pose_grad_check_samples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {self.max_completion_length}")
        if self.num_rollout_workers < 0:
            raise ValueError(f"num_rollout_workers must be >= 0, got {self.num_rollout_workers}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")
        if self.rollout_timeout_s is not None and not self.rollout_timeout_s > 0:
            raise ValueError(f"rollout_timeout_s must be > 0 (or unset), got {self.rollout_timeout_s}")
        if self.worker_max_restarts < 0:
            raise ValueError(f"worker_max_restarts must be >= 0, got {self.worker_max_restarts}")
        if self.lora_sync == "adapter" and not self.use_peft:
            raise ValueError("lora_sync: 'adapter' sends a LoRA adapter; it needs use_peft: true")
        if isinstance(self.worker_resources, str):
            try:
                self.worker_resources = json.loads(self.worker_resources)
            except json.JSONDecodeError as err:
                raise ValueError(f"worker_resources: not valid JSON ({err})") from None
        if self.worker_resources is not None:
            from posrft.rollout.placement import worker_bundle  # checks names and amounts

            if not isinstance(self.worker_resources, dict):
                raise ValueError(f"worker_resources must be a mapping of resource name to amount, "
                                 f"got {self.worker_resources!r}")
            worker_bundle(self.worker_num_cpus, self.worker_num_gpus, self.worker_resources)
        hygrpo_ranges(self)
        if self.discrete_only and all(target_of(r) == "pose" for r in self.rewards):
            raise ValueError("discrete_only=True but every reward targets the pose: nothing to learn")
