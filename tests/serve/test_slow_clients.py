"""Clients that stall or hang up: mid-body, a 408 that frees the tenant's slot, and no server error; before
a non-streamed answer, the generation stops and gives the model's slots back."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.serve import http as serve_http
from tuneloop.store.repository import Store


@pytest.fixture
def server(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    monkeypatch.setattr(serve_http, "BODY_SECONDS", 1.0)
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a")
    with live_server(settings) as url:
        yield url, key
    store.close()


def _partial_post(url: str, key: str) -> socket.socket:
    """A POST that declares 100 body bytes and sends one."""
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    head = (
        f"POST /v1/interactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    sock.sendall(head.encode())
    return sock


def test_a_stalled_body_gets_408_instead_of_holding_the_tenants_slot(server: tuple[str, str]) -> None:
    url, key = server
    sock = _partial_post(url, key)
    sock.settimeout(10)
    received = b""
    while b"}" not in received.partition(b"\r\n\r\n")[2]:
        received += sock.recv(4096)
    sock.close()
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 408") and "not received within 1 s" in answer


def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    server: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, key = server
    with caplog.at_level(logging.INFO):
        _partial_post(url, key).close()
        body = {"messages": [{"role": "user", "content": "q"}], "response": "a"}
        ok = httpx.post(f"{url}/v1/interactions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 201
    assert "unhandled error" not in caplog.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_client_that_hangs_up_before_its_answer_frees_the_models_slots(
    server: tuple[str, str], path: str, tmp_path: Path
) -> None:
    url, key = server
    headers = {"Authorization": f"Bearer {key}"}
    shape = (
        {"prompt": "Once upon a time"}
        if path == "/v1/completions"
        else {"messages": [{"role": "user", "content": "A story?"}]}
    )
    endless = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens banned: all 8 run to max_tokens
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}{path}",
            json={**shape, "n": 8, "max_tokens": 2000, "logit_bias": endless},
            headers=headers,
            timeout=1.0,
        )
    started = time.monotonic()
    # The same tenant: it gets no slot of the eight until the abandoned choices are stopped.
    after = httpx.post(f"{url}{path}", json={**shape, "max_tokens": 2}, headers=headers, timeout=60)
    assert after.status_code == 200 and time.monotonic() - started < 5
    store = Store(Settings(home=tmp_path / "home").database_url)
    captured = store.for_tenant(store.tenant_by_name("a")).interactions()
    store.close()
    # Captured as a dropped stream is: marked, with what the client was sent (nothing).
    dropped = [i for i in captured if (i["metadata"] or {}).get("disconnected")]
    assert len(dropped) == 1 and dropped[0]["response"] == ""
