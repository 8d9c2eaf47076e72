"""`tuneloop serve` passes its connection limits to uvicorn: endless headers and idle connections end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.postgres import free_port


def test_serve_applies_the_header_limit_from_settings(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TUNELOOP_HOME": str(tmp_path / "home"),
        "TUNELOOP_BACKEND": "none",
        "TUNELOOP_MAX_HEADER_BYTES": "2048",
        "TUNELOOP_TIMEOUT_KEEP_ALIVE": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneloop", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        small = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"x-pad": "a" * 1000})
        with socket.create_connection(("127.0.0.1", port)) as trickle:
            # A header that never ends, as a slow client sends it: cut off once it passes the limit.
            trickle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 4000)
            trickle.settimeout(5)
            refused = trickle.recv(65536)
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            idle.settimeout(5)
            started = time.monotonic()
            while idle.recv(65536):  # the answer, then the server closes the idle connection
                pass
            closed_after = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert small.status_code == 200
    assert refused.startswith(b"HTTP/1.1 400")
    assert closed_after < 3
