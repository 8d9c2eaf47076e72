"""Random LoRA adapters with non-zero B matrices, so each visibly changes a model's output."""

from __future__ import annotations

from pathlib import Path

from tuneloop.learn.job_config import DEFAULT_LORA


def random_lora(model_dir: Path, out: Path, targets: list[str] | None = None, seed: int = 0) -> Path:
    """Save a rank-8 LoRA adapter for `model_dir` at `out` (every projection tuneloop trains by default)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    target_modules = targets or DEFAULT_LORA["target_modules"]
    config = LoraConfig(r=8, lora_alpha=16, target_modules=target_modules, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out
