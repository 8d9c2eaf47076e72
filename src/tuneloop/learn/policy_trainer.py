"""Policy adapters: DPO on preference pairs and KTO on good/bad labels, with TRL + PEFT LoRA.

The base stays frozen; the reference model is the same base with the adapter switched off, and its log-probs
are computed once before training (`precompute_ref_log_probs`) instead of on every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.learn.jobs import JobSpec, trainer_config

if TYPE_CHECKING:
    from transformers import TrainerCallback


def train_dpo(
    spec: JobSpec,
    rows: list[dict],
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Train a DPO LoRA adapter on preference pairs; save it to `out_dir` and return the train metrics."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_policy_base(spec.base_model)
    dataset = Dataset.from_list(rows)
    args = trainer_config(spec, DPOConfig, out_dir / "checkpoints")
    lora = LoraConfig(**{**spec.lora, "task_type": "CAUSAL_LM"})
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(out_dir))
    return train_metrics(trainer, n_rows=len(rows))


def train_kto(
    spec: JobSpec,
    rows: list[dict],
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Train a KTO LoRA adapter on unpaired good/bad completions; save it and return the train metrics."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import KTOConfig, KTOTrainer

    model, tokenizer = load_policy_base(spec.base_model)
    dataset = Dataset.from_list([{**row, "label": bool(row["label"])} for row in rows])
    args = trainer_config(spec, KTOConfig, out_dir / "checkpoints")
    lora = LoraConfig(**{**spec.lora, "task_type": "CAUSAL_LM"})
    trainer = KTOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(out_dir))
    return train_metrics(trainer, n_rows=len(rows))


def load_policy_base(base_model: str) -> tuple[Any, Any]:
    """The base causal LM in float32 (CPU training) and its tokenizer, with a pad token set."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    return model, tokenizer


def train_metrics(trainer: Any, n_rows: int) -> dict[str, Any]:
    """First and final logged loss plus TRL's last logged metrics (rewards, margins, accuracies)."""
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    summary = next((e for e in reversed(trainer.state.log_history) if "train_loss" in e), {})
    metrics: dict[str, Any] = {
        k: v for k, v in (logs[-1] if logs else {}).items() if isinstance(v, int | float)
    }
    metrics.pop("loss", None)
    metrics.update(
        rows=n_rows,
        steps=trainer.state.global_step,
        first_loss=logs[0]["loss"] if logs else None,
        final_loss=logs[-1]["loss"] if logs else None,
        losses=[entry["loss"] for entry in logs],
        train_loss=summary.get("train_loss"),
        train_runtime_s=summary.get("train_runtime"),
    )
    return metrics
