"""Many clients racing to post one event id: exactly one is told `accepted`, on SQLite and PostgreSQL,
over real HTTP with real concurrency."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.store.repository import Store, payload_hash

CLIENTS = 20
ROUNDS = 5


async def _race(url: str, key: str, path: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as http:
        await http.get("/v1/feedback", params={"limit": 1})  # the key is cached: the posts start together
        return await asyncio.gather(*(http.post(path, json=body) for body in bodies))


def test_concurrent_posts_of_one_id_accept_exactly_one(tmp_path: Path, db_url: str) -> None:
    settings = Settings(home=tmp_path / "home", db_url=db_url, backend="none")
    store = Store(db_url)
    tenant, key = store.create_tenant("acme", redaction="off")
    with live_server(settings) as url:
        interactions = [
            {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": f"answer {i}"}
            for i in range(CLIENTS)
        ]
        logged = asyncio.run(_race(url, key, "/v1/interactions", interactions))
        rounds = []
        for n in range(ROUNDS):  # each round a new id, so a narrow race window is hit at least once
            events = [
                {"id": f"e{n}", "interaction_id": "i1", "kind": "rating", "value": 1 + i % 5}
                for i in range(CLIENTS)
            ]
            rounds.append((events, asyncio.run(_race(url, key, "/v1/feedback", events))))
        same = [{"id": "same", "interaction_id": "i1", "kind": "thumbs", "value": 1}] * CLIENTS
        repeated = asyncio.run(_race(url, key, "/v1/feedback", same))
    scoped = store.for_tenant(tenant)
    stored = {e["id"]: e for e in scoped.feedback()}
    for responses in [logged, *(responses for _, responses in rounds)]:
        codes = Counter(r.status_code for r in responses)
        assert codes[201] == 1, codes
        # The others sent the winner's payload (200 duplicate) or another one (409), never "accepted".
        assert set(codes) <= {200, 201, 409}
    for n, (events, responses) in enumerate(rounds):
        winner = next(e for e, r in zip(events, responses, strict=True) if r.status_code == 201)
        assert stored[f"e{n}"]["value"] == winner["value"]
    assert Counter(r.json()["status"] for r in repeated) == {"accepted": 1, "duplicate": CLIENTS - 1}
    assert len(stored) == ROUNDS + 1
    store.close()


def test_threads_adding_one_event_id_at_once_see_one_accepted(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(
        {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "r", "choices": ["r"]}, "d"
    )
    for n in range(ROUNDS):
        events = [
            {"id": f"e{n}", "interaction_id": "i1", "kind": "rating", "value": 1 + i % 5, "source": "user"}
            for i in range(CLIENTS)
        ]
        start = threading.Barrier(CLIENTS)

        def add(event: dict, start: threading.Barrier = start) -> str:
            start.wait()
            [result] = scoped.add_feedback([(event, payload_hash(event))])
            return result.status

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = Counter(pool.map(add, events))
        assert statuses["accepted"] == 1, statuses
        assert statuses["duplicate"] + statuses["rejected"] == CLIENTS - 1


def test_threads_logging_one_interaction_id_at_once_see_one_accepted(store: Store) -> None:
    scoped = store.for_tenant(store.create_tenant("acme")[0])
    for n in range(ROUNDS):
        start = threading.Barrier(CLIENTS)

        def log(i: int, start: threading.Barrier = start, n: int = n) -> str:
            row = {"id": f"i{n}", "messages": [{"role": "user", "content": "q"}], "response": f"r{i % 2}"}
            start.wait()
            [result] = scoped.log_interactions([({**row, "choices": [row["response"]]}, f"d{i % 2}")])
            return result.status

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = Counter(pool.map(log, range(CLIENTS)))
        # The others sent the winner's payload (duplicate) or the other one (rejected), never "accepted".
        assert statuses["accepted"] == 1 and statuses["duplicate"] + statuses["rejected"] == CLIENTS - 1
        assert statuses["duplicate"] in (CLIENTS // 2 - 1, CLIENTS // 2), statuses
