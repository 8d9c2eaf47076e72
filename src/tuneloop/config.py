"""Service settings: one pydantic-settings class, read from `TUNELOOP_*` environment variables."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tuneloop.errors import BadRequest


class Settings(BaseSettings):
    """Everything the service reads from its environment. Build one and pass it to `create_app`."""

    model_config = SettingsConfigDict(env_prefix="TUNELOOP_", extra="forbid")

    home: Path = Field(
        default=Path.home() / ".tuneloop",
        description="Directory for the SQLite file, model cache, snapshots and artifacts.",
    )
    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default is SQLite at HOME/tuneloop.db. "
        "Use postgresql+psycopg://user:pass@host/db at scale.",
    )
    backend: Literal["embedded", "openai", "none"] = Field(
        default="embedded",
        description="Serving backend: `embedded` (in-process model), `openai` (an OpenAI-compatible upstream "
        "such as vLLM), or `none` (capture API only, for apps that call their own model).",
    )
    model: str = Field(
        default="smollm2-135m-instruct",
        description="Base model: the embedded default, or a Hugging Face model directory.",
    )
    upstream_url: str | None = Field(
        default=None, description="Base URL (ending in /v1) of the upstream server when backend is `openai`."
    )
    upstream_api_key: str = Field(default="none", description="API key sent to the upstream server.")
    upstream_runtime_lora: bool = Field(
        default=True,
        description="Load adapters into the upstream through vLLM's /v1/load_lora_adapter; turn off for "
        "servers without runtime LoRA (llama.cpp, Ollama) and register adapters there yourself.",
    )
    loop_interval: float | None = Field(
        default=None,
        gt=0,
        description="Seconds between loop looks inside `tuneloop serve` (every tenant); unset: run "
        "`tuneloop loop` separately.",
    )
    redaction_key: SecretStr | None = Field(
        default=None,
        description="Secret key of the `hash` redaction mode's HMAC; default: a random key created once "
        "in HOME/redaction.key. Keep it stable, or equal values stop joining across restarts.",
    )
    max_body_bytes: int = Field(default=1_000_000, description="Largest accepted request body, in bytes.")
    max_batch_events: int = Field(default=1000, description="Most feedback events in one batch request.")
    max_text_chars: int = Field(default=100_000, description="Longest accepted string field, in characters.")
    max_queue: int = Field(default=64, description="Generation requests waiting before new ones get 503.")
    max_batch_size: int = Field(
        default=8, description="Most sequences the embedded backend decodes together."
    )

    def hash_key(self) -> bytes:
        """The redaction HMAC key: the setting, else HOME/redaction.key (created with mode 0600 once)."""
        if self.redaction_key is not None:
            return self.redaction_key.get_secret_value().encode()
        path = self.home / "redaction.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    @property
    def database_url(self) -> str:
        """The store URL in force: `db_url`, or the SQLite file under `home`."""
        return self.db_url or f"sqlite:///{self.home / 'tuneloop.db'}"


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: str | Path, model: type[M], what: str) -> M:
    """A pydantic model from a YAML file; BadRequest names the file and the first bad field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadRequest(f"{what} {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise BadRequest(f"{what} {path}: not valid YAML ({exc})") from exc
    if not isinstance(data or {}, dict):
        raise BadRequest(f"{what} {path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        problems = ["{}: {}".format(".".join(map(str, e["loc"])) or "(top)", e["msg"]) for e in exc.errors()]
        first = ".".join(map(str, exc.errors()[0]["loc"]))
        raise BadRequest(f"{what} {path}: {'; '.join(problems)}", param=first) from exc


def tenant_policy_file(home: Path, tenant_name: str, filename: str) -> Path:
    """Where a tenant's policy file lives: HOME/policies/TENANT/FILENAME."""
    return Path(home) / "policies" / tenant_name / filename
