"""LoRA adapters: DPO on preference pairs and KTO on good/bad labels, with TRL + PEFT.

The base stays frozen; the reference model is the same base with the adapter switched off, and its log-probs
are computed once before training (`precompute_ref_log_probs`) instead of on every step. On a CPU the LM head
scores only the completion tokens, for the reference log-probs as for the steps (`_score_completions_only`),
a DPO pair computes its shared prompt once (`shared_prefix.py`), and CPUs with bf16 units train in bf16
autocast (`job_config.has_bf16_units`); on a GPU (`JobSpec.device`) TRL's own paths run.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.errors import BadRequest
from tuneloop.learn.job_config import JobSpec, lora_config, trainer_config, weights_dtype
from tuneloop.learn.shared_prefix import shared_prefix_pairs
from tuneloop.model_files import load_causal_lm

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
    from trl import DPOConfig, DPOTrainer

    return _train(spec, rows, out_dir, DPOTrainer, DPOConfig, callbacks, resume_from, pairs=True)


def train_kto(
    spec: JobSpec,
    rows: list[dict],
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Train a KTO LoRA adapter on unpaired good/bad completions; save it and return the train metrics."""
    from trl import KTOConfig, KTOTrainer

    labelled = [{**row, "label": bool(row["label"])} for row in rows]
    return _train(spec, labelled, out_dir, KTOTrainer, KTOConfig, callbacks, resume_from)


def _train(
    spec: JobSpec,
    rows: list[dict],
    out_dir: Path,
    trainer_cls: type,
    config_cls: type,
    callbacks: list[TrainerCallback] | None,
    resume_from: str | None,
    pairs: bool = False,
) -> dict[str, Any]:
    """Load the base → build TRL's config and PEFT's LoRA → train with the adapter off as reference → save."""
    from datasets import Dataset

    model, tokenizer = load_causal_lm(spec.base_model, weights_dtype(spec))
    args = trainer_config(spec, config_cls, out_dir / "checkpoints")
    given, rows = len(rows), steps_take(rows, args, spec.seed)
    packing = shared_prefix_pairs(model, spec.device) if pairs else contextlib.nullcontext()
    # The trainer computes the reference log-probs as it is built: they too score only the completions.
    with _score_completions_only(), packing:
        trainer = trainer_cls(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(spec, task_type="CAUSAL_LM"),
            callbacks=callbacks,
        )
        if spec.init_adapter and resume_from is None:
            # Copy the earlier adapter's weights into the fresh LoRA TRL made, rather than handing TRL a
            # loaded PeftModel (which it would also use as the reference): the reference stays the base with
            # the adapter off, so DPO's KL anchor and the gate's drift check measure one distance.
            _load_lora_weights(trainer.model, Path(spec.init_adapter), spec.lora["r"])
        trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(out_dir))
    return {**train_metrics(trainer, n_rows=given), "rows_trained": len(rows)}


def steps_take(rows: list[dict], args: Any, seed: int) -> list[dict]:
    """The rows `args.max_steps` reach: a seeded sample of that many when the steps end within one pass.

    The trainer would draw as many at random from its shuffled pass, but computes every row's reference
    log-probs first: 2,900 rows for a turn's 512 held a job 5 minutes before its first step."""
    if args.max_steps <= 0:
        return rows
    reach = (
        args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    if len(rows) <= reach:
        return rows
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), reach))]


@contextlib.contextmanager
def _score_completions_only() -> Iterator[None]:
    """Let TRL's fused LM head project only the positions it scores (the completions) on a CPU too.

    TRL does that on CUDA/XPU only and elsewhere projects every position, so that a compiler (Neuron's) sees
    one tile shape. Our CPU training compiles nothing, and the prompt and padding positions it would project
    through the 49k-wide head and back are most of a DPO batch. The log-probs are the same either way."""
    from trl.trainer import utils

    original = getattr(utils, "_use_triton", None)
    if original is None:  # a TRL without this switch: leave it as it is
        yield
        return
    utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        utils._use_triton = original


def _load_lora_weights(model: Any, path: Path, rank: int) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from tuneloop.registry.artifacts import adapter_config

    adapter_config(path, rank)
    loaded = set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    if loaded.unexpected_keys:
        raise BadRequest(f"init_adapter {path} targets other modules than this job's LoRA config")


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
