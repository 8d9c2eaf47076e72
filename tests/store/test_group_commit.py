from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tuneloop.capture import pending
from tuneloop.clock import now_utc
from tuneloop.errors import Conflict, Unauthorized
from tuneloop.store.engine import commit_turns
from tuneloop.store.group_commit import GroupCommit
from tuneloop.store.repository import ItemResult, Store, TenantStore, payload_hash


def _interaction(iid: str) -> dict:
    return {"id": iid, "messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a"]}


def _event(eid: str, iid: str = "i1") -> tuple[dict, str]:
    event = {"id": eid, "interaction_id": iid, "kind": "thumbs", "value": 1, "source": "user"}
    return event, payload_hash(event)


def _in_one_group(writes: GroupCommit, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run `calls` so they all wait for the same group: a first call holds the writer until all are queued."""
    gate = threading.Event()

    async def main() -> list[Any]:
        holding = asyncio.ensure_future(writes(gate.wait))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(call()) for call in calls]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(holding, return_exceptions=True)
        return await asyncio.gather(*waiting, return_exceptions=True)

    return asyncio.run(main())


@pytest.fixture
def scoped(store: Store) -> TenantStore:
    tenant, _ = store.create_tenant("acme", redaction="off")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(_interaction("i1"), "d1")
    return scoped


def test_merged_feedback_calls_answer_each_caller_with_its_own_results(
    store: Store, scoped: TenantStore
) -> None:
    seen: list[int] = []
    writes = GroupCommit(store, observe=seen.append)
    batches = [[_event("e1"), _event("e2")], [_event("e3")], [_event("e1"), _event("e4", iid="later")]]
    try:
        results = _in_one_group(
            writes, [lambda b=b: writes.many(pending.store_feedback, scoped, b) for b in batches]
        )
    finally:
        writes.close()
    statuses = [[r.status for r in rs] for rs in results]
    assert statuses == [["accepted", "accepted"], ["accepted"], ["duplicate", "pending"]]
    assert [[r.id for r in rs] for rs in results] == [["e1", "e2"], ["e3"], ["e1", "e4"]]
    assert seen[-1] == 3
    assert sorted(e["id"] for e in scoped.feedback()) == ["e1", "e2", "e3"]


def test_merged_interaction_calls_answer_each_caller_and_land_the_events_that_waited(
    store: Store, scoped: TenantStore
) -> None:
    waiting, _ = _event("e-early", iid="i3")
    assert pending.store_feedback(scoped, [(waiting, payload_hash(waiting))])[0].status == "pending"
    seen: list[int] = []
    writes = GroupCommit(store, observe=seen.append)
    calls = [[(_interaction("i2"), "d2")], [(_interaction("i1"), "d1"), (_interaction("i3"), "d3")]]
    calls += [[(_interaction("i1"), "another payload")], [(_interaction("i2"), "d2")]]
    try:
        results = _in_one_group(
            writes, [lambda c=c: writes.many(pending.store_interactions, scoped, c) for c in calls]
        )
    finally:
        writes.close()
    assert [[(r.id, r.status, r.code) for r in rs] for rs in results] == [
        [("i2", "accepted", 201)],
        [("i1", "duplicate", 200), ("i3", "accepted", 201)],
        [("i1", "rejected", 409)],
        [("i2", "duplicate", 200)],  # the same payload, sent twice into one group
    ]
    assert seen[-1] == 4
    assert [e["id"] for e in scoped.feedback(interaction_id="i3")] == ["e-early"]


def test_a_failing_call_rolls_back_alone(store: Store, scoped: TenantStore) -> None:
    def log_then_fail() -> None:
        scoped.log_interaction(_interaction("doomed"), "d")
        raise RuntimeError("this caller's bug")

    writes = GroupCommit(store)
    try:
        results = _in_one_group(
            writes,
            [
                lambda: writes(scoped.log_interaction, _interaction("i2"), "d2"),
                lambda: writes(log_then_fail),
                lambda: writes(scoped.log_interaction, _interaction("i1"), "other payload"),
                lambda: writes(scoped.log_interaction, _interaction("i3"), "d3"),
            ],
        )
    finally:
        writes.close()
    assert results[0] == ItemResult("i2", "accepted")
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], Conflict)
    assert results[3] == ItemResult("i3", "accepted")
    assert scoped.logged(["i1", "i2", "i3", "doomed"]) == {"i1", "i2", "i3"}


def test_a_merged_call_that_fails_runs_each_caller_alone(store: Store, scoped: TenantStore) -> None:
    def log_each(tenant: TenantStore, ids: list[str]) -> list[str]:
        for iid in ids:
            if iid == "bad":
                raise ValueError("one caller sent a bad item")
            tenant.log_interaction(_interaction(iid), iid)
        return ids

    writes = GroupCommit(store)
    try:
        results = _in_one_group(
            writes,
            [lambda ids=ids: writes.many(log_each, scoped, ids) for ids in (["a"], ["bad", "b"], ["c"])],
        )
    finally:
        writes.close()
    assert results[0] == ["a"] and results[2] == ["c"]
    assert isinstance(results[1], ValueError)
    assert scoped.logged(["a", "b", "c"]) == {"a", "c"}


def test_no_caller_is_acknowledged_when_the_group_cannot_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    store = Store(url, busy_timeout=0.2)
    tenant, _ = store.create_tenant("acme", redaction="off")
    scoped = store.for_tenant(tenant)
    other = sa.create_engine(url).connect()
    other.exec_driver_sql("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
    writes = GroupCommit(store)
    try:
        results = _in_one_group(
            writes, [lambda i=i: writes(scoped.log_interaction, _interaction(f"i{i}"), "d") for i in range(3)]
        )
    finally:
        other.exec_driver_sql("ROLLBACK")
        other.close()
        writes.close()
    assert all(isinstance(r, sa.exc.OperationalError) for r in results)
    assert scoped.logged(["i0", "i1", "i2"]) == set()
    store.close()


def test_feedback_is_stamped_received_once_its_commit_turn_is_taken(tmp_path: Path) -> None:
    """On SQLite, stamps follow commit order across server processes: none is taken while waiting a turn."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = Store(url)
    tenant, _ = store.create_tenant("acme", redaction="off")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(_interaction("i1"), "d1")
    other_worker, writes = commit_turns(url), GroupCommit(store)

    async def main() -> datetime:
        with other_worker():
            written = asyncio.ensure_future(writes.many(pending.store_feedback, scoped, [_event("e1")]))
            await asyncio.sleep(0.2)  # the writer waits for the turn meanwhile
            released = now_utc()
        await written
        return released

    try:
        released = asyncio.run(main())
        [event] = scoped.feedback()
    finally:
        writes.close()
        other_worker.close()
        store.close()
    assert event["received_at"] >= released


def test_a_caller_that_left_before_its_group_is_skipped_and_the_writer_lives_on(
    store: Store, scoped: TenantStore
) -> None:
    gate, entered = threading.Event(), threading.Event()
    writes = GroupCommit(store)

    def hold() -> None:
        entered.set()
        gate.wait()

    async def main() -> ItemResult:
        holding = asyncio.ensure_future(writes(hold))
        # The writer must be inside the first group before the next call queues, however loaded the CPU.
        assert await asyncio.to_thread(entered.wait, 30)
        left = asyncio.ensure_future(writes(scoped.log_interaction, _interaction("gone"), "d"))
        await asyncio.sleep(0.05)
        left.cancel()  # the client hung up while its write waited
        # The cancel reaches the queued call in a callback on the loop: let it run before the writer moves on.
        await asyncio.sleep(0.05)
        gate.set()
        await holding
        return await writes(scoped.log_interaction, _interaction("next"), "d")

    try:
        assert asyncio.run(main()) == ItemResult("next", "accepted")
    finally:
        gate.set()  # never leave the writer blocked, or close() waits on it
        writes.close()
    assert scoped.logged(["gone", "next"]) == {"next"}


def test_a_call_made_with_a_revoked_key_writes_nothing_and_the_others_stand(
    store: Store, scoped: TenantStore
) -> None:
    revoked, active = store.add_key("acme"), store.add_key("acme")
    store.revoke_key(revoked[:10])
    writes = GroupCommit(store)
    try:
        results = _in_one_group(
            writes,
            [
                lambda: writes.many(pending.store_feedback, scoped, [_event("e1")], key=revoked),
                lambda: writes.many(pending.store_feedback, scoped, [_event("e2")], key=active),
                lambda: writes(scoped.log_interaction, _interaction("i2"), "d2", key=revoked),
                lambda: writes(scoped.log_interaction, _interaction("i3"), "d3"),
            ],
        )
    finally:
        writes.close()
    assert isinstance(results[0], Unauthorized) and isinstance(results[2], Unauthorized)
    assert [r.status for r in results[1]] == ["accepted"] and results[3].status == "accepted"
    assert [e["id"] for e in scoped.feedback()] == ["e2"]
    assert scoped.logged(["i2", "i3"]) == {"i3"}
