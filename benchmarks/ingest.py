"""Feedback ingestion through real HTTP (uvicorn) against the raw SQLite insert rate of the same rows.

Prints, with redaction off and on: single-event requests/s with p50/p99 latency (closed loop, and open loop
at a fixed 1,000 requests/s, latency counted from each request's scheduled time), and batched events/s as a
share of raw SQLite inserting the same rows into a copy of the server's database taken before the run.
Single-event requests/s are set beside a bare FastAPI route on the same uvicorn (uvloop, httptools) that
parses the same body and answers: what this machine's HTTP stack allows one process, the anchor of those rows.
Comment events carry distinct realistic texts (half with PII); interactions (a system prompt, a distinct
question and answer) are logged one per request as well.
Run: `.venv/bin/python benchmarks/ingest.py [--seconds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pii import Generator

from tests.postgres import free_port
from tuneloop.store.repository import Store, payload_hash

BATCH = 100
CONNECTIONS = 32
OPEN_LOOP_RATE = 1_000


def start_server(home: Path, port: int, workers: int = 1) -> subprocess.Popen:
    # The benchmark measures the store path, not the per-tenant rate limits a shared server should keep.
    env = {
        **os.environ,
        "TUNELOOP_HOME": str(home),
        "TUNELOOP_BACKEND": "none",
        "TUNELOOP_TENANT_RATE_LIMIT": "1000000",
        "TUNELOOP_TENANT_RATE_BURST": "1000000",
        "TUNELOOP_TENANT_MAX_CONCURRENCY": "1000",
    }
    cmd = [sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--workers", str(workers)]
    return _started(cmd, env, workers)  # as run


def start_anchor(port: int, workers: int) -> subprocess.Popen:
    """`anchor_app` on uvicorn with tuneloop serve's loop and parser, no access log."""
    here = str(Path(__file__).resolve().parent)
    flags = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "info"]
    app = ["--app-dir", here, "--factory", "ingest:anchor_app", "--workers", str(workers)]
    return _started(
        [sys.executable, "-m", "uvicorn", *app, "--port", str(port), *flags], dict(os.environ), workers
    )


def anchor_app() -> FastAPI:
    """A bare FastAPI app whose routes parse the JSON body and answer: no auth, validation or store."""
    app = FastAPI()

    async def accept(request: Request) -> dict:
        return {"id": (await request.json()).get("id"), "status": "accepted"}

    for path in (Payloads.path, Interactions.path):
        app.post(path, status_code=201)(accept)
    return app


def _started(cmd: list[str], env: dict[str, str], workers: int) -> subprocess.Popen:
    """`cmd` started, once each of its `workers` processes has finished starting up (uvicorn logs it)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(1200):
            log.seek(0)
            if log.read().count(b"Application startup complete") >= workers:
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{' '.join(cmd)} did not start")


class Payloads:
    """Event bodies: thumbs, or comments with distinct generated texts (about half carry PII)."""

    path = "/v1/feedback"
    numbers = itertools.count()  # shared: no text repeats within or across runs (the analyzer caches texts)

    def __init__(self, text: bool) -> None:
        self.texts = (
            itertools.cycle(s.text for s in Generator(7).samples(5_000, pii_share=0.5)) if text else None
        )

    def text(self) -> str:
        return f"{next(self.texts)} (#{next(self.numbers)})"

    def events(self, n: int) -> list[dict]:
        return [
            {
                "id": f"e-{uuid.uuid4().hex}",
                "interaction_id": "i1",
                **(
                    {"kind": "comment", "value": self.text()}
                    if self.texts
                    else {"kind": "thumbs", "value": 1}
                ),
            }
            for _ in range(n)
        ]

    def body(self, batched: bool) -> bytes:
        events = self.events(BATCH if batched else 1)
        return json.dumps({"events": events} if batched else events[0]).encode()


class Interactions(Payloads):
    """Interaction bodies as an app logs its own model's calls: a fixed system prompt, a distinct user
    message and answer."""

    path = "/v1/interactions"

    def __init__(self) -> None:
        super().__init__(text=True)

    def body(self, batched: bool) -> bytes:
        messages = [
            {"role": "system", "content": "You are the support assistant of Finly."},
            {"role": "user", "content": self.text()},
        ]
        return json.dumps(
            {"id": f"i-{uuid.uuid4().hex}", "messages": messages, "response": self.text()}
        ).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection with hand-written requests: a client far cheaper than httpx, so
    on a 2-core machine the figures are the server's, not the client's."""

    def __init__(self, port: int, key: str, path: str) -> None:
        self.port = port
        self.head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, body: bytes) -> None:
        head = f"{self.head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        if not status.split()[1].startswith(b"2"):
            raise RuntimeError(f"server answered {status.decode().strip()}")


async def closed_loop(port: int, key: str, seconds: float, payloads: Payloads, batched: bool) -> dict:
    """CONNECTIONS clients each sending the next request as soon as the last is answered."""
    conns = [await Connection(port, key, payloads.path).open() for _ in range(CONNECTIONS)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            body = payloads.body(batched)
            sent = time.perf_counter()
            await conn.post(body)
            latencies.append(time.perf_counter() - sent)

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    return _figures(latencies, time.perf_counter() - start, BATCH if batched else 1)


async def open_loop(port: int, key: str, seconds: float, payloads: Payloads, rate: float) -> dict:
    """Requests at a fixed rate whatever the answers do; a request's latency counts from when it was due,
    so a stalled server shows as latency rather than as fewer requests sent."""
    idle = asyncio.Queue()
    for _ in range(4 * CONNECTIONS):
        idle.put_nowait(await Connection(port, key, payloads.path).open())
    latencies: list[float] = []
    start = time.perf_counter()

    async def one(due: float) -> None:
        conn = await idle.get()
        await conn.post(payloads.body(False))
        latencies.append(time.perf_counter() - due)
        idle.put_nowait(conn)

    tasks = []
    for i in range(int(seconds * rate)):
        due = start + i / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return _figures(latencies, time.perf_counter() - start, 1)


def _figures(latencies: list[float], wall: float, per_request: int) -> dict:
    ordered = sorted(latencies)
    return {
        "events": len(ordered) * per_request,
        "events_per_s": len(ordered) * per_request / wall,
        "requests_per_s": len(ordered) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
    }


def snapshot(database: Path, to: Path) -> Path:
    """A consistent copy of the server's live database (SQLite's backup API), WAL and all."""
    for old in (to, to.with_name(f"{to.name}-wal"), to.with_name(f"{to.name}-shm")):
        old.unlink(missing_ok=True)
    source, copy = sqlite3.connect(database), sqlite3.connect(to)
    source.backup(copy)
    source.close()
    copy.close()
    return to


def raw_sqlite_rate(database: Path, tenant_id: str, payloads: Payloads, n: int) -> float:
    """Insert `n` rows as the store writes them for `payloads`' events (the tenant's id, timestamps and JSON
    as stored) into `database` with the stdlib driver: one transaction per BATCH rows, WAL. Given a copy of
    the server's database as it was before a run, the B-trees are as large as the server's were, and their
    size sets how many pages a commit writes."""
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    stamp = str(datetime.now(UTC).replace(tzinfo=None))  # SQLAlchemy's DateTime on SQLite
    rows = [
        # tenant_id, id, interaction_id, kind, value, rater, source, metadata, payload_hash, created, received
        (
            tenant_id,
            e["id"],
            "i1",
            e["kind"],
            json.dumps(e["value"]),
            None,
            "user",
            "null",
            payload_hash(e),
            stamp,
            stamp,
        )
        for e in payloads.events(n)
    ]
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows[i : i + BATCH])
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    conn.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--workers",
        type=lambda text: sorted({int(n) for n in text.split(",")}),
        default=sorted({1, os.cpu_count() or 1}),
        help="server processes to measure, comma-separated (default: 1 and one per core)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    single, interact = f"single, {CONNECTIONS} clients", f"interactions, {CONNECTIONS} cl."
    bare = {}  # (workers, payload) -> requests/s
    for workers in args.workers:
        port = free_port()
        proc = start_anchor(port, workers)
        try:
            asyncio.run(closed_loop(port, "-", 2.0, Payloads(False), False))  # warm-up, as for the server
            for kind, payloads in (
                ("thumbs", Payloads(False)),
                ("comment", Payloads(True)),
                ("interact", Interactions()),
            ):
                bare[workers, kind] = asyncio.run(closed_loop(port, "-", args.seconds, payloads, False))[
                    "requests_per_s"
                ]
        finally:
            proc.terminate()
            proc.wait()
        print(
            f"bare FastAPI route, {workers} worker(s), {CONNECTIONS} clients (the anchor of single rows): "
            + ", ".join(f"{kind} {rate:,.0f} req/s" for (w, kind), rate in bare.items() if w == workers)
        )
    print(
        f"{'redaction':>9} {'workers':>7} {'payload':>8} {'load':>22} {'events/s':>9} {'req/s':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'anchor':>7} {'vs it':>7}"
    )
    results = [
        {"anchor": "bare FastAPI", "workers": workers, "payload": kind, "requests_per_s": rate}
        for (workers, kind), rate in bare.items()
    ]
    for redaction, workers in itertools.product(("off", "redact"), args.workers):
        home = tmp / f"home-{redaction}-{workers}"
        store = Store(f"sqlite:///{home / 'tuneloop.db'}")
        tenant, key = store.create_tenant("bench", redaction=redaction)
        store.for_tenant(tenant).log_interaction(
            {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a"]},
            "d",
        )
        store.close()
        port = free_port()
        proc = start_server(home, port, workers)
        try:
            # Not measured: the server's first requests import lazily and fill its statement caches.
            asyncio.run(closed_loop(port, key, 2.0, Payloads(False), False))
            for text in (False, True):
                payloads = Payloads(text)
                on = (port, key, args.seconds)
                runs = {
                    single: partial(closed_loop, *on, payloads, False),
                    f"single, {OPEN_LOOP_RATE}/s open loop": partial(
                        open_loop, *on, payloads, OPEN_LOOP_RATE
                    ),
                    f"batches of {BATCH}, {CONNECTIONS} cl.": partial(closed_loop, *on, payloads, True),
                }
                if text:
                    runs[interact] = partial(closed_loop, *on, Interactions(), False)
                for load, run in runs.items():
                    batched = load.startswith("batches")
                    before = snapshot(home / "tuneloop.db", tmp / "raw.db") if batched else None
                    f = asyncio.run(run())
                    if before is not None:
                        # The same rows into the database as the server had it: the baseline for this run.
                        f["raw_rows_per_s"] = raw_sqlite_rate(before, tenant.id, Payloads(text), f["events"])
                    payload = (
                        "interact" if load.startswith("interactions") else "comment" if text else "thumbs"
                    )
                    row = {"redaction": redaction, "workers": workers, "payload": payload, "load": load}
                    results.append({**row, **f})
                    # Batched rows beside raw SQLite's rows/s, single ones beside the bare route's req/s.
                    anchor = f.get("raw_rows_per_s") or (
                        bare[workers, payload] if load in (single, interact) else None
                    )
                    print(
                        f"{redaction:>9} {workers:>7} {payload:>8} {load:>22} {f['events_per_s']:>9,.0f} "
                        f"{f['requests_per_s']:>7,.0f} {f['p50_ms']:>7.1f} {f['p99_ms']:>7.1f} "
                        + (
                            f"{anchor:>7,.0f} {f['events_per_s'] / anchor:>7.0%}"
                            if anchor
                            else f"{'':>7} {'':>7}"
                        )
                    )
        finally:
            proc.terminate()
            proc.wait()
    print(json.dumps({"runs": results}))


if __name__ == "__main__":
    main()
