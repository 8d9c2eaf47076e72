"""Artifact checks before registration (a version never points at a partial or broken adapter), and
exports that other tools load: a PEFT adapter naming its base by its public name, or a merged model."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from tuneloop.errors import BadRequest, Conflict
from tuneloop.model_files import BASE_MODEL_NAME, resolve_model
from tuneloop.registry.versions import Version

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


# The hub ids other tools (PEFT, vLLM, transformers) know our embedded base models by.
PUBLIC_MODEL_NAMES = {BASE_MODEL_NAME: "HuggingFaceTB/SmolLM2-135M-Instruct"}


def public_model_name(base_model: str) -> str:
    """The name to record as an exported adapter's base: the embedded model's hub id, else what the model
    directory's config says it was loaded from, else the directory's name (never a path on this host)."""
    if base_model in PUBLIC_MODEL_NAMES:
        return PUBLIC_MODEL_NAMES[base_model]
    try:
        recorded = json.loads((Path(base_model) / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, str) and recorded and not Path(recorded).is_absolute():
        return recorded
    return Path(base_model).name


def export_version(
    version: Version, out: Path, *, home: Path, base_name: str | None = None, merged: bool = False
) -> Path:
    """Write `version` to the new folder `out`: its PEFT adapter with `base_name` (default: the base model's
    public name) as `base_model_name_or_path`, or with `merged` the base model with the adapter merged in.
    Either way `tuneloop_version.json` keeps its id, system prompt, decoding and lineage."""
    if version.kind != "adapter":
        raise BadRequest(f"version {version.id} is a {version.kind}; only adapter versions are exported")
    if not version.artifact_path:
        raise BadRequest(f"version {version.id} serves the base model with no adapter; nothing to export")
    if version.erased_at is not None:
        # As it may serve no one again (registry.versions), it leaves no copy that could.
        raise Conflict(
            f"version {version.id} was trained on data of a user erased since; it is not exported (it may "
            "carry what it learned of them): export one trained after the erasure"
        )
    source = Path(version.artifact_path)
    if version.artifact_checksums and checksums(source) != version.artifact_checksums:
        raise Conflict(f"adapter files of {version.id} at {source} changed since registration; not exported")
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty; name a new folder", param="out")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside `out` and renamed into place: an interrupted export leaves no half folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if merged:
            _write_merged(source, resolve_model(version.base_model, home), tmp)
        else:
            # The trainer's own model card and pickled arguments name host paths; they stay behind.
            skip = shutil.ignore_patterns("README.md", "training_args.bin", "checkpoint-*")
            shutil.copytree(source, tmp, ignore=skip, dirs_exist_ok=True)
            config = adapter_config(tmp)
            config["base_model_name_or_path"] = base_name or public_model_name(version.base_model)
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        lineage = {
            "id": version.id,
            "base_model": base_name or public_model_name(version.base_model),
            "base_model_hash": version.base_model_hash,
            "snapshot_hash": version.snapshot_hash,
            "system_prompt": version.system_prompt,
            "decoding": version.decoding,
            "parent_id": version.parent_id,
            "merged": merged,
        }
        (tmp / "tuneloop_version.json").write_text(json.dumps(lineage, indent=2) + "\n")
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()  # empty, as checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_merged(adapter: Path, base_dir: Path, out: Path) -> None:
    """The base model with the LoRA deltas folded into its weights, plus its tokenizer, saved to `out`."""
    from peft import PeftModel

    from tuneloop.model_files import load_causal_lm

    model, tokenizer = load_causal_lm(base_dir)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
