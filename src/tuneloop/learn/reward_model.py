"""Bradley–Terry reward models: LoRA + score head on the base with trl.RewardTrainer, and the loader API.

`load_reward_model(dir).score(prompt_messages, completion_text)` works for both kinds of reward artifact:
this one and the fast MiniLM one in `embedding_reward.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tuneloop.errors import BadRequest, NotFound
from tuneloop.learn import embedding_reward
from tuneloop.learn.calibration import CALIBRATION_FILE, calibration_report, train_val_test_split
from tuneloop.learn.job_config import JobSpec, lora_config, trainer_config, weights_dtype
from tuneloop.learn.privacy import DP_EMBEDDING_ONLY, TRAINER_ARGS_KEY
from tuneloop.learn.shared_prefix import shared_prefix_pairs
from tuneloop.model_files import load_tokenizer
from tuneloop.signals.records import completion_text

if TYPE_CHECKING:
    from transformers import TrainerCallback

MIN_REWARD_ROWS = 5


class RewardModel(Protocol):
    """A scalar reward for a completion of a chat prompt; higher is better."""

    temperature: float

    def score(self, prompt_messages: list[dict], completion_text: str) -> float: ...

    def score_batch(self, items: list[tuple[list[dict], str]]) -> list[float]: ...


def train_reward_model(
    spec: JobSpec,
    rows: list[dict],
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Train a LoRA Bradley–Terry reward model; report held-out accuracy and calibration; save the adapter."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    if TRAINER_ARGS_KEY in spec.trainer_args:
        raise BadRequest(DP_EMBEDDING_ONLY, param=TRAINER_ARGS_KEY)
    if len(rows) < MIN_REWARD_ROWS:
        raise BadRequest(
            f"a reward model needs at least {MIN_REWARD_ROWS} pairs, got {len(rows)}", param="rows"
        )
    train, val, test = train_val_test_split(rows, spec.seed)
    # The score head starts random: seeded, the same job trains the same model (the trainer seeds only after).
    set_seed(spec.seed)
    model, tokenizer = load_reward_base(spec.base_model, weights_dtype(spec))
    args = trainer_config(spec, RewardConfig, out_dir / "checkpoints")
    # The score head is new, so it must train and be saved with the adapter.
    lora = lora_config(spec, task_type="SEQ_CLS", modules_to_save=["score"])
    with shared_prefix_pairs(model, spec.device):
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=callbacks,
        )
        # TRL drops each pair longer than max_length, and with none left it fails deep in torch.
        if len(trainer.train_dataset) == 0:
            raise BadRequest(
                f"none of the {len(train)} training pairs fits max_length {args.max_length} tokens (prompt "
                "and answer); TRL's reward trainer drops longer pairs",
                param="max_length",
            )
        trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_model(str(out_dir))

    scorer = LoraRewardModel(trainer.model, tokenizer)
    report = calibration_report(pair_margins(scorer, val), pair_margins(scorer, test))
    (out_dir / CALIBRATION_FILE).write_text(json.dumps({"temperature": report["temperature"]}))
    logs = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        **report,
        "train_pairs": len(train),
        "steps": trainer.state.global_step,
        "first_loss": logs[0] if logs else None,
        "final_loss": logs[-1] if logs else None,
    }


def load_reward_base(base_model: str, dtype: str = "float32") -> tuple[Any, Any]:
    """The base as a 1-label sequence classifier (float32 unless `dtype` says), and its tokenizer with a pad
    token."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, num_labels=1, dtype=getattr(torch, dtype)
    )
    # Sequence classifiers find the last real token through pad_token_id.
    model.config.pad_token_id = tokenizer.pad_token_id
    model.score.float()  # the new head trains with the adapter, so it keeps full precision on a bf16 base
    return model, tokenizer


def pair_margins(scorer: RewardModel, rows: list[dict]) -> list[float]:
    """r(chosen) - r(rejected) for each preference row."""
    chosen = scorer.score_batch([(r["prompt"], completion_text(r["chosen"])) for r in rows])
    rejected = scorer.score_batch([(r["prompt"], completion_text(r["rejected"])) for r in rows])
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


def ordered_right(scorer: RewardModel, rows: list[dict]) -> list[bool]:
    """Which preference rows the reward model orders as the humans did (ties count against it)."""
    return [margin > 0 for margin in pair_margins(scorer, rows)]


class LoraRewardModel:
    """Scores with the base + LoRA + score head, tokenised exactly as trl.RewardTrainer does."""

    def __init__(self, model: Any, tokenizer: Any, temperature: float = 1.0, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.batch_size = batch_size

    def score(self, prompt_messages: list[dict], completion_text: str) -> float:
        """Reward of one completion."""
        return self.score_batch([(prompt_messages, completion_text)])[0]

    def score_batch(self, items: list[tuple[list[dict], str]]) -> list[float]:
        """Rewards of many completions, in batches."""
        import torch

        self.model.eval()
        scores: list[float] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            ids = [
                self.tokenizer.apply_chat_template(
                    [*prompt, {"role": "assistant", "content": text}], tokenize=True, return_dict=True
                )["input_ids"]
                for prompt, text in chunk
            ]
            batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
            batch = batch.to(self.model.device)  # where the trainer left it: a GPU after a GPU job
            with torch.no_grad():
                logits = self.model(**batch).logits
            scores.extend(logits[:, 0].float().tolist())
        return scores


def load_reward_model(artifact_dir: str | Path, base_model: str | None = None) -> RewardModel:
    """Load a reward artifact of either kind; `base_model` overrides the path recorded at training time."""
    artifact = Path(artifact_dir)
    temperature = 1.0
    if (artifact / CALIBRATION_FILE).exists():
        temperature = json.loads((artifact / CALIBRATION_FILE).read_text())["temperature"]
    if (artifact / embedding_reward.HEAD_FILE).exists():
        return embedding_reward.EmbeddingRewardModel.load(artifact, temperature)
    if not (artifact / "adapter_config.json").exists():
        raise NotFound(f"{artifact} holds no reward model — train one with a `reward` job first")
    from peft import PeftModel

    base = base_model or json.loads((artifact / "adapter_config.json").read_text())["base_model_name_or_path"]
    model, tokenizer = load_reward_base(base)
    model = PeftModel.from_pretrained(model, str(artifact))
    return LoraRewardModel(model, tokenizer, temperature)
