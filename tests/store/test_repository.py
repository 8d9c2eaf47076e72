from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tuneloop.errors import BadRequest, Conflict, NotFound, Unauthorized
from tuneloop.store.repository import Arrival, Store, insert_rows, payload_hash
from tuneloop.store.schema import audit_log, feedback


def _interaction(iid: str, text: str = "hello") -> dict:
    return {"id": iid, "messages": [{"role": "user", "content": text}], "response": "hi", "choices": ["hi"]}


def _event(eid: str, iid: str, kind: str = "thumbs", value: object = 1) -> tuple[dict, str]:
    event = {"id": eid, "interaction_id": iid, "kind": kind, "value": value, "source": "user"}
    return event, payload_hash(event)


def test_api_key_names_its_tenant_and_is_stored_hashed(store: Store) -> None:
    tenant, key = store.create_tenant("acme")
    assert store.authenticate(key).tenant == tenant
    with store.read() as conn:
        stored = conn.execute(sa.text("select key_hash from api_keys")).scalars().all()
    assert key not in stored
    with pytest.raises(Unauthorized):
        store.authenticate("tl-not-a-key")


def test_a_key_is_revoked_by_its_first_ten_characters_or_the_whole_key(store: Store) -> None:
    _, first = store.create_tenant("acme")
    second, third = store.add_key("acme"), store.add_key(None)
    with pytest.raises(NotFound, match="pass the whole key"):
        store.revoke_key(first[:14])  # what follows the prefix cannot be checked short of the whole key
    assert store.key_active(first)
    assert store.revoke_key(first[:10]) == first[:10]
    assert store.revoke_key(second) == second[:10]
    with pytest.raises(NotFound, match="first 10 characters"):
        store.revoke_key(first[:10])
    assert not store.key_active(first) and not store.key_active(second) and store.key_active(third)


def test_duplicate_event_id_is_stored_once(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(_interaction("i1"), "d1")
    first = scoped.add_feedback([_event("e1", "i1")])
    again = scoped.add_feedback([_event("e1", "i1"), _event("e1", "i1")])
    assert [r.status for r in first] == ["accepted"]
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert len(scoped.feedback()) == 1


def test_conflicting_duplicate_event_is_rejected_with_409(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(_interaction("i1"), "d1")
    scoped.add_feedback([_event("e1", "i1", value=1)])
    [result] = scoped.add_feedback([_event("e1", "i1", value=-1)])
    assert (result.status, result.code) == ("rejected", 409)
    assert scoped.feedback()[0]["value"] == 1


def test_conflicting_interaction_id_raises_conflict(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    assert scoped.log_interaction(_interaction("i1"), "d1").status == "accepted"
    assert scoped.log_interaction(_interaction("i1"), "d1").status == "duplicate"
    with pytest.raises(Conflict):
        scoped.log_interaction(_interaction("i1", "other"), "d2")


def test_tenant_handle_cannot_see_or_touch_another_tenants_rows(store: Store) -> None:
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    store_a, store_b = store.for_tenant(a), store.for_tenant(b)
    store_a.log_interaction(_interaction("shared-id"), "d")
    store_a.add_feedback([_event("e1", "shared-id")])
    with pytest.raises(NotFound):
        store_b.get_interaction("shared-id")
    [result] = store_b.add_feedback([_event("e2", "shared-id")])
    assert (result.status, result.code) == ("rejected", 404)
    assert store_b.feedback() == [] and store_b.interactions() == []
    # The same ids are free for tenant B: ids are per tenant.
    assert store_b.log_interaction(_interaction("shared-id"), "d").status == "accepted"
    assert store_b.add_feedback([_event("e1", "shared-id")])[0].status == "accepted"
    assert len(store_a.feedback()) == 1


def test_paging_after_an_event_returns_the_others_received_with_it(store: Store) -> None:
    acme, beta = (store.for_tenant(store.create_tenant(name)[0]) for name in ("acme", "beta"))
    for scoped in (beta, acme):
        scoped.log_interaction(_interaction("i1"), "d1")
        scoped.add_feedback([_event(f"e{i}", "i1") for i in range(5)])  # one transaction: one received_at
    acme.add_feedback([_event("later", "i1")])
    first = acme.feedback(limit=2)
    rest = acme.feedback(after=Arrival(first[-1]["received_at"], first[-1]["id"]))
    assert [e["id"] for e in first + rest] == ["e0", "e1", "e2", "e3", "e4", "later"]
    assert len({e["received_at"] for e in first + rest[:3]}) == 1
    assert [e["id"] for e in acme.feedback(since=first[-1]["received_at"])] == ["later"]


def test_event_pointing_outside_the_interactions_choices_is_rejected(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(_interaction("i1"), "d1")
    [result] = scoped.add_feedback([_event("p1", "i1", "preference", {"chosen": 0, "rejected": 1})])
    assert result.status == "rejected" and "1 choice" in (result.error or "")


def test_audit_chain_verifies_and_detects_a_tampered_row(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    store.for_tenant(tenant).transaction(
        lambda tx: tx.audit(actor="tester", action="version.promote", subject="v1", details={"why": "better"})
    )
    ok, summary = store.verify_audit()
    assert ok, summary
    with store.write() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 2).values(actor="mallory"))
    ok, summary = store.verify_audit()
    assert not ok and "row 2" in summary


def test_audit_chain_detects_a_deleted_row(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    with store.write() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 2))
    ok, summary = store.verify_audit()
    assert not ok and "removed" in summary


def test_reopening_the_store_keeps_data_and_migrates_idempotently(db_url: str) -> None:
    first = Store(db_url)
    first.create_tenant("acme")
    first.close()
    second = Store(db_url)
    assert [t.name for t in second.tenants()] == ["acme"]
    second.close()


@pytest.mark.parametrize("name", ["аdmin", "Admin", "-acme", "a b", "", "x" * 65, "acme/../b"])
def test_tenant_names_are_lowercase_ascii(store: Store, name: str) -> None:
    with pytest.raises(BadRequest, match="lowercase ASCII"):
        store.create_tenant(name)


def test_an_unknown_tenant_name_of_any_length_is_named_briefly(store: Store) -> None:
    with pytest.raises(NotFound) as found:
        store.tenant_by_name("x" * 5000)
    assert len(found.value.message) < 200


def test_rows_inserted_in_bulk_are_stored_as_sqlalchemy_stores_them(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bulk.db'}")
    bulk, _ = store.create_tenant("bulk")
    plain, _ = store.create_tenant("plain")
    when = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)
    values = [1, True, 1.5, None, "yes", {"a": [1, None, "é"]}, ["x"], False, 0]
    rows = [
        {
            "id": f"e{i}",
            "interaction_id": "i1",
            "kind": "thumbs",
            "value": value,
            "rater": None if i % 2 else "r",
            "source": "user",
            "metadata": None if i % 3 else {"k": i},
            "payload_hash": "h",
            "created_at": when + timedelta(seconds=i % 2),
            "received_at": when,
        }
        for i, value in enumerate(values)
    ]
    with store.write() as conn:
        insert_rows(conn, feedback, [{**row, "tenant_id": bulk.id} for row in rows])
        conn.execute(feedback.insert(), [{**row, "tenant_id": plain.id} for row in rows])
    as_text = [sa.cast(c, sa.Text).label(c.name) for c in feedback.c if c.name != "tenant_id"]
    with store.read() as conn:
        stored = {
            tenant.id: conn.execute(
                sa.select(*as_text).where(feedback.c.tenant_id == tenant.id).order_by(feedback.c.id)
            ).all()
            for tenant in (bulk, plain)
        }
    assert stored[bulk.id] == stored[plain.id]
    assert [r.value for r in stored[bulk.id]][:2] == ["1", "true"]
