"""Loop workers: any number of processes, on any machines, share the tenants' loops through leases.

A worker looks at every tenant in turn, takes the tenant's lease (store/leases.py), ticks its loop and gives
the lease back. While it works a heartbeat renews the lease every third of its TTL; the loop checks the
lease before it records each stage, so a worker that lost it stops advancing the turn. A killed worker's
lease expires after the TTL and the next worker resumes the open turn at the stage it reached.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tuneloop.config import Settings
from tuneloop.loop.controller import Loop
from tuneloop.loop.turns import Turn
from tuneloop.store.leases import Lease, Leases
from tuneloop.store.repository import Store, Tenant

log = logging.getLogger("tuneloop.worker")


def default_name() -> str:
    """host:pid, unique among live workers."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Renews a lease every ttl/3 in a thread; `lost` is set once a renewal fails."""

    def __init__(self, leases: Leases, lease: Lease) -> None:
        self.leases = leases
        self.lease = lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.tenant_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.leases.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                renewed = self.leases.renew(self.lease)
            except Exception:  # a store hiccup: keep trying until the lease would have expired anyway
                log.exception("renewing the lease of tenant %s failed", self.lease.tenant_id)
                continue
            if not renewed:
                self.lost.set()
                return

    def holds(self) -> bool:
        """The fencing check before a stage is recorded: the heartbeat's view, then the store's."""
        return not self.lost.is_set() and self.leases.holds(self.lease)


class Worker:
    """Ticks the loops of whichever tenants it can lease; `run` until stopped, or `run_once`."""

    def __init__(self, store: Store, settings: Settings, name: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.name = name or default_name()
        self.leases = Leases(store, settings.loop_lease_seconds)

    def run_once(self) -> list[Turn]:
        """One pass over every tenant (in random order, so workers spread out); the turns it touched."""
        tenants = self.store.tenants()
        random.shuffle(tenants)
        touched = []
        for tenant in tenants:
            try:
                turn = self.tick(tenant)
            except Exception:  # one tenant's failure must not stop the others' loops
                log.exception("worker %s: loop tick failed for tenant %s", self.name, tenant.name)
                continue
            if turn is not None:
                log.info("tenant %s turn %d: %s", tenant.name, turn.turn, turn.outcome or turn.stage)
                touched.append(turn)
        return touched

    def tick(self, tenant: Tenant) -> Turn | None:
        """Tick one tenant's loop under its lease; None when another worker holds it or nothing was due."""
        with self.leased(tenant) as heartbeat:
            if heartbeat is None:
                return None
            return Loop(self.store.for_tenant(tenant), self.settings, guard=heartbeat.holds).tick()

    @contextmanager
    def leased(self, tenant: Tenant) -> Iterator[Heartbeat | None]:
        """The tenant's lease, renewed while the block runs and released after it (even on SIGTERM's
        SystemExit); None when another worker holds it."""
        lease = self.leases.acquire(tenant.id, self.name)
        if lease is None:
            yield None
            return
        try:
            with Heartbeat(self.leases, lease) as heartbeat:
                yield heartbeat
        finally:
            self.leases.release(lease)

    def run(self, stop: threading.Event, interval: float) -> None:
        """Pass over the tenants every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            self.run_once()
            stop.wait(interval)
