"""Concurrent capture requests of one tenant share redaction calls (`TenantThreads.many`): each caller still
gets its own results, its own errors, and nothing of a caller that went away is run."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.serve.http import MERGED_ITEMS, TenantThreads
from tuneloop.store.repository import Store, TenantStore


@pytest.fixture
def tenant_store(tmp_path: Path) -> TenantStore:
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    tenant, _ = store.create_tenant("acme")
    yield store.for_tenant(tenant)
    store.close()


class Recorder:
    """fn(store, items) that doubles each item, fails on the item "bad", and blocks until `release`."""

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.release = threading.Event()

    def __call__(self, store: TenantStore, items: list) -> list:
        self.release.wait(10)
        self.calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [item * 2 for item in items]


def test_calls_arriving_while_one_runs_are_merged_and_each_gets_its_own_results(
    tenant_store: TenantStore,
) -> None:
    async def scenario() -> list:
        threads, fn = TenantThreads(1), Recorder()  # one thread: the rest must queue
        first = asyncio.create_task(threads.many(fn, tenant_store, ["a"]))
        await asyncio.sleep(0.05)  # the first call is running (blocked); the rest queue behind it
        rest = [asyncio.create_task(threads.many(fn, tenant_store, [f"x{i}", f"y{i}"])) for i in range(5)]
        await asyncio.sleep(0.05)
        fn.release.set()
        return [await first, *[await r for r in rest]], fn.calls

    results, calls = asyncio.run(scenario())
    assert results == [["aa"], *[[f"x{i}x{i}", f"y{i}y{i}"] for i in range(5)]]
    assert calls == [["a"], [item for i in range(5) for item in (f"x{i}", f"y{i}")]]


def test_a_failing_merged_call_fails_only_the_caller_whose_items_broke_it(tenant_store: TenantStore) -> None:
    async def scenario() -> list:
        threads, fn = TenantThreads(1), Recorder()  # one thread: the rest must queue
        first = asyncio.create_task(threads.many(fn, tenant_store, ["a"]))
        await asyncio.sleep(0.05)
        good = asyncio.create_task(threads.many(fn, tenant_store, ["g"]))
        bad = asyncio.create_task(threads.many(fn, tenant_store, ["bad"]))
        fn.release.set()
        return await asyncio.gather(first, good, bad, return_exceptions=True)

    first, good, bad = asyncio.run(scenario())
    assert first == ["aa"] and good == ["gg"]
    assert isinstance(bad, ValueError)


def test_a_caller_that_went_away_before_its_turn_is_not_run(tenant_store: TenantStore) -> None:
    async def scenario() -> list:
        threads, fn = TenantThreads(1), Recorder()  # one thread: the rest must queue
        first = asyncio.create_task(threads.many(fn, tenant_store, ["a"]))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(threads.many(fn, tenant_store, ["gone"]))
        kept = asyncio.create_task(threads.many(fn, tenant_store, ["kept"]))
        await asyncio.sleep(0.05)
        gone.cancel()
        fn.release.set()
        await first
        return await kept, fn.calls

    kept, calls = asyncio.run(scenario())
    assert kept == ["keptkept"]
    assert calls == [["a"], ["kept"]]


def test_a_merged_call_holds_at_most_merged_items_unless_one_caller_sends_more(
    tenant_store: TenantStore,
) -> None:
    async def scenario() -> list:
        threads, fn = TenantThreads(1), Recorder()  # one thread: the rest must queue
        first = asyncio.create_task(threads.many(fn, tenant_store, ["a"]))
        await asyncio.sleep(0.05)
        big = asyncio.create_task(threads.many(fn, tenant_store, ["b"] * (MERGED_ITEMS + 1)))
        small = [asyncio.create_task(threads.many(fn, tenant_store, ["s"] * 10)) for _ in range(8)]
        fn.release.set()
        await asyncio.gather(first, big, *small)
        return fn.calls

    sizes = [len(c) for c in asyncio.run(scenario())]
    assert sizes[:2] == [1, MERGED_ITEMS + 1]
    assert all(size <= MERGED_ITEMS for size in sizes[2:]) and sum(sizes[2:]) == 80


def test_a_small_call_does_not_wait_for_a_long_one_of_the_same_tenant(tenant_store: TenantStore) -> None:
    release = threading.Event()

    def fn(store: TenantStore, items: list) -> list:
        if "long" in items:
            release.wait(10)
        return [item * 2 for item in items]

    async def scenario() -> list:
        threads = TenantThreads(2)
        long = asyncio.create_task(threads.many(fn, tenant_store, ["long"]))
        await asyncio.sleep(0.05)
        small = await asyncio.wait_for(threads.many(fn, tenant_store, ["s"]), timeout=5)
        assert not long.done()
        release.set()
        return [small, await long]

    assert asyncio.run(scenario()) == [["ss"], ["longlong"]]


def test_concurrent_single_events_are_each_stored_redacted_under_their_own_id(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", backend="none", tenant_rate_limit=1000)
    store = Store(settings.database_url)
    tenant, key = store.create_tenant("acme")  # redaction on (the default)
    store.for_tenant(tenant).log_interaction(
        {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "r", "choices": ["r"]}, "d"
    )

    def post(n: int) -> httpx.Response:
        event = {
            "id": f"e{n}",
            "interaction_id": "i1",
            "kind": "comment",
            "value": f"Please call Maria Gonzales on +44 20 7946 {n:04d} about ticket {n}",
        }
        return httpx.post(f"{url}/v1/feedback", json=event, headers={"Authorization": f"Bearer {key}"})

    with live_server(settings) as url, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(48)))
    stored = store.for_tenant(tenant).feedback()
    store.close()
    assert [a.json()["id"] for a in answers] == [f"e{n}" for n in range(48)]
    assert {a.status_code for a in answers} == {201}
    values = sorted(e["value"] for e in stored)
    assert len(values) == 48
    assert all("Maria" not in v and "7946" not in v for v in values)
    assert sorted(int(v.rsplit(" ", 1)[1]) for v in values) == list(range(48))  # each its own text
