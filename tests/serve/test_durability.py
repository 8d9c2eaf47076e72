from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.postgres import free_port
from tuneloop.demo import start_server
from tuneloop.store.repository import Store


def test_kill_9_during_group_committed_ingestion_loses_no_acknowledged_event(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(f"sqlite:///{home / 'tuneloop.db'}")
    tenant, key = store.create_tenant("acme", redaction="off")
    admin = store.add_key(None)
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(
        {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a"]}, "d"
    )
    port = free_port()
    proc = start_server(home, port, {"TUNELOOP_BACKEND": "none"})
    acked: set[str] = set()
    logged: set[str] = set()  # interactions acknowledged, merged across requests as events are
    stop = threading.Event()

    def send(worker: int) -> None:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"})
        n = 0
        while not stop.is_set():
            n += 1
            batch = n % 3 == 0
            ids = [f"w{worker}-{n}-{k}" for k in range(20 if batch else 1)]
            events = [{"id": i, "interaction_id": "i1", "kind": "thumbs", "value": 1} for i in ids]
            interaction = {
                "id": f"i-{ids[0]}",
                "messages": [{"role": "user", "content": "q"}],
                "response": "a",
            }
            try:
                if n % 3 == 1:
                    if http.post("/v1/interactions", json=interaction, timeout=5).status_code == 201:
                        logged.add(interaction["id"])
                    continue
                resp = http.post("/v1/feedback", json={"events": events} if batch else events[0], timeout=5)
            except httpx.TransportError:
                return
            if resp.status_code in (200, 201):
                body = resp.json()
                results = body["results"] if batch else [body]
                acked.update(r["id"] for r in results if r["status"] in ("accepted", "duplicate"))

    threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(3)
    metrics = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10
    ).text
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()

    restarted = start_server(home, port, {"TUNELOOP_BACKEND": "none"})
    try:
        after = Store(f"sqlite:///{home / 'tuneloop.db'}").for_tenant(tenant)
        stored, kept = {e["id"] for e in after.feedback()}, after.logged(logged)
    finally:
        restarted.terminate()
        restarted.wait()
    assert len(acked) > 50, "the test did not ingest enough to mean anything"
    calls, groups = (_sample(metrics, f"tuneloop_store_group_commit_calls_{s}") for s in ("sum", "count"))
    assert calls > groups, "no transaction committed more than one request's writes"
    assert acked - stored == set() and len(logged) > 20 and logged == kept


def _sample(exposition: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name + " "))
