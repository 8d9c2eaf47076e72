"""`tuneloop serve`: the HTTP service through uvicorn."""

from __future__ import annotations

import argparse
import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

from tuneloop.config import Settings


def register(commands: Any) -> None:
    p = commands.add_parser("serve", help="run the HTTP service (capture API, OpenAI-compatible gateway)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloop.serve.app import create_app

    settings = Settings()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, **uvicorn_options(settings))
    return 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging, connection limits and timeouts from the settings (uvicorn itself sets no limit)."""
    return {
        "log_level": "info",
        "log_config": json_log_config() if settings.log_format == "json" else text_log_config(),
        "access_log": False,  # tuneloop logs requests by route template (monitor/metrics.py)
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive,
        # h11, not httptools even where installed: only h11 bounds a request head that never ends.
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (+ the request's fields for access lines)."""

    ACCESS_FIELDS = ("client", "method", "route", "http_version", "status")

    def format(self, record: logging.LogRecord) -> str:
        from tuneloop.monitor.metrics import ACCESS_LOG

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Access records carry the request as their format arguments, in this order.
        if record.name == ACCESS_LOG.name and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(self.ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def text_log_config() -> dict[str, Any]:
    """uvicorn's own text logging, with tuneloop's access lines through uvicorn's access formatter."""
    from uvicorn.config import LOGGING_CONFIG

    from tuneloop.monitor.metrics import ACCESS_LOG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][ACCESS_LOG.name] = {"handlers": ["access"], "level": "INFO", "propagate": False}
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
