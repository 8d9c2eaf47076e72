"""A real uvicorn server on a free loopback port, in a thread, for tests that speak real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.postgres import free_port
from tuneloop.config import Settings
from tuneloop.serve.app import create_app


@contextmanager
def serve_app(app: FastAPI, **config: Any) -> Iterator[str]:
    """Serve `app` until the block ends (with these uvicorn `config` options); yields the base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, **{"log_level": "warning", **config})
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """Serve `create_app(settings)` until the block ends; yields the base URL."""
    with serve_app(create_app(settings)) as url:
        yield url
