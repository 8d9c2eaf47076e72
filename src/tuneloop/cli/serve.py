"""`tuneloop serve`: the HTTP service through uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from tuneloop.cli.output import port, positive_int
from tuneloop.config import Settings
from tuneloop.errors import ConfigError
from tuneloop.model_files import check_model
from tuneloop.private_files import tighten

MAX_WORKERS = 64
# A worker whose health-check thread goes unanswered this long is killed and replaced; loading a model or
# a long redaction holds the GIL for seconds, which uvicorn's 5 s default would take for a hang.
WORKER_HEALTHCHECK_SECONDS = 60


def register(commands: Any) -> None:
    p = commands.add_parser(
        "serve",
        help="run the HTTP service (capture API, OpenAI-compatible gateway)",
        epilog="settings come from TUNELOOP_* variables (README, Configuration); "
        "TUNELOOP_LOOP_INTERVAL=SECONDS also runs every tenant's loop inside the server",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this host only)"
    )
    p.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--workers",
        type=workers,
        default=1,
        help="server processes sharing the port, like replicas (default 1); each loads its own model, and "
        "limits and /metrics are per process",
    )
    p.set_defaults(run=cmd_serve)


def workers(text: str) -> int:
    """argparse type for `--workers`: 1 to MAX_WORKERS."""
    value = positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value} workers: give at most {MAX_WORKERS}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloop.serve.app import create_app, make_backend

    settings = Settings()
    _check_free(args.host, args.port)  # before the model loads: uvicorn finds out only after, and exits 3
    if settings.home.is_dir():
        tighten(settings.home)  # a HOME made beforehand (`mkdir -p`, a volume) is world-readable otherwise
    if settings.backend == "embedded":
        check_model(settings.model)
    options = {"host": args.host, "port": args.port, **uvicorn_options(settings)}
    if args.workers == 1:
        uvicorn.run(create_app(settings, freeze_heap=True), **options)
        return 0
    make_backend(settings)  # the settings' errors as this command's, not each worker's (it loads nothing yet)
    _prepare_store(settings)
    return _supervise(
        uvicorn.Config(
            "tuneloop.serve.app:from_environment",
            factory=True,
            workers=args.workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            **options,
        )
    )


def _supervise(config: Any) -> int:
    """Run `config.workers` worker processes on one listening socket under uvicorn's supervisor, which
    replaces a worker that dies or stops answering; 3 (uvicorn's startup failure) when one could not start,
    which `uvicorn.run` would report as success."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    with contextlib.suppress(KeyboardInterrupt):
        supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        print("tuneloop: a server worker failed to start; see the log above", file=sys.stderr)
        return STARTUP_FAILURE
    return 0


def _prepare_store(settings: Settings) -> None:
    """The server secret and the schema, made once here rather than raced for by the workers as they start."""
    from tuneloop.store.repository import Store

    secret = settings.hash_key()
    Store(settings.database_url, busy_timeout=settings.db_busy_timeout, secret=secret).close()


def _check_free(host: str, port: int) -> None:
    """A ConfigError naming the address when nothing can listen on it (taken, or not this machine's)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); stop what holds the port or pass --port"
        ) from None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging, connection limits and timeouts from the settings (uvicorn itself sets no limit)."""
    from tuneloop.serve.heads import bounded_heads

    return {
        "log_level": "info",
        "log_config": json_log_config() if settings.log_format == "json" else text_log_config(),
        # uvicorn's own would log client addresses and raw paths; tuneloop logs the route template alone
        # (monitor/metrics.py).
        "access_log": False,
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "http": bounded_heads(settings.header_timeout, settings.max_header_bytes),
    }


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (+ the request's fields for access lines)."""

    ACCESS_FIELDS = ("method", "route", "http_version", "status")

    def format(self, record: logging.LogRecord) -> str:
        from tuneloop.monitor.metrics import ACCESS_LOG

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Access records carry the request as their format arguments, in this order.
        if record.name == ACCESS_LOG.name and isinstance(record.args, tuple) and len(record.args) == 4:
            entry.update(zip(self.ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def text_log_config() -> dict[str, Any]:
    """uvicorn's own text logging, with tuneloop's access lines (no client address) on stdout."""
    from uvicorn.config import LOGGING_CONFIG

    from tuneloop.monitor.metrics import ACCESS_LOG

    config = copy.deepcopy(LOGGING_CONFIG)
    # Not uvicorn's access formatter: it expects a client address among the record's arguments.
    config["handlers"]["tuneloop_access"] = {**config["handlers"]["access"], "formatter": "default"}
    access = {"handlers": ["tuneloop_access"], "level": "INFO", "propagate": False}
    config["loggers"][ACCESS_LOG.name] = access
    return config


def json_log_config() -> dict[str, Any]:
    """uvicorn's and tuneloop's loggers writing JSON lines to stderr (TUNELOOP_LOG_FORMAT=json)."""
    handler = {"handlers": ["json"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {"uvicorn": handler, "uvicorn.access": handler, "tuneloop": handler},
    }
