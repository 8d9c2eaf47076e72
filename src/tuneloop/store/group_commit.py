"""Group commit: many requests' writes in one transaction, each acknowledged only after that commit.

A commit costs far more than the rows it carries (the write lock, the WAL append, fsync under
`synchronous=full`), and SQLite has one writer at a time anyway: per-request transactions from many
threads queue on the lock and time out under load. One writer thread instead takes every call waiting,
runs them in one transaction, commits, and only then answers each caller with its own result or error.
Nothing is acknowledged that a crash could lose.

Calls that take a list of items (`many`) and wait together for the same tenant are merged into one call on
all their items, so a hundred single-event requests cost the statements of one hundred-event batch; each
other call runs in its own savepoint, and so does a merged call that fails, so one caller's error never
undoes another's writes.

A call made with an API key runs only if the key is still unrevoked in the group's own transaction: the
request's key check and its write become one step, so a capture request needs no separate read (and thread
hop) of its key, and no write commits after the key's revocation did.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from tuneloop.errors import Unauthorized
from tuneloop.store.engine import unavailable
from tuneloop.store.repository import REVOKED, Store, TenantStore

log = logging.getLogger("tuneloop")
T = TypeVar("T")

MAX_GROUP = 512  # calls per transaction: bounds how long the first caller of a group waits on the rest

# fn(store, items) -> one result per item, in order: the shape `many` can merge across callers.
PerItem = Callable[[TenantStore, list[Any]], list[Any]]


@dataclass
class _Call:
    future: Future
    run: Callable[[], Any]  # the call on its own
    fn: PerItem | None = None  # set when it is fn(store, items), which others' items may join
    store: TenantStore | None = None
    items: list[Any] = field(default_factory=list)
    key: str | None = None  # the API key the call is made with, checked in the group's transaction


class GroupCommit:
    """A writer thread that commits queued store calls in groups; what they run joins the group's
    transaction (`Store.write`/`read` on that thread), and each caller hears back after the commit."""

    def __init__(self, store: Store, observe: Callable[[int], None] | None = None) -> None:
        """`observe(n)` hears the size of each committed group (the server's metrics)."""
        self.store = store
        self._observe = observe
        self._queue: list[_Call] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tuneloop-group-commit", daemon=True)
        self._thread.start()

    async def __call__(self, fn: Callable[..., T], *args: Any, key: str | None = None) -> T:
        """`fn(*args)` in the next group, in its own savepoint; returns once committed. With `key`, only
        while that API key is unrevoked (Unauthorized otherwise)."""
        return await self._submit(_Call(Future(), run=partial(fn, *args), key=key))

    async def many(
        self, fn: PerItem, store: TenantStore, items: list[Any], *, key: str | None = None
    ) -> list[Any]:
        """`fn(store, items)`, merged with the other waiting calls of `fn` for the same tenant; `key` as
        for a single call."""
        return await self._submit(_Call(Future(), partial(fn, store, items), fn, store, items, key))

    async def _submit(self, call: _Call) -> Any:
        with self._ready:
            if self._closed:
                raise RuntimeError("the group committer is closed")
            self._queue.append(call)
            self._ready.notify()
        return await asyncio.wrap_future(call.future)

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            # A caller that went away before its group began (a client hung up) is not written for; the
            # others can no longer be cancelled, so each hears the outcome.
            group = [call for call in group if call.future.set_running_or_notify_cancel()]
            if group:
                self._commit(group)

    def _commit(self, group: list[_Call]) -> None:
        outcomes: list[tuple[Future, Any, BaseException | None]] = []
        try:
            with self.store.joined() as conn:
                for unit in _units(self._refuse_revoked(group, outcomes)):
                    outcomes += _run_unit(conn, unit)
        except Exception as exc:  # the transaction itself failed (store busy, disk full): nothing stands
            log.warning("a group of %d writes failed to commit", len(group), exc_info=True)
            for call in group:
                call.future.set_exception(exc)
            return
        if self._observe is not None:
            self._observe(len(group))
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _refuse_revoked(self, group: list[_Call], outcomes: list) -> list[_Call]:
        """The calls whose key (if any) is unrevoked; each other hears Unauthorized through `outcomes`."""
        keys = {call.key for call in group if call.key is not None}
        active = self.store.active_keys(keys) if keys else set()
        kept = []
        for call in group:
            if call.key is None or call.key in active:
                kept.append(call)
            else:
                outcomes.append((call.future, None, Unauthorized(REVOKED)))
        return kept


def _units(group: list[_Call]) -> list[list[_Call]]:
    """Lone calls alone, mergeable ones gathered per (function, tenant), in the order each first came."""
    units: dict[Any, list[_Call]] = {}
    for i, call in enumerate(group):
        key = (call.fn, call.store.tenant_id) if call.fn and call.store else i
        units.setdefault(key, []).append(call)
    return list(units.values())


def _run_unit(conn: sa.Connection, unit: list[_Call]) -> list[tuple[Future, Any, BaseException | None]]:
    """Run a lone call, or a merged one on all its callers' items (each caller alone if that fails)."""
    first = unit[0]
    if first.fn is not None and first.store is not None and len(unit) > 1:
        try:
            with conn.begin_nested():
                results = first.fn(first.store, [item for call in unit for item in call.items])
        except Exception as exc:
            if unavailable(exc) is not None:
                raise
            # Someone's items broke the merged call: run each caller alone, so only theirs fails.
        else:
            outcomes, start = [], 0
            for call in unit:
                outcomes.append((call.future, results[start : start + len(call.items)], None))
                start += len(call.items)
            return outcomes
    outcomes = []
    for call in unit:
        try:
            with conn.begin_nested():
                outcomes.append((call.future, call.run(), None))
        except Exception as exc:
            if unavailable(exc) is not None:
                raise  # a busy store fails the whole group now, not each caller after its own wait
            outcomes.append((call.future, None, exc))  # this caller's error; the others' writes stand
    return outcomes
