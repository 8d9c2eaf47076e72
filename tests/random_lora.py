"""Random LoRA adapters with non-zero B matrices, so each visibly changes a model's output."""

from __future__ import annotations

from pathlib import Path

from tuneloop.learn.job_config import DEFAULT_LORA


def random_lora(
    model_dir: Path,
    out: Path,
    targets: list[str] | None = None,
    seed: int = 0,
    rank: int = 8,
    scale: float = 1.0,
) -> Path:
    """Save a LoRA adapter of `rank` for `model_dir` at `out` (every projection tuneloop trains by default);
    `scale` < 1 shrinks B toward a trained adapter's size (1: strong enough to change most greedy tokens)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    target_modules = targets or DEFAULT_LORA["target_modules"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(out)
    return out
