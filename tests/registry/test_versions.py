from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tuneloop.errors import Conflict, NotFound
from tuneloop.registry.versions import Registry
from tuneloop.store.repository import Store

RACERS = 6


def test_promotion_retires_the_previous_production_and_is_audited(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    registry = Registry(store.for_tenant(tenant))
    v1 = registry.register(kind="adapter", base_model="base", actor="test", snapshot_hash="s1")
    v2 = registry.register(kind="adapter", base_model="base", actor="test", snapshot_hash="s2")
    for version in (v1, v2):
        registry.move(version.id, "gated", actor="gate", reason="passed")
        registry.move(version.id, "production", actor="rollout", reason="won")
    assert registry.get(v1.id).state == "retired"
    assert registry.production().id == v2.id
    # Instant rollback: the previous version comes back in one move.
    registry.move(v1.id, "production", actor="operator", reason="incident")
    assert registry.production().id == v1.id and registry.get(v2.id).state == "retired"
    ok, summary = store.verify_audit()
    assert ok, summary


def test_illegal_move_is_refused_and_changes_nothing(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    registry = Registry(store.for_tenant(tenant))
    version = registry.register(kind="adapter", base_model="base", actor="test")
    with pytest.raises(Conflict, match="cannot move to production"):
        registry.move(version.id, "production", actor="x", reason="skip the gate")
    assert registry.get(version.id).state == "candidate"


def test_versions_of_another_tenant_are_invisible(store: Store) -> None:
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    version = Registry(store.for_tenant(a)).register(kind="adapter", base_model="base", actor="test")
    other = Registry(store.for_tenant(b))
    with pytest.raises(NotFound):
        other.get(version.id)
    with pytest.raises(NotFound):
        other.move(version.id, "blocked", actor="b", reason="sabotage")
    assert other.list() == []


def test_concurrent_promotions_leave_one_production_and_racing_decisions_one_outcome(store: Store) -> None:
    tenant = store.for_tenant(store.create_tenant(f"race-{uuid.uuid4().hex[:6]}")[0])
    registry = Registry(tenant)
    racers = [registry.register(kind="adapter", base_model="b", actor="t").id for _ in range(RACERS)]
    for vid in racers:
        registry.move(vid, "gated", actor="t", reason="passed")
    barrier = threading.Barrier(RACERS)

    def promote(vid: str) -> None:
        barrier.wait()
        registry.move(vid, "production", actor="t", reason="race")

    with ThreadPoolExecutor(RACERS) as pool:
        list(pool.map(promote, racers))
    assert len(registry.list(kind="adapter", state="production")) == 1

    waiting = registry.register(kind="adapter", base_model="b", actor="t").id
    registry.move(waiting, "gated", actor="t", reason="passed")
    registry.move(waiting, "pending_approval", actor="t", reason="needs a person")

    def decide(approve: bool) -> str:
        barrier.wait()
        try:
            (registry.approve if approve else registry.reject)(waiting, by="ann", reason="r", via="test")
        except Conflict:
            return "conflict"
        return "decided"

    with ThreadPoolExecutor(RACERS) as pool:
        outcomes = list(pool.map(decide, [i % 2 == 0 for i in range(RACERS)]))
    assert sorted(outcomes) == ["conflict"] * (RACERS - 1) + ["decided"]
