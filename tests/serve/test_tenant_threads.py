"""A tenant's blocking work runs in its own few threads (`TenantThreads`): a burst of one tenant's uploads or
large bodies waits for its own threads, and never holds the threads another tenant's request needs."""

from __future__ import annotations

import asyncio
import threading

from tuneloop.serve.http import TenantThreads


def test_a_tenant_using_all_its_threads_queues_its_own_calls_and_not_another_tenants() -> None:
    release = threading.Event()
    started: list[str] = []

    def work(name: str) -> str:
        started.append(name)
        if name.startswith("a"):
            release.wait(10)
        return name

    async def scenario() -> tuple[list[str], str, list[str]]:
        threads = TenantThreads(2)
        burst = [asyncio.create_task(threads("tenant-a", work, f"a{i}")) for i in range(6)]
        await asyncio.sleep(0.1)
        other = await asyncio.wait_for(threads("tenant-b", work, "b"), timeout=5)
        while_blocked = list(started)
        release.set()
        return [await t for t in burst], other, while_blocked

    done, other, while_blocked = asyncio.run(scenario())
    assert other == "b" and done == [f"a{i}" for i in range(6)]
    assert sorted(n for n in while_blocked if n.startswith("a")) == ["a0", "a1"]  # the rest waited their turn
