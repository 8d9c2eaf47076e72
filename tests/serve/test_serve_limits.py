"""`tuneloop serve` passes its connection limits to uvicorn: endless or slow headers and idle connections
end."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.live import serve_app
from tests.postgres import free_port
from tuneloop.cli.serve import uvicorn_options
from tuneloop.config import Settings
from tuneloop.demo import start_server
from tuneloop.serve.app import create_app


def test_serve_applies_the_header_limit_from_settings(tmp_path: Path) -> None:
    port = free_port()
    limits = {"TUNELOOP_MAX_HEADER_BYTES": "2048", "TUNELOOP_TIMEOUT_KEEP_ALIVE": "1"}
    (tmp_path / "home").mkdir()
    proc = start_server(tmp_path / "home", port, {"TUNELOOP_BACKEND": "none", **limits})
    try:
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
    assert refused.startswith(b"HTTP/1.1 431")
    assert closed_after < 3


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (reading and dropping what it sent), or None if it stayed."""
    sock.settimeout(seconds)
    started = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    return time.monotonic() - started


def test_a_connection_that_never_finishes_its_head_is_closed_so_it_cannot_hold_a_slot(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, backend="none", header_timeout=1.0, timeout_keep_alive=30)
    with serve_app(create_app(settings), **uvicorn_options(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with (
            socket.create_connection(("127.0.0.1", port)) as silent,
            socket.create_connection(("127.0.0.1", port)) as trickle,
            socket.create_connection(("127.0.0.1", port)) as slow_body,
        ):
            trickle.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            # A head that arrived in time is not cut off while its body or its answer takes longer.
            slow_body.sendall(
                b"POST /v1/interactions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 2\r\n\r\n{"
            )
            time.sleep(0.6)
            trickle.sendall(b"x-pad: a\r\n")  # a byte now and then does not reset the deadline
            time.sleep(0.9)
            slow_body.sendall(b"}")
            assert _closed_within(silent, 5) is not None
            assert _closed_within(trickle, 5) is not None
            slow_body.settimeout(5)
            assert slow_body.recv(65536).startswith(b"HTTP/1.1 401")  # answered: no key was sent
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_pipelined_requests_on_one_connection_are_each_answered(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="none", header_timeout=1.0)
    with serve_app(create_app(settings), **uvicorn_options(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            # The second head arrives with the first: it must neither be timed as an unfinished head nor lost.
            conn.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" * 2)
            conn.settimeout(5)
            answers = b""
            while answers.count(b"HTTP/1.1 200") < 2:
                answers += conn.recv(65536)
            time.sleep(0.5)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")  # still open after both answers
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_serving_process_keeps_its_startup_heap_out_of_full_collections(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="none")
    gc.unfreeze()
    try:
        with serve_app(create_app(settings, freeze_heap=True)) as url:
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test process's own heap goes back under the collector


def _protocol_test_app() -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict:
        await asyncio.sleep(1.5)  # longer than the head deadline below
        return {"ok": True}

    @app.post("/read")
    async def read(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.post("/early")
    async def early() -> JSONResponse:
        return JSONResponse({"error": "answered before the body"}, status_code=401)  # never reads it

    return app


def _limits(tmp_path: Path) -> dict:
    return uvicorn_options(Settings(home=tmp_path, header_timeout=1.0, max_header_bytes=4096))


def test_a_pipelined_request_is_answered_however_long_it_takes(tmp_path: Path) -> None:
    with (
        serve_app(_protocol_test_app(), **_limits(tmp_path)) as url,
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as conn,
    ):
        conn.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n" * 2)
        conn.settimeout(10)
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 2 and (chunk := conn.recv(65536)):
            answers += chunk
    assert answers.count(b"HTTP/1.1 200") == 2  # the second ran past the head deadline, still answered


def test_a_body_sent_after_its_request_was_answered_does_not_hold_the_connection(tmp_path: Path) -> None:
    with (
        serve_app(_protocol_test_app(), **_limits(tmp_path)) as url,
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as conn,
    ):
        conn.sendall(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        conn.settimeout(5)
        assert conn.recv(65536).startswith(b"HTTP/1.1 401")
        with contextlib.suppress(OSError):  # the server may have closed already
            conn.sendall(b"a")
        assert _closed_within(conn, 5) is not None


def test_a_head_over_the_limit_is_refused_whether_sent_whole_or_trickled(tmp_path: Path) -> None:
    with serve_app(_protocol_test_app(), **_limits(tmp_path)) as url:
        port = int(url.rsplit(":", 1)[1])
        whole = b"GET /slow HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 8000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(whole)
            conn.settimeout(5)
            assert conn.recv(65536).startswith(b"HTTP/1.1 431")
        with socket.create_connection(("127.0.0.1", port)) as conn:
            # Behind a request still being answered, a 431 would read as its answer: the connection ends.
            conn.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n" + whole)
            conn.settimeout(5)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            assert b"431" not in received


def test_an_endless_trailer_ends_its_connection(tmp_path: Path) -> None:
    with serve_app(_protocol_test_app(), **_limits(tmp_path)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"POST /read HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            conn.sendall(b"5\r\nhello\r\n0\r\nx-trailer: ")
            with contextlib.suppress(OSError):  # httptools would buffer it whole, without end
                for _ in range(40):
                    conn.sendall(b"a" * 1000)
                    time.sleep(0.01)
            assert _closed_within(conn, 5) is not None
        with socket.create_connection(("127.0.0.1", port)) as conn:  # a small trailer is read as ever
            conn.sendall(
                b"POST /read HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"
            )
            conn.settimeout(5)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
