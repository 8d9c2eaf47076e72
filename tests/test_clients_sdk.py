"""tuneloop's own SDK over real HTTP: named scores, `AsyncClient`, and queued events sent in background
batches (on size, on interval, on close) that are never lost on close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.live import live_server
from tests.postgres import free_port
from tuneloop import Client, Settings
from tuneloop.async_client import AsyncClient
from tuneloop.client import Unsent
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "How do I export my data?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), backend="none")
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    store.close()
    with live_server(settings) as url:
        yield {"url": url, "key": key}


def _stored(server: dict, iid: str) -> list[dict]:
    headers = {"Authorization": f"Bearer {server['key']}"}
    return httpx.get(f"{server['url']}/v1/interactions/{iid}", headers=headers).json()["feedback"]


def test_queued_feedback_is_all_stored_by_close(server: dict) -> None:
    with Client(server["url"], server["key"], batch_size=40, flush_interval=0.2) as tl:
        iid = tl.log_interaction(ASK, "Settings, then Export.")
        ids = [tl.feedback(iid, "dwell_ms", i, background=True) for i in range(150)]
        ids.append(tl.score(iid, "helpfulness", 4, comment="clear", background=True))
    stored = _stored(server, iid)
    assert sorted(e["id"] for e in stored) == sorted(ids)
    score = next(e for e in stored if e["kind"] == "score")
    assert score["value"] == {"name": "helpfulness", "data_type": "numeric", "value": 4, "comment": "clear"}


def test_a_full_batch_is_sent_without_waiting_for_the_interval(server: dict) -> None:
    with Client(server["url"], server["key"], batch_size=3, flush_interval=60) as tl:
        iid = tl.log_interaction(ASK, "Settings, then Export.")
        for _ in range(3):
            tl.feedback(iid, "copied", background=True)
        deadline = time.monotonic() + 10
        while len(_stored(server, iid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_stored(server, iid)) == 3


def test_close_hands_back_the_events_an_unreachable_server_did_not_take() -> None:
    tl = Client(f"http://127.0.0.1:{free_port()}", "tl-none", retries=0, flush_interval=60)
    queued = [
        tl.score("int-1", "resolved", True, background=True),
        tl.feedback("int-1", "copied", background=True),
    ]
    with pytest.raises(Unsent) as unsent:
        tl.close()
    assert [e["id"] for e in unsent.value.events] == queued
    assert unsent.value.events[0]["value"] == {"name": "resolved", "data_type": "boolean", "value": True}


def test_the_async_client_logs_scores_and_flushes_its_queue_on_close(server: dict) -> None:
    async def run() -> tuple[str, list[str]]:
        async with AsyncClient(server["url"], server["key"], batch_size=10, flush_interval=0.1) as tl:
            iid = await tl.log_interaction(ASK, "Settings, then Export.", session="s-async")
            assert await tl.score(iid, "tone", "friendly") == "accepted"
            queued = [await tl.feedback(iid, "accepted", background=True)]
            queued += [await tl.score(None, "csat", 5, session="s-async", background=True) for _ in range(25)]
            return iid, queued

    iid, queued = asyncio.run(run())
    stored = {e["id"] for e in _stored(server, iid)}
    assert set(queued) <= stored and len(stored) == len(queued) + 1


def test_a_capture_only_server_says_why_it_does_not_generate(server: dict) -> None:
    headers = {"Authorization": f"Bearer {server['key']}"}
    answer = httpx.post(f"{server['url']}/v1/chat/completions", json={"messages": ASK}, headers=headers)
    assert answer.status_code == 404 and "TUNELOOP_BACKEND=none" in answer.json()["error"]["message"]
    other = httpx.get(f"{server['url']}/v1/nothing-here", headers=headers)
    assert other.status_code == 404 and "no such endpoint" in other.json()["error"]["message"]


def test_a_base_url_ending_in_v1_as_openai_clients_take_it_reaches_the_same_server(server: dict) -> None:
    with Client(f"{server['url']}/v1/", server["key"]) as tl:
        iid = tl.log_interaction(ASK, "Settings, then Export.")
    assert _stored(server, iid) == []  # found at /v1/interactions/{id}: it was stored, not sent to /v1/v1/


def test_a_base_url_without_a_scheme_is_refused_at_once_naming_the_fix() -> None:
    from tuneloop.errors import BadRequest

    for make in (Client, AsyncClient):
        with pytest.raises(BadRequest, match=r"needs http:// or https://, e.g. http://127\.0\.0\.1:8000"):
            make("localhost:8000", "tl-none")
