"""Retention: interactions older than the tenant's window go with their feedback and their snapshot rows;
recent rows and other tenants stay, and the run is audited by counts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.privacy.traffic import BOB, capture, feedback_of, interactions_of, write
from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.clock import now_utc
from tuneloop.config import tenant_policy_file
from tuneloop.loop import Loop
from tuneloop.privacy.retention import apply_retention
from tuneloop.retrieve.search import log_retrieval
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import DATASETS, create_snapshot, get_snapshot
from tuneloop.store.repository import Store
from tuneloop.store.schema import audit_log, retrievals

RECENT = ["Which card suits travel abroad best, recent question?"]


def _policy(home: Path, tenant: str, text: str) -> None:
    path = tenant_policy_file(home, tenant, "privacy_policy.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_rows_older_than_the_window_go_recent_ones_and_other_tenants_stay(
    db_url: str, tuneloop_home: Path
) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(db_url, secret=settings.hash_key())
    acme, beta = (store.for_tenant(store.create_tenant(n, redaction="off")[0]) for n in ("acme", "beta"))
    old = now_utc() - timedelta(days=40)
    for tenant in (acme, beta):
        capture(tenant, settings, created_at=old)
    write(
        acme, settings, interactions_of("r", BOB, RECENT), feedback_of("r", ["Take the travel card."]), None
    )
    snapshot = create_snapshot(acme, tuneloop_home, RewardPolicy())
    _policy(tuneloop_home, "acme", "retention_days: 30\n")

    done = apply_retention(acme, tuneloop_home)

    assert done is not None and (done.interactions, done.feedback) == (6, 20)
    assert done.snapshots == [snapshot.hash]
    assert [i["id"] for i in acme.interactions()] == ["r0"]
    assert {e["interaction_id"] for e in acme.feedback()} == {"r0"}
    assert (len(beta.interactions()), len(beta.feedback())) == (6, 20)
    trimmed = get_snapshot(acme, snapshot.hash)
    lineage = {i for name in DATASETS for row in trimmed.rows(name) for i in row.get("interaction_ids") or ()}
    assert trimmed.erased_at is not None and lineage <= {"r0"}
    assert apply_retention(acme, tuneloop_home).interactions == 0  # nothing more is due
    assert apply_retention(beta, tuneloop_home) is None  # no window: everything is kept
    assert store.verify_audit()[0]
    [row] = [r for r in store.for_tenant(acme.tenant).all(audit_log) if r.action == "retention.run"]
    assert (row.details["interactions"], row.details["feedback"], row.details["days"]) == (6, 20, 30)
    store.close()


def test_keep_leaves_snapshots_frozen_while_raw_rows_go(tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    acme = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    capture(acme, settings, created_at=now_utc() - timedelta(days=400))
    snapshot = create_snapshot(acme, tuneloop_home, RewardPolicy())
    _policy(tuneloop_home, "acme", "retention_days: 365\nsnapshot_retention: keep\n")

    assert main(["retention", "run"]) == 0

    assert acme.interactions() == []
    assert get_snapshot(acme, snapshot.hash).erased_at is None
    store.close()


def test_retrievals_older_than_the_window_go_with_or_without_an_interaction(tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    acme = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    _policy(tuneloop_home, "acme", "retention_days: 30\n")
    old = log_retrieval(acme, [], ranker="embedding", interaction_id="app-request-7")  # /v1/retrieve's id
    recent = log_retrieval(acme, [], ranker="embedding")
    acme.transaction(
        lambda tx: tx.update(retrievals, retrievals.c.id == old, created_at=now_utc() - timedelta(days=40))
    )

    assert apply_retention(acme, tuneloop_home) is not None

    assert [r.id for r in acme.all(retrievals)] == [recent]
    store.close()


def test_the_loops_scheduled_checks_apply_retention(tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    acme = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    capture(acme, settings, created_at=now_utc() - timedelta(days=40))
    _policy(tuneloop_home, "acme", "retention_days: 30\n")

    Loop(acme, settings).check()

    assert acme.interactions() == [] and acme.feedback() == []
    store.close()
