"""``SkeletonConfig``: one SkeletonLLM training stage (DESIGN §1, SkeletonLLM curriculum).

The four stages share one learner (:func:`posrft.skeleton.train.run_skeleton`) and differ in
the questions asked and in which parts train:

==========  ===========================================  ==============================
stage       questions                                    default ``train_parts``
==========  ===========================================  ==============================
warmup      multiple choice among ``num_choices`` seen     renderer+projector+lora
discft      YES/NO "Is the action '<label>'?" (hard neg.)  renderer+projector+lora
crdistill   teacher rationale ending "Label: x"            renderer+projector+lora
refine      multiple choice (+ captions)                   projector+lora
==========  ===========================================  ==============================

The paper's warm-up trains the renderer alone in front of a pretrained MLLM whose projector was
aligned on image-text pairs. Offline there is no such alignment: the projector of ``posrft model
init-pretrained`` (the recipes' start, ``runs/smol-dino``: DINOv2-small + SmolLM2-135M) is new,
and the tiny model (``init-tiny``) is random throughout; on the tiny model ``renderer+projector``
left the answer loss at 7.3 nats/token (uniform: 7.7) after 150 steps and accuracy at chance.
The default warm-up therefore trains the projector and LoRA too (``train_parts: renderer`` gives
the paper's setting). Stages chain by pointing ``model_name_or_path`` at the previous stage's
``OUTPUT_DIR/final``; the recipes use the ``novel`` zero-shot split (``class_split``) with
``novel/mirror`` as a second test set (``eval_unseen_splits``); the field defaults (``16/4``)
keep the preset split of the tiny-model results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Optional

from posrft.body.formats import list_formats
from posrft.data.action_classes import zero_shot_split
from posrft.train.config import BaseTrainConfig, _help

STAGES = ("warmup", "discft", "crdistill", "refine")
TRAIN_PARTS = ("renderer", "renderer+projector", "renderer+projector+lora", "projector+lora")
DEFAULT_PARTS = {
    "warmup": "renderer+projector+lora",
    "discft": "renderer+projector+lora",
    "crdistill": "renderer+projector+lora",
    "refine": "projector+lora",
}


def parse_parts(value: str) -> frozenset[str]:
    """``"renderer+projector"`` -> ``{"renderer", "projector"}``; errors name ``train_parts``."""
    if value not in TRAIN_PARTS:
        raise ValueError(f"train_parts must be one of {list(TRAIN_PARTS)}, got {value!r}")
    return frozenset(value.split("+"))


@dataclass
class SkeletonConfig(BaseTrainConfig):
    """A SkeletonLLM stage: DrAction renderer -> T' frames -> LLaVA, trained on action questions."""

    KIND = "skeleton"
    learning_rate: float = field(default=1e-3, **_help("AdamW learning rate of the projector and LoRA."))
    output_dir: str = field(default="runs/skeleton/warmup", **_help("Where checkpoints, logs and the final model go."))
    dataset_path: str = field(default="", **_help("Action DatasetDict folder (posrft.data.actions."
        "save_action_dataset); empty: build it in memory from clips_per_class / data_seed."))  # fmt: skip
    dataset_eval_split: str = field(default="test", **_help("Split evaluated at the end (eval_at_end)."))
    stage: Literal["warmup", "discft", "crdistill", "refine"] = field(default="warmup", **_help(
        "Curriculum stage: warmup | discft | crdistill | refine (decides the questions)."))  # fmt: skip
    train_parts: Optional[str] = field(default=None, **_help("What trains: renderer | "
        "renderer+projector | renderer+projector+lora | projector+lora (default: per stage)."))  # fmt: skip
    # ---- renderer
    skeleton_format: str = field(default="smpl24", **_help("Skeleton format of the training clips."))
    cross_format: Optional[str] = field(default="ntu25", **_help("Second format for the cross-format "
        "test (clips of the same classes); null: none."))  # fmt: skip
    num_render_frames: int = field(default=6, **_help("T': frames rendered per clip, each one "
        "<image> in the prompt (DESIGN default 12; 6 keeps CPU runs short)."))  # fmt: skip
    render_size: Optional[int] = field(default=None, **_help("Rendered image side in pixels "
        "(default: the vision tower's input size; otherwise resized differentiably)."))  # fmt: skip
    samples_per_bone: int = field(default=4, **_help("Gaussian samples along every bone."))
    renderer_nfm: bool = field(default=True, **_help("Use the neural feature modulator (GRU over time)."))
    renderer_learnable: bool = field(default=True, **_help("False: the fixed-renderer baseline "
        "(renderer never trains, whatever train_parts says)."))  # fmt: skip
    renderer_learning_rate: float = field(default=5e-2, **_help("AdamW learning rate of the renderer "
        "(measured: 1e-2 leaves a 4-clip overfit at the blind optimum after 200 steps, 5e-2 fits "
        "it in 50)."))  # fmt: skip
    # ---- how the MLLM reads the frames
    vision_size: Optional[int] = field(default=None, **_help("Pixels per side given to the vision "
        "tower (default: its processor's crop size; DINOv2 at 112 px costs a third of 224 px per "
        "step, benchmarks/skeleton_step.py). A previous stage's setting is kept unless this is set."))  # fmt: skip
    token_pool: Optional[int] = field(default=None, **_help("Average p×p image tokens of a frame "
        "into one after the projector (default 1; a previous stage's setting is kept unless set)."))  # fmt: skip
    image_token_norm: Optional[float] = field(default=None, **_help("Pin every image token the LM "
        "reads to this L2 norm (posrft.policy.image_tokens). Unpinned, the fresh projector's tokens "
        "grew from norm 3.2 to 1.1e4 in the pretrained table's 150-step warm-up; pinned at 3.2 the "
        "warm-up scored no better on val (docs/pretrained.md). A previous stage's setting is kept "
        "unless set."))  # fmt: skip
    standardize_image_tokens: bool = field(default=False, **_help("Before the first step, refit the "
        "projector's output layer so that each channel of the frame tokens has zero mean and the text "
        "embeddings' spread over 64 training clips rendered by the start's renderer (skipped if a "
        "previous stage did; posrft.policy.image_tokens). The pretrained warm-up pilot scored no better "
        "with it (docs/pretrained.md)."))  # fmt: skip
    align_projector_steps: int = field(default=0, **_help("Before the first step, train the projector "
        "alone for this many steps so that each training clip's frame tokens, compared with the LM's "
        "input embeddings by cosine, name the words of its class (posrft.skeleton.align; no LM forward, "
        "the tower's outputs computed once). On the pretrained start 200 steps lifted the warm-up's val "
        "seen top-1 from 38.7 to 74.7-82.7 % in two runs (docs/pretrained.md). 0: off; skipped if a previous stage did it."))  # fmt: skip
    align_learning_rate: float = field(default=1e-3, **_help("AdamW learning rate of the projector "
        "alignment (align_projector_steps)."))  # fmt: skip
    lora_layers: Optional[int] = field(default=None, **_help("LoRA only on the top N decoder layers "
        "(default: all)."))  # fmt: skip
    train_lm_head: Optional[bool] = field(default=None, **_help("Train a copy of the LM head next to "
        "LoRA (default: only when it is not tied to the input embeddings, i.e. the tiny model; "
        "SmolLM2's tied head stays frozen)."))  # fmt: skip
    # ---- data and questions
    clips_per_class: int = field(default=24, **_help("Clips per class when building the data in memory."))
    clip_frames: int = field(default=48, **_help("Frames per generated clip."))
    data_seed: int = field(default=0, **_help("Seed of the generated action data."))
    val_fraction: float = field(default=0.1, **_help("Share of subjects in val when building the data."))
    test_fraction: float = field(default=0.2, **_help("Share of subjects in test when building the data."))
    class_split: str = field(default="16/4", **_help("Zero-shot split seen/unseen: '16/4', '12/8', "
        "'novel' (no unseen class mirrors a seen one), 'novel/mirror' or 'random:K:SEED' "
        "(posrft.data.action_classes.zero_shot_split); training uses seen classes only."))  # fmt: skip
    eval_unseen_splits: list[str] = field(default_factory=list, **_help("More zero-shot test sets "
        "with the same seen classes as class_split (e.g. ['novel/mirror'] next to 'novel'), "
        "reported as <name>_top1."))  # fmt: skip
    num_choices: int = field(default=4, **_help("K: options per multiple-choice question (true one included)."))
    caption_fraction: float = field(default=0.0, **_help("Fraction of warmup/refine questions that "
        "ask for the class description (captioning) instead of multiple choice."))  # fmt: skip
    naming_fraction: float = field(default=0.0, **_help("Fraction of warmup/refine questions that "
        "ask for the class name with no options (cannot be solved by copying an option)."))  # fmt: skip
    negative_source: Literal["description", "confusion"] = field(default="description", **_help(
        "discft hard negatives: most similar classes by description (MiniLM) or by the "
        "confusion matrix of the current model on the training clips."))  # fmt: skip
    negative_topk: int = field(default=3, **_help("discft: negatives drawn from the K most similar classes."))
    positive_fraction: float = field(default=0.5, **_help("discft: fraction of YES questions."))
    teacher: str = field(default=json.dumps({"kind": "kinematic"}), **_help("crdistill teacher spec "
        "(posrft.skeleton.teachers.make_teacher): kind kinematic | hf | openai; JSON on the command line."))  # fmt: skip
    rationale_cache: Optional[str] = field(default=None, **_help("crdistill: jsonl cache of teacher "
        "rationales (default OUTPUT_DIR/rationales.jsonl)."))  # fmt: skip
    max_target_tokens: int = field(default=64, **_help("Truncate answers/rationales to this many tokens."))
    eval_at_end: bool = field(default=True, **_help("Evaluate the final model (zero-shot, seen, cross-"
        "format) on dataset_eval_split and write OUTPUT_DIR/final/eval.json."))  # fmt: skip
    eval_captions: bool = field(default=False, **_help("Also evaluate captioning (greedy generation) at the end."))

    def __post_init__(self) -> None:
        if isinstance(self.teacher, dict):  # a YAML recipe gives the mapping itself
            self.teacher = json.dumps(self.teacher)
        super().__post_init__()
        if self.stage not in STAGES:  # Literal is checked by type, this names the choices
            raise ValueError(f"stage must be one of {list(STAGES)}, got {self.stage!r}")
        if self.train_parts is None:
            self.train_parts = DEFAULT_PARTS[self.stage]
        parts = parse_parts(self.train_parts)
        if parts == {"renderer"} and not self.renderer_learnable:
            raise ValueError("train_parts='renderer' with renderer_learnable=False: nothing trains")
        if self.use_peft:
            raise ValueError("use_peft: LoRA is chosen by train_parts (…+lora) in skeleton stages")
        if not self.freeze_vision_tower:
            raise ValueError("freeze_vision_tower: the vision tower stays frozen in SkeletonLLM "
                             "stages (gradients pass through it to the renderer)")
        try:
            spec = json.loads(self.teacher)
        except json.JSONDecodeError as err:
            raise ValueError(f"teacher: not valid JSON ({err})") from None
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ValueError(f"teacher must be a mapping with a 'kind' key, got {self.teacher!r}")
        for name in ("num_render_frames", "samples_per_bone", "clips_per_class", "clip_frames",
                     "negative_topk", "max_target_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_choices < 2:
            raise ValueError(f"num_choices must be >= 2, got {self.num_choices}")
        if self.render_size is not None and self.render_size < 8:
            raise ValueError(f"render_size must be >= 8 pixels, got {self.render_size}")
        for name in ("caption_fraction", "naming_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.caption_fraction + self.naming_fraction > 1.0:
            raise ValueError(f"caption_fraction + naming_fraction = "
                             f"{self.caption_fraction + self.naming_fraction} exceeds 1")
        if not 0.0 < self.positive_fraction < 1.0:
            raise ValueError(f"positive_fraction must be in (0, 1), got {self.positive_fraction}")
        if not self.renderer_learning_rate > 0:
            raise ValueError(f"renderer_learning_rate must be > 0, got {self.renderer_learning_rate}")
        try:
            seen, _ = zero_shot_split(self.class_split)
        except ValueError as err:
            raise ValueError(f"class_split: {err}") from None
        for extra in self.eval_unseen_splits:
            try:
                other, _ = zero_shot_split(extra)
            except ValueError as err:
                raise ValueError(f"eval_unseen_splits: {err}") from None
            if other != seen:
                raise ValueError(f"eval_unseen_splits: {extra!r} has other seen classes than "
                                 f"class_split {self.class_split!r}; a zero-shot test set must "
                                 "share the classes the model was trained on")
        for name in ("vision_size", "token_pool", "lora_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.align_projector_steps < 0:
            raise ValueError(f"align_projector_steps must be >= 0, got {self.align_projector_steps}")
        if not self.align_learning_rate > 0:
            raise ValueError(f"align_learning_rate must be > 0, got {self.align_learning_rate}")
        if self.image_token_norm is not None and not self.image_token_norm > 0:
            raise ValueError(f"image_token_norm must be > 0, got {self.image_token_norm}")
        if not self.dataset_path:  # built in memory: every split must get a subject
            from posrft.data.actions import _split_counts

            try:
                _split_counts(self.clips_per_class, self.val_fraction, self.test_fraction)
            except ValueError as err:
                raise ValueError(f"clips_per_class={self.clips_per_class} (dataset_path is empty, so the "
                                 f"clips are built in memory): {err}") from None  # fmt: skip
        for name in ("skeleton_format", "cross_format"):
            value = getattr(self, name)
            if value is not None and value not in list_formats():
                raise ValueError(f"{name}: unknown skeleton format {value!r}; known: {list_formats()}")
        if self.cross_format is not None and self.cross_format == self.skeleton_format:
            raise ValueError(f"cross_format equals skeleton_format ({self.skeleton_format!r}); "
                             "give another format or null")

    @property
    def parts(self) -> frozenset[str]:
        return parse_parts(self.train_parts or DEFAULT_PARTS[self.stage])

    @property
    def teacher_spec(self) -> dict:
        return json.loads(self.teacher)
