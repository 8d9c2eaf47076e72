"""Loop workers' overhead on PostgreSQL: a lease round trip, and a worker's pass per tenant with and
without the hourly checks due (no turn starts: each tenant has too little feedback). docs/scaling.md sizes
workers from these. Run: `.venv/bin/python benchmarks/workers.py [--tenants 50]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.monitor.seed import cooking_prompt, stream
from tests.postgres import PostgresServer, find_bindir
from tuneloop import Settings
from tuneloop.loop.worker import Worker
from tuneloop.store.leases import Leases
from tuneloop.store.repository import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=50)
    n = parser.parse_args().tenants
    base = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    server = PostgresServer(base, find_bindir())
    server.start()
    try:
        url = server.create_database("bench")
        store = Store(url)
        start = datetime.now(UTC) - timedelta(hours=1)
        for i in range(n):
            tenant = store.for_tenant(store.create_tenant(f"t{i}")[0])
            stream(tenant, start=start, hours=0.5, count=5, prompt=cooking_prompt, seed=i)
        leases = Leases(store, 60)
        clock = time.perf_counter()
        for tenant in store.tenants():
            lease = leases.acquire(tenant.id, "bench")
            assert lease is not None
            leases.release(lease)
        lease_ms = (time.perf_counter() - clock) / n * 1000
        worker = Worker(store, Settings(home=base / "home", db_url=url), "bench")
        passes = []
        for _ in range(2):  # the first pass runs every tenant's hourly checks, the second finds none due
            clock = time.perf_counter()
            worker.run_once()
            passes.append((time.perf_counter() - clock) / n * 1000)
        print(f"lease acquire + release: {lease_ms:.1f} ms")
        print(f"worker pass, hourly checks due: {passes[0]:.1f} ms per tenant")
        print(f"worker pass, idle: {passes[1]:.1f} ms per tenant ({n} tenants)")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
