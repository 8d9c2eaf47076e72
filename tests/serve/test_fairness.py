"""One tenant's heavy traffic must not stall another's: redaction takes turns between tenants, each request's
analysis is bounded, and each tenant has a rate and concurrency limit. Real server, real Presidio."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.errors import RateLimited
from tuneloop.serve.limits import TenantLimits
from tuneloop.store.repository import Store

MAX_REDACT_CHARS = 60_000  # about 2.5 s of analysis per maximal batch on a 2-core machine
SENTENCE = (
    "Hi, I am Maria Gonzales, write to maria.g{n}@example.com or call +44 20 7946 {n:04d} about order {n}. "
)


@pytest.fixture
def server(tmp_path: Path) -> dict:
    settings = Settings(
        home=tmp_path / "home",
        backend="none",
        max_redact_chars=MAX_REDACT_CHARS,
        max_redact_strings=500,
        tenant_max_concurrency=4,
        tenant_rate_limit=1000,
    )
    store = Store(settings.database_url)
    keys = {}
    for name in ("heavy", "light", "quiet"):
        tenant, keys[name] = store.create_tenant(name)  # redaction on (the default)
        store.for_tenant(tenant).log_interaction(
            {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "r", "choices": ["r"]},
            "d",
        )
    with live_server(settings) as url:
        yield {"url": url, "keys": keys, "store": store}
    store.close()


def _http(server: dict, tenant: str) -> httpx.Client:
    return httpx.Client(
        base_url=server["url"], headers={"Authorization": f"Bearer {server['keys'][tenant]}"}, timeout=120
    )


def _maximal_batch(tag: str) -> dict:
    """As much text as one request may send through redaction, all of it new (nothing cached)."""
    events, chars, n = [], 0, 0
    while True:
        text = "".join(SENTENCE.format(n=n * 10 + k) for k in range(10)) + tag
        if chars + len(text) > MAX_REDACT_CHARS:
            return {"events": events}
        events.append({"id": f"{tag}-{n}", "interaction_id": "i1", "kind": "comment", "value": text})
        chars += len(text)
        n += 1


def test_a_tenant_sending_maximal_batches_flat_out_leaves_others_a_fast_p99(server: dict) -> None:
    stop = threading.Event()
    heavy_done: list[int] = []

    def heavy(worker: int) -> None:
        with _http(server, "heavy") as http:
            n = 0
            while not stop.is_set():
                n += 1
                resp = http.post("/v1/feedback", json=_maximal_batch(f"h{worker}-{n}"))
                assert resp.status_code in (200, 429), resp.text
                heavy_done.append(resp.status_code)

    threads = [threading.Thread(target=heavy, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the heavy batches are in analysis now
    latencies = []
    with _http(server, "light") as http:
        deadline = time.monotonic() + 10
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {
                "id": f"l-{n}",
                "interaction_id": "i1",
                "kind": "comment",
                "value": f"Thanks Anna Berg, #{n}",
            }
            started = time.monotonic()
            resp = http.post("/v1/feedback", json=body)
            latencies.append(time.monotonic() - started)
            assert resp.status_code == 201, resp.text
            time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"light tenant: {len(latencies)} events, p50 {latencies[len(latencies) // 2]:.3f} s, p99 {p99:.3f} s"
    )
    assert heavy_done.count(200) >= 2, "the heavy tenant's batches did not go through"
    assert p99 < 1.0, f"p99 {p99:.2f} s while another tenant sends maximal batches"


def test_a_request_over_the_redaction_budget_gets_413_naming_the_limit(server: dict) -> None:
    with _http(server, "quiet") as http:
        too_long = [
            {"id": f"e{i}", "interaction_id": "i1", "kind": "comment", "value": "word " * 10_000}
            for i in range(3)
        ]
        chars = http.post("/v1/feedback", json={"events": too_long})
        too_many = [
            {"id": f"e{i}", "interaction_id": "i1", "kind": "comment", "value": "fine"} for i in range(501)
        ]
        strings = http.post("/v1/feedback", json={"events": too_many})
        ok = http.post("/v1/feedback", json={"events": too_long[:1]})
    assert chars.status_code == 413 and "TUNELOOP_MAX_REDACT_CHARS" in chars.json()["error"]["message"]
    assert strings.status_code == 413 and "TUNELOOP_MAX_REDACT_STRINGS" in strings.json()["error"]["message"]
    assert ok.status_code == 200 and ok.json()["accepted"] == 1


def test_a_tenant_over_its_rate_gets_429_with_retry_after_and_others_do_not(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", backend="none", tenant_rate_limit=1, tenant_rate_burst=3)
    store = Store(settings.database_url)
    _, fast = store.create_tenant("fast", redaction="off")
    _, calm = store.create_tenant("calm", redaction="off")
    with live_server(settings) as url, httpx.Client(base_url=url) as http:
        burst = [http.get("/v1/feedback", headers={"Authorization": f"Bearer {fast}"}) for _ in range(5)]
        other = http.get("/v1/feedback", headers={"Authorization": f"Bearer {calm}"})
    store.close()
    assert [r.status_code for r in burst] == [200, 200, 200, 429, 429]
    assert int(burst[-1].headers["retry-after"]) >= 1 and "TUNELOOP_TENANT_RATE_LIMIT" in burst[-1].text
    assert other.status_code == 200


def test_requests_beyond_a_tenants_concurrency_cap_get_429() -> None:
    import asyncio

    async def scenario() -> None:
        limits = TenantLimits(concurrency=2, rate=1000, burst=1000)
        async with limits.admit("t"), limits.admit("t"):
            with pytest.raises(RateLimited) as caught:
                async with limits.admit("t"):
                    pass
            assert caught.value.status == 429 and caught.value.retry_after == 1
            async with limits.admit("other"):
                pass
        async with limits.admit("t"):  # slots come back when requests finish
            pass

    asyncio.run(scenario())


def test_a_burst_of_one_tenants_captures_does_not_hold_every_thread_from_another(tmp_path: Path) -> None:
    """The default concurrency cap (64) is above the thread pool's 40: a burst of one tenant's captures,
    waiting their turn at redaction, used to hold every thread, so another tenant's capture could not even
    start. It now goes in at the next turn of redaction."""
    settings = Settings(home=tmp_path / "home", backend="none", tenant_rate_limit=1000)
    store = Store(settings.database_url)
    keys = {name: store.create_tenant(name)[1] for name in ("burst", "other")}
    burst, done = 48, []
    with live_server(settings) as url:
        server = {"url": url, "keys": keys}

        def one(n: int) -> None:
            text = "".join(SENTENCE.format(n=n * 100 + k) for k in range(40))
            body = {"messages": [{"role": "user", "content": text}], "response": "Noted."}
            with _http(server, "burst") as http:
                assert http.post("/v1/interactions", json=body).status_code == 201
            done.append(n)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(burst)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the burst is queued at redaction now
        with _http(server, "other") as http:
            body = {"messages": [{"role": "user", "content": "Thanks Anna Berg"}], "response": "Welcome."}
            before = len(done)
            assert http.post("/v1/interactions", json=body).status_code == 201
            passed = len(done) - before
        for t in threads:
            t.join()
    store.close()
    # Redaction takes turns: the turn under way and a few answers already past redaction may finish first;
    # on the shared pool 7 did (the capture took 5.9 s against 0.14 s now).
    assert len(done) == burst and passed <= 4, f"{passed} of the burst's captures went first"
