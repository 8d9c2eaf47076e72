"""The embedded model becomes a plain, trainable safetensors copy; the tiny model shares its vocab."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuneloop.errors import BadRequest
from tuneloop.model_files import (
    BASE_MODEL_NAME,
    TINY_MODEL_NAME,
    ensure_base_model,
    load_causal_lm,
    make_tiny_model,
    model_hash,
    resolve_model,
)


@pytest.mark.slow
def test_base_model_is_saved_without_quantization_marker_and_with_chat_template(models_dir: Path) -> None:
    from transformers import AutoTokenizer

    path = ensure_base_model(models_dir)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user" in text
    assert not list(models_dir.glob(f".{BASE_MODEL_NAME}-*")), "a temp dir was left behind"


def test_second_call_returns_the_cached_copy_instantly(models_dir: Path) -> None:
    import time

    ensure_base_model(models_dir)
    start = time.perf_counter()
    assert ensure_base_model(models_dir) == models_dir / BASE_MODEL_NAME
    assert time.perf_counter() - start < 0.5


def test_tiny_model_shares_the_base_tokenizer_and_is_deterministic(models_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    tiny = make_tiny_model(models_dir)
    config = AutoConfig.from_pretrained(tiny)
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert (
        tokenizer.chat_template == AutoTokenizer.from_pretrained(ensure_base_model(models_dir)).chat_template
    )
    # A second build from the same seed gives the same weights, hence the same hash.
    (tmp_path / BASE_MODEL_NAME).symlink_to(ensure_base_model(models_dir))
    assert model_hash(make_tiny_model(tmp_path)) == model_hash(tiny)


def test_model_hash_is_cached_and_tracks_file_changes(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    first = model_hash(tmp_path)
    assert model_hash(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"abcd")
    assert model_hash(tmp_path) != first


def test_resolve_model_accepts_a_local_directory_and_rejects_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path), tmp_path) == tmp_path
    with pytest.raises(BadRequest, match="TUNELOOP_MODEL"):
        resolve_model(str(tmp_path / "nope"), tmp_path)


def _at_once(script: str, *args: str) -> list[str]:
    """Run `script` in two Python processes at once; their stdouts (both must succeed)."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    return outs


def test_two_processes_making_one_model_at_once_both_get_the_complete_model(
    models_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / BASE_MODEL_NAME).symlink_to(ensure_base_model(models_dir))
    script = """
        import sys
        from tuneloop.model_files import make_tiny_model, model_hash
        print(model_hash(make_tiny_model(sys.argv[1])))
    """
    outs = _at_once(script, str(tmp_path))
    assert outs[0] == outs[1] == model_hash(make_tiny_model(models_dir)) + "\n"
    load_causal_lm(tmp_path / TINY_MODEL_NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".{TINY_MODEL_NAME}.lock",
        BASE_MODEL_NAME,
        TINY_MODEL_NAME,
    ]


def test_a_second_process_waits_for_the_first_conversion_instead_of_repeating_it(tmp_path: Path) -> None:
    script = """
        import sys, time
        from pathlib import Path
        from tuneloop.model_files import _write_atomically

        def write(tmp):
            with open(Path(sys.argv[1]) / "writes.log", "a") as log:
                print("write", file=log)
            time.sleep(1)  # a slow conversion: the other process starts meanwhile
            (tmp / "config.json").write_text("{}")
            (tmp / "model.safetensors").write_bytes(b"weights")

        print(_write_atomically(Path(sys.argv[1]) / "m", write))
    """
    outs = _at_once(script, str(tmp_path))
    assert outs == [f"{tmp_path / 'm'}\n"] * 2
    assert (tmp_path / "writes.log").read_text() == "write\n"
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == b"weights"


def test_a_crashed_half_conversion_is_redone_not_taken_as_finished(models_dir: Path, tmp_path: Path) -> None:
    (tmp_path / BASE_MODEL_NAME).symlink_to(ensure_base_model(models_dir))
    half = tmp_path / TINY_MODEL_NAME
    half.mkdir()
    (half / "config.json").write_text("{}")  # the weights were never written
    (tmp_path / f".{TINY_MODEL_NAME}-crashed").mkdir()
    assert model_hash(make_tiny_model(tmp_path)) == model_hash(make_tiny_model(models_dir))
    assert not list(tmp_path.glob(f".{TINY_MODEL_NAME}-*")), "a crashed writer's folder was left behind"
