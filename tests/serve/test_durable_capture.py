"""A completion the model finished is never turned into an error by the store, and its interaction id
comes to exist: captured with retries, else spooled under TUNELOOP_HOME and replayed by the server."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.store.repository import Store

ASK = {"model": "tuneloop", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


def _stream_id(http: httpx.Client) -> str:
    with http.stream("POST", "/v1/chat/completions", json={**ASK, "stream": True}) as resp:
        assert resp.status_code == 200
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return json.loads(lines[0][6:])["id"]


@pytest.mark.parametrize("stream", [False, True])
def test_completion_survives_a_locked_store_and_its_id_exists_once_the_store_is_back(
    tiny_model: Path, tmp_path: Path, stream: bool
) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), db_busy_timeout=0.3)
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme", redaction="off")
    headers = {"Authorization": f"Bearer {key}"}
    with live_server(settings) as url, httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        assert http.get("/v1/models").status_code == 200  # the key is cached and the route state read
        outside = sqlite3.connect(settings.home / "tuneloop.db", isolation_level=None)
        outside.execute("BEGIN IMMEDIATE")  # held longer than every capture attempt together
        try:
            if stream:
                interaction_id = _stream_id(http)
            else:
                resp = http.post("/v1/chat/completions", json=ASK)
                assert resp.status_code == 200, resp.text
                interaction_id = resp.json()["id"]
            spool = settings.home / "spool" / "interactions.jsonl"
            assert interaction_id in spool.read_text()
        finally:
            outside.rollback()
            outside.close()
    # The next start replays the spool before it serves.
    with live_server(settings) as url, httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        deadline = time.monotonic() + 10
        while (found := http.get(f"/v1/interactions/{interaction_id}")).status_code == 404:
            assert time.monotonic() < deadline, "the spooled interaction was never written"
            time.sleep(0.1)
    assert found.status_code == 200 and found.json()["response"]
    assert spool.read_text() == ""
    store.close()


def test_a_brief_lock_is_outlasted_by_the_capture_retries(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), db_busy_timeout=0.3)
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme", redaction="off")
    headers = {"Authorization": f"Bearer {key}"}
    with live_server(settings) as url, httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        assert http.get("/v1/models").status_code == 200
        outside = sqlite3.connect(
            settings.home / "tuneloop.db", isolation_level=None, check_same_thread=False
        )
        outside.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.5, outside.rollback)
        release.start()
        interaction_id = _stream_id(http)
        release.join()
        found = http.get(f"/v1/interactions/{interaction_id}")  # the stream ended after the capture
    outside.close()
    assert found.status_code == 200
    assert not (settings.home / "spool" / "interactions.jsonl").exists()
    store.close()


def test_an_answer_the_model_wrote_with_nul_is_stored_with_a_replacement_character(
    tiny_model: Path, tmp_path: Path, db_url: str
) -> None:
    # Token 190 is byte 0 in SmolLM2's byte-level vocabulary; PostgreSQL refuses NUL in text.
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), db_url=db_url)
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme", redaction="off")
    headers = {"Authorization": f"Bearer {key}"}
    with live_server(settings) as url, httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        resp = http.post("/v1/chat/completions", json={**ASK, "logit_bias": {"190": 100}})
        assert resp.status_code == 200, resp.text
        interaction_id = resp.json()["id"]
        stored = http.get(f"/v1/interactions/{interaction_id}")
    assert stored.status_code == 200, stored.text
    assert "\x00" not in stored.json()["response"] and "\ufffd" in stored.json()["response"]
    store.close()


def test_a_spooled_row_the_store_refuses_is_set_aside_not_retried_for_ever(
    postgres: object, tmp_path: Path
) -> None:
    from tuneloop.capture.spool import Spool
    from tuneloop.clock import now_utc

    store = Store(postgres.create_database("t_spool"))  # type: ignore[attr-defined]
    tenant, _ = store.create_tenant("acme", redaction="off")
    spool = Spool(tmp_path / "interactions.jsonl")
    row = {
        "id": "int-nul",
        "messages": [{"role": "user", "content": "hi"}],
        "response": "a\x00b",
        "choices": ["a\x00b"],
        "created_at": now_utc(),
    }
    spool.append(tenant, row, "digest")

    assert spool.replay(store) == 0
    assert "int-nul" in spool.set_aside.read_text() and spool.path.read_text() == ""
    store.close()
