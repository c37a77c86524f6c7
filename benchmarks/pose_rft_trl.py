"""Outside check of text-only GRPO: TRL's ``GRPOTrainer`` on the text→pose SFT model.

TRL optimises the language model's tokens only. Its rewards are the text ones posrft uses
(``format``, and ``text_similarity`` to the dataset's answer) through TRL's reward-function
signature. TRL decodes completions with ``skip_special_tokens=True``, which deletes ``<POSE>``
(a special token), so the format reward would see no pose token and score 0 for every sample:
:func:`with_special_tokens` re-decodes TRL's ``completion_ids`` keeping special tokens (minus
EOS and padding) before calling the reward. TRL cannot score the continuous pose — it never sees the
``<POSE>`` head — which is the gap HyGRPO closes. The trained language model gets the SFT
model's pose head back, and ``posrft eval`` scores it like every other row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable


def with_special_tokens(reward: Callable[..., list[float]], tokenizer: Any) -> Callable[..., list[float]]:
    """``reward`` called on completions re-decoded from TRL's ``completion_ids`` with special
    tokens kept (EOS and padding dropped), so ``<POSE>`` is visible to it."""
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}

    def wrapped(completions: list[Any], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        texts = [tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False)
                 for ids in completion_ids]  # fmt: skip
        return reward(completions=texts, **kwargs)

    wrapped.__name__ = getattr(reward, "__name__", "reward")
    return wrapped


def run_trl_text_only(sft_dir: Path, data: Path, out: Path, *, steps: int, rl: dict[str, Any], seed: int,
                      lora_layers: int | None = None) -> Path:
    """Train with TRL for ``steps`` optimizer steps; writes ``out/final`` (a posrft policy
    folder) and ``out/metrics.jsonl`` (TRL's logs, one JSON row per step). ``lora_layers``:
    train a LoRA adapter (r 16) on the top N decoder layers, as posrft's pretrained rows do,
    merged into the saved model."""
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from posrft.policy.checkpoint import atomic_directory
    from rewards.api import completion_text
    from rewards.format import format_reward
    from rewards.text_similarity import TextSimilarityReward

    train = load_from_disk(str(data))["train"]
    train = train.map(lambda r: {"reference_completion": completion_text(r["completion"])})
    train = train.select_columns(["prompt", "reference_completion"])
    text_similarity = TextSimilarityReward()
    text_similarity.__name__ = "text_similarity"  # TRL logs each reward under its __name__
    metrics = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    metrics.unlink(missing_ok=True)

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            with open(metrics, "a") as f:
                f.write(json.dumps({"step": state.global_step, **(logs or {})}) + "\n")

    cfg = GRPOConfig(
        output_dir=str(out / "trainer"), use_cpu=True, report_to="none", save_strategy="no",
        max_steps=steps, logging_steps=1, seed=seed, bf16=False,
        per_device_train_batch_size=rl["per_device_train_batch_size"], gradient_accumulation_steps=1,
        num_generations=rl["num_generations"], max_completion_length=rl["max_completion_length"],
        temperature=rl["temperature"], top_p=1.0, top_k=0, beta=rl["beta"],
        epsilon=rl.get("epsilon", 0.2), learning_rate=rl["learning_rate"], loss_type="grpo",
        scale_rewards="group", lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        log_completions=False, dataloader_num_workers=0, disable_dropout=True,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(sft_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(sft_dir))
    rewards = [with_special_tokens(format_reward, tokenizer), text_similarity]
    peft_config = None
    if lora_layers is not None:
        from peft import LoraConfig

        n = model.config.num_hidden_layers
        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                 "gate_proj", "up_proj", "down_proj"], layers_to_transform=list(range(n - lora_layers, n)))  # fmt: skip
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=cfg, peft_config=peft_config,
                          train_dataset=train, processing_class=tokenizer, callbacks=[JsonlLog()])  # fmt: skip
    trainer.train()
    trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    with atomic_directory(out / "final") as tmp:
        trained.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in ("pose_head.safetensors", "posrft_config.json", "generation_config.json"):
            if (sft_dir / name).is_file():
                shutil.copy2(sft_dir / name, tmp / name)
    return out / "final"
