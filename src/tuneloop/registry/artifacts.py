"""Artifact checks before registration: a version never points at a partial or broken adapter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tuneloop.errors import BadRequest

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def checksums(artifact_dir: Path) -> dict[str, str]:
    """SHA-256 of every file in the artifact directory, by relative path."""
    out = {}
    for path in sorted(p for p in artifact_dir.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(artifact_dir))] = digest.hexdigest()
    return out


def adapter_config(artifact_dir: Path, expected_rank: int | None = None) -> dict:
    """The adapter's PEFT config, once both adapter files are there and its rank is `expected_rank`."""
    missing = [name for name in ADAPTER_FILES if not (artifact_dir / name).is_file()]
    if missing:
        raise BadRequest(f"adapter at {artifact_dir} is incomplete: missing {', '.join(missing)}")
    config = json.loads((artifact_dir / "adapter_config.json").read_text())
    if expected_rank is not None and config.get("r") != expected_rank:
        raise BadRequest(
            f"adapter at {artifact_dir} has rank {config.get('r')}; this job trains rank {expected_rank}"
        )
    return config


def validate_adapter(
    artifact_dir: Path, base_model: Path, expected_rank: int | None = None
) -> dict[str, str]:
    """Check a PEFT LoRA adapter loads on `base_model` with the expected rank and non-zero deltas.

    Returns the artifact's checksums; raises BadRequest saying what is wrong otherwise.
    """
    import torch
    from safetensors.torch import load_file

    config = adapter_config(artifact_dir, expected_rank)
    weights = load_file(str(artifact_dir / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    if not lora_b:
        raise BadRequest(f"adapter at {artifact_dir} holds no LoRA weights")
    if all(torch.count_nonzero(t) == 0 for t in lora_b):
        raise BadRequest(f"adapter at {artifact_dir} has all-zero LoRA deltas: it would change nothing")
    _loads_on(artifact_dir, base_model, config)
    return checksums(artifact_dir)


def _loads_on(artifact_dir: Path, base_model: Path, config: dict) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    is_reward = config.get("task_type") == "SEQ_CLS"
    loader = AutoModelForSequenceClassification if is_reward else AutoModelForCausalLM
    kwargs = {"num_labels": 1} if is_reward else {}
    try:
        PeftModel.from_pretrained(loader.from_pretrained(base_model, **kwargs), str(artifact_dir))
    except Exception as exc:  # any load failure means the artifact does not fit the pinned base
        raise BadRequest(f"adapter at {artifact_dir} does not load on {base_model}: {exc}") from exc
