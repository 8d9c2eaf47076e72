"""Service settings: one pydantic-settings class, read from `TUNELOOP_*` environment variables."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tuneloop.errors import BadRequest, ConfigError
from tuneloop.private_files import private_dir
from tuneloop.user_files import read_limited


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
    engine: Literal["auto", "llamacpp", "transformers"] = Field(
        default="auto",
        description="What runs the embedded backend's model: `llamacpp` (its GGUF file, several times "
        "faster on a CPU), `transformers` (PyTorch, the trainer's own numerics), or `auto`: llama.cpp when "
        "the model has a GGUF file (the embedded default does; a local model directory needs exactly one "
        "`.gguf` file of the same weights) and llama-cpp-python is installed, else transformers.",
    )
    upstream_url: str | None = Field(
        default=None, description="Base URL (ending in /v1) of the upstream server when backend is `openai`."
    )
    upstream_model: str | None = Field(
        default=None,
        description="The name the upstream serves the base model under (e.g. vLLM's "
        "HuggingFaceTB/SmolLM2-135M-Instruct), when it differs from `model`, the copy tuneloop trains "
        "adapters on; default: `model` unless that is the embedded default, else the upstream's first model.",
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
    loop_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a loop worker's lease on a tenant lasts without a heartbeat (renewed every "
        "third of it): a killed worker's open turn is resumed by another worker this long after it died.",
    )
    train_engine: Literal["process", "local", "torchrun", "accelerate"] = Field(
        default="process",
        description="Where adapter and reward-model jobs train: `process` (one child process, so the loop "
        "holds no trainer and survives a trainer's crash or out-of-memory kill), `local` (in the process "
        "that runs the loop), or `train_processes` DDP processes launched by `torchrun` (CPU or GPU) or "
        "`accelerate` (GPUs).",
    )
    train_processes: int = Field(
        default=1,
        ge=1,
        description="Processes a torchrun/accelerate job launches (one per GPU); each takes the trainer's "
        "per_device_train_batch_size rows a step.",
    )
    train_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="What adapter and reward-model jobs compute on: `auto` (a CUDA GPU when PyTorch sees "
        "one, else the CPU), `cpu` (e.g. where the GPU is busy serving), or `cuda` (refused without one).",
    )
    redaction_key: SecretStr | None = Field(
        default=None,
        description="The server secret: keys the `hash` redaction mode's placeholders, the stored hashes of "
        "identifiers (user, session, rater) and the idempotency digests; default: a random key created once "
        "in HOME/redaction.key (mode 0600). Keep it stable, or equal values stop joining and retried "
        "events stop matching across restarts.",
    )
    max_body_bytes: int = Field(
        default=1_000_000, ge=1, description="Largest accepted request body, in bytes."
    )
    max_batch_events: int = Field(
        default=1000, ge=1, description="Most feedback events in one batch request."
    )
    max_text_chars: int = Field(
        default=100_000, ge=1, description="Longest accepted string field, in characters."
    )
    max_queue: int = Field(
        default=64, ge=1, description="Generation requests waiting before new ones get 503."
    )
    max_batch_size: int = Field(
        default=8, ge=1, description="Most sequences the embedded backend decodes together."
    )
    max_adapters: int = Field(
        default=8,
        ge=1,
        description="LoRA adapters the embedded backend keeps resident; loading one more unloads the least "
        "recently used.",
    )
    max_redact_chars: int = Field(
        default=250_000,
        ge=1,
        description="Most characters of text one request may send through PII redaction (tenants with "
        "redaction on); more get 413. Analysis costs about 40 s of CPU per million characters of prose, up "
        "to six times that for text of one-character words.",
    )
    max_redact_strings: int = Field(
        default=10_000,
        ge=1,
        description="Most strings one request may send through PII redaction; more get 413.",
    )
    public_term_users: int = Field(
        default=10,
        ge=0,
        description="A name the app's system prompts give to this many distinct end users (and to half of "
        "those seen) is the app's own vocabulary (a brand the name recogniser mistakes for a person) and is "
        "no longer redacted; 0 redacts every name.",
    )
    tenant_max_concurrency: int = Field(
        default=64,
        ge=1,
        description="Requests one tenant may have in progress at once; more get 429 with Retry-After (a "
        "busy app has dozens of users waiting on answers at once; the generation queue bounds the rest).",
    )
    tenant_rate_limit: float = Field(
        default=200.0,
        ge=0.001,  # slower, the Retry-After a client is told overflows
        le=1e9,
        description="Requests per second one tenant may send, on average; more get 429 with Retry-After.",
    )
    tenant_rate_burst: int = Field(
        default=400, ge=1, description="Requests one tenant may send at once above its rate."
    )
    db_busy_timeout: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="Seconds a request waits for a database lock or a pooled connection before it gets 503 "
        "with Retry-After (SQLite busy_timeout, PostgreSQL lock_timeout, pool timeout).",
    )
    db_pool_size: int = Field(
        default=16,
        ge=1,
        description="Database connections per process; the server runs at most this many store calls at "
        "once, so none waits on the pool.",
    )
    sqlite_synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description="SQLite durability: `normal` survives a killed process, but a power loss or OS crash "
        "may drop the last acknowledged writes; `full` fsyncs every commit and survives both, at a cost "
        "per write.",
    )
    limit_concurrency: int = Field(
        default=1000,
        ge=1,
        description="Connections and requests `tuneloop serve` handles at once; beyond, uvicorn answers 503.",
    )
    timeout_keep_alive: int = Field(
        default=5, ge=1, description="Seconds `tuneloop serve` keeps an idle HTTP connection open."
    )
    max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        description="Largest request line and headers `tuneloop serve` takes, sent whole or trickled, and "
        "largest chunked-body trailer; a longer one is answered 431 (or cut off) and its connection closed.",
    )
    header_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a connection of `tuneloop serve` may take to send a request line and headers; "
        "a slower one (a client that connects and trickles, or sends nothing) is closed.",
    )
    session_hours: float = Field(
        default=12,
        gt=0,
        le=24 * 366,
        description="Hours a dashboard login lasts; logging out or revoking its API key ends it sooner.",
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Mark the dashboard cookie Secure: `auto` when the request came over HTTPS (or through a "
        "TLS proxy sending `X-Forwarded-Proto: https`), `always`, or `never`.",
    )
    kpi_metrics_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Seconds each process reuses the KPI gauges it computed for /metrics, however often it "
        "is scraped; 0 leaves KPIs out of this process's /metrics (export them from one replica).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`tuneloop serve`'s log lines: `text`, or `json` (one JSON object a line, for log "
        "collectors).",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve the interactive API docs at /docs and /redoc; they load scripts from a CDN, so "
        "they are off unless asked for.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        # `~` from a compose or systemd env file, or a relative path, would otherwise name a folder under
        # whatever directory each process starts in: the CLI and the server would open different stores,
        # and vLLM would get adapter paths it cannot resolve.
        return home.expanduser().absolute()

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # One line per bad setting, named as it is set (TUNELOOP_X), instead of pydantic's traceback.
            raise ConfigError("; ".join(_setting_problem(e) for e in exc.errors())) from None

    def hash_key(self) -> bytes:
        """The server secret (redaction placeholders, identifier hashes, digests): the setting, else
        HOME/redaction.key (created once, mode 0600)."""
        if self.redaction_key is not None:
            key = self.redaction_key.get_secret_value().strip()
            if not key:
                raise ConfigError("TUNELOOP_REDACTION_KEY is empty; set a long random secret or unset it")
            return key.encode()
        path = self.home / KEY_FILE
        try:
            if not path.exists():
                _publish_new_key(path)
            key = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot create or read the server secret {path} ({exc.strerror}); point TUNELOOP_HOME at a "
                "writable folder, or set TUNELOOP_REDACTION_KEY"
            ) from exc
        if not key:
            raise ConfigError(
                f"{path} is empty, so identifiers and `hash` placeholders cannot be keyed; restore the key "
                "from a backup (or delete the file to start a new key, after which old hashes no longer join "
                "new ones)"
            )
        return key.encode()

    @property
    def database_url(self) -> str:
        """The store URL in force: `db_url`, or the SQLite file under `home`."""
        return self.db_url or f"sqlite:///{self.home / 'tuneloop.db'}"


def _setting_problem(error: Any) -> str:
    name = "_".join(str(part) for part in error["loc"]).upper()
    return f"TUNELOOP_{name}: {error['msg']}" if name else error["msg"]


def _publish_new_key(path: Path) -> None:
    """Write a random key to `path` atomically: complete and synced before the name exists, first one wins.

    A crash leaves at most a stray temp file, never an empty key, and of two first starts racing, the one
    that links second reads the winner's key.
    """
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the name exists: never replaces a key already in use
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


M = TypeVar("M", bound=BaseModel)


# A duration a policy may set: a century, where date arithmetic (timedelta) still works.
MAX_DAYS = 36_500.0
MAX_HOURS = MAX_DAYS * 24


class TenantPolicy(BaseModel):
    """A per-tenant policy file (reward, gate, rollout, loop): strict fields, safe defaults. No number is
    infinite or NaN: `.inf` is valid YAML, and a weight or a duration of it poisons what it touches."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    filename: ClassVar[str]


P = TypeVar("P", bound=TenantPolicy)


KEY_FILE = "redaction.key"  # the server secret's file under HOME, when no TUNELOOP_REDACTION_KEY is set
MAX_YAML_BYTES = 1_000_000  # the longest shipped settings file is a few KB
# Values a settings file may hold with every alias written out, and how deep: a YAML alias bomb is a few
# hundred bytes that safe_load keeps small by sharing, but validating or dumping it walks billions of values.
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 64


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: YAML keeps the last one silently, so a
    setting written above its repeat did nothing and nobody was told."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base constructor refuses it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_model(path: str | Path, model: type[M], what: str, shown: str | None = None) -> M:
    """A pydantic model from a YAML file; BadRequest names the file (as `shown`, else its path) and the first
    bad field."""
    path = Path(path)
    label = shown or str(path)
    raw = read_limited(path, MAX_YAML_BYTES, f"{what} {label}")
    try:
        data = read_yaml(raw)
    except ValueError as exc:
        raise BadRequest(f"{what} {label}: {exc}") from None
    if not isinstance(data or {}, dict):
        raise BadRequest(f"{what} {label}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        errors = exc.errors()
        # The first few, each clipped: 30,000 unknown keys made one error line of a megabyte.
        problems = [
            "{}: {}".format(".".join(map(str, e["loc"]))[:80] or "(top)", e["msg"]) for e in errors[:5]
        ]
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        first = ".".join(map(str, errors[0]["loc"]))[:80]
        raise BadRequest(f"{what} {label}: {'; '.join(problems)}{more}", param=first) from exc


def read_yaml(raw: bytes, max_values: int = MAX_YAML_VALUES) -> Any:
    """`raw` as YAML with no key twice in a mapping, at most `max_values` values once aliases are written
    out and MAX_YAML_DEPTH deep; ValueError says what is wrong. Any file a user points at is read so."""
    try:
        data = yaml.load(raw, Loader=_StrictLoader)  # bytes: UTF-8 or UTF-16 by BOM, else a ReaderError
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: an integer past Python's digit limit; RecursionError: thousands of nested brackets.
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__  # PyYAML's messages span lines
        raise ValueError(f"not valid YAML ({detail})") from None
    if not _within_limits(data, max_values):
        raise ValueError(
            f"more than {max_values} values (aliases counted as written out) or nested deeper than "
            f"{MAX_YAML_DEPTH}; write the settings out plainly"
        )
    return data


def _within_limits(data: Any, max_values: int) -> bool:
    """Whether `data` holds at most `max_values` values, each alias counted every time it is used
    (a self-referencing alias never ends), none deeper than MAX_YAML_DEPTH; stops at the first excess."""
    budget = max_values
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > MAX_YAML_DEPTH:
            return False
        if isinstance(item, dict):
            stack += [(child, depth + 1) for pair in item.items() for child in pair]
        elif isinstance(item, list):
            stack += [(child, depth + 1) for child in item]
    return True


def tenant_policy_file(home: Path, tenant_name: str, filename: str) -> Path:
    """Where a tenant's policy file lives: HOME/policies/TENANT/FILENAME."""
    return Path(home) / "policies" / tenant_name / filename


def load_policy_file(path: str | Path, model: type[P], shown: str | None = None) -> P:
    """A policy (a model with a `filename` such as gate_policy.yaml) from a YAML file."""
    return load_yaml_model(path, model, model.filename.removesuffix(".yaml").replace("_", " "), shown)


def tenant_policy(home: Path, tenant_name: str, model: type[P], path: Path | None = None) -> P:
    """The tenant's policy of this kind in force: `path` (which must exist: a typo must not loosen the
    settings to the defaults), else HOME/policies/TENANT/<model.filename>, else the defaults."""
    if path is not None:
        return load_policy_file(path, model)
    path = tenant_policy_file(home, tenant_name, model.filename)
    if not path.exists() and not path.is_symlink():  # a link to nowhere is a file someone meant: read fails
        return model()
    # Named from TUNELOOP_HOME: a tenant's API call may hit this error, and the server's paths are not theirs.
    return load_policy_file(path, model, f"TUNELOOP_HOME/{path.relative_to(home)}")
