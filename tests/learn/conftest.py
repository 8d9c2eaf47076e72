"""Learn fixtures: one tiny random-weight Llama per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with SmolLM2's tokenizer and chat template, made once per test session."""
    from tuneloop.model_files import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models"))
