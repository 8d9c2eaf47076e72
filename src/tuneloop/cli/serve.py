"""`tuneloop serve`: the HTTP service through uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import socket
from datetime import UTC, datetime
from typing import Any

from tuneloop.cli.output import port
from tuneloop.config import Settings
from tuneloop.errors import ConfigError
from tuneloop.private_files import tighten


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
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloop.serve.app import create_app

    settings = Settings()
    _check_free(args.host, args.port)  # before the model loads: uvicorn finds out only after, and exits 3
    if settings.home.is_dir():
        tighten(settings.home)  # a HOME made beforehand (`mkdir -p`, a volume) is world-readable otherwise
    app = create_app(settings, freeze_heap=True)
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(settings))
    return 0


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


def bounded_heads(seconds: float, max_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing a connection that takes over `seconds` to send its next request
    line and headers (or the rest of a body already answered), or sends a head or trailer over `max_bytes`.

    uvicorn times a connection out only between requests, and any byte that arrives cancels that timer: a
    client that opens connections and sends nothing, or a header line now and then, holds them for good,
    and once `limit_concurrency` are held every tenant's request is answered 503. httptools itself buffers
    a header or trailer of any length. (uvicorn's h11 protocol bounds the size but not the time, and parses
    in Python: a capture request cost 40 % more CPU through it.)
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    too_large = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )

    class HeadTooLarge(Exception):
        pass

    class BoundedHeadProtocol(HttpToolsProtocol):
        deadline: asyncio.TimerHandle | None = None
        awaiting_head = True  # the next bytes from the client belong to a request line or headers
        unparsed = 0  # bytes received while awaiting a head: one trickled over many reads
        parsed = 0  # the current head's request line and headers as parsed: one sent whole
        not_body = 0  # bytes received inside a message since its last body data: chunk lines, trailers

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_deadline()

        def data_received(self, data: bytes) -> None:
            if self.awaiting_head:
                self.unparsed += len(data)
            else:
                self.not_body += len(data)
            super().data_received(data)
            if (self.unparsed if self.awaiting_head else self.not_body) > max_bytes:
                self._refuse_head()

        def on_message_begin(self) -> None:
            self.parsed = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # as sent: ": " and the line's end
            super().on_header(name, value)

        def on_body(self, body: bytes) -> None:
            self.not_body = 0
            super().on_body(body)

        def _count(self, size: int) -> None:
            self.parsed += size
            if self.parsed > max_bytes:
                raise HeadTooLarge  # stops the parser; uvicorn answers through send_400_response

        def send_400_response(self, msg: str) -> None:
            if self.parsed > max_bytes:  # the parser stopped at HeadTooLarge
                self._refuse_head()
            else:
                super().send_400_response(msg)

        def _refuse_head(self) -> None:
            if self.transport.is_closing():
                return
            if self._idle():  # else a 431 would read as the answer to the request still in progress
                self.transport.write(too_large)
            self.transport.close()

        def on_headers_complete(self) -> None:
            self.awaiting_head, self.unparsed, self.not_body = False, 0, 0
            self._stop_deadline()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.awaiting_head = True
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The next head has as long, and so has the rest of a body answered early (a 401 or 413 does
            # not read it): each late byte of it would cancel the keep-alive timer, holding the slot.
            self._start_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_deadline()
            super().connection_lost(exc)

        def _idle(self) -> bool:
            """No request of this connection is being answered or waits to be."""
            return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

        def _start_deadline(self) -> None:
            self._stop_deadline()
            # A pipelined request already read is being answered: its answer starts the deadline again.
            if self._idle() and not self.transport.is_closing():
                self.deadline = self.loop.call_later(seconds, self._deadline_passed)

        def _stop_deadline(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _deadline_passed(self) -> None:
            self.deadline = None
            if self._idle() and not self.transport.is_closing():
                self.transport.close()

    return BoundedHeadProtocol


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
