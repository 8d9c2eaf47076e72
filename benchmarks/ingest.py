"""Feedback ingestion through real HTTP (uvicorn) against the raw SQLite insert rate of the same rows.

Prints events/s for single-event and batched requests, with redaction on and off, and the ratio of the
batched rate to raw SQLite. Run: `.venv/bin/python benchmarks/ingest.py [--seconds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.postgres import free_port
from tuneloop.store.repository import Store, payload_hash

BATCH = 100


def start_server(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_BACKEND": "none"}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tuneloop.serve.app:create_app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, env=env)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def events(n: int, text: bool) -> list[dict]:
    kind, value = (
        ("comment", "Please call me back about my card, it was charged twice.") if text else ("thumbs", 1)
    )
    return [
        {"id": f"e-{uuid.uuid4().hex}", "interaction_id": "i1", "kind": kind, "value": value}
        for _ in range(n)
    ]


async def drive(
    url: str, key: str, seconds: float, batched: bool, text: bool, concurrency: int = 16
) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            batch = events(BATCH if batched else 1, text)
            body = {"events": batch} if batched else batch[0]
            resp = await client.post("/v1/feedback", json=body)
            resp.raise_for_status()
            sent += len(batch)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return sent / (time.perf_counter() - start)


def raw_sqlite_rate(path: Path, n: int = 20_000) -> float:
    """Insert the same shape of rows with the stdlib driver: one transaction per BATCH rows, WAL."""
    Store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("INSERT INTO tenants VALUES ('t', 't', 'off', '2026-01-01')")
    rows = [
        ("t", e["id"], "i1", "thumbs", "1", None, "user", None, payload_hash(e), "2026-01-01", "2026-01-01")
        for e in events(n, False)
    ]
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows[i : i + BATCH])
        conn.execute("COMMIT")
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    raw = raw_sqlite_rate(tmp / "raw.db")
    print(f"raw SQLite insert (batches of {BATCH}): {raw:,.0f} rows/s")
    print(f"{'redaction':>10} {'payload':>8} {'mode':>8} {'events/s':>10} {'vs raw':>8}")
    for redaction in ("off", "redact"):
        home = tmp / f"home-{redaction}"
        store = Store(f"sqlite:///{home / 'tuneloop.db'}")
        tenant, key = store.create_tenant("bench", redaction=redaction)
        store.for_tenant(tenant).log_interaction(
            {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a"]},
            "d",
        )
        store.close()
        port = free_port()
        proc = start_server(home, port)
        try:
            for text in (False, True):
                for batched in (False, True):
                    rate = asyncio.run(drive(f"http://127.0.0.1:{port}", key, args.seconds, batched, text))
                    payload, mode = "text" if text else "thumbs", "batch" if batched else "single"
                    print(f"{redaction:>10} {payload:>8} {mode:>8} {rate:>10,.0f} {rate / raw:>7.0%}")
        finally:
            proc.terminate()
            proc.wait()
    print(json.dumps({"raw_rows_per_s": round(raw)}))


if __name__ == "__main__":
    main()
