"""Retention: a tenant's interactions older than its window, with their feedback, and its retrieval records
older than it are deleted on schedule (the loop's scheduled checks, or `tuneloop retention run`), and
audited by counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tuneloop.clock import now_utc
from tuneloop.config import tenant_policy
from tuneloop.privacy.policy import PrivacyPolicy
from tuneloop.privacy.rows import Doomed, delete_rows, select_rows
from tuneloop.signals.snapshots import list_snapshots, trim_snapshot
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import feedback, interactions, retrievals


@dataclass(frozen=True)
class Retention:
    """What one retention run deleted: rows older than `cutoff`, and the snapshots trimmed of them."""

    cutoff: datetime
    interactions: int
    feedback: int
    snapshots: list[str]


def apply_retention(
    tenant: TenantStore, home: Path, *, now: datetime | None = None, actor: str = "retention"
) -> Retention | None:
    """Delete what the tenant's `retention_days` no longer allows; None when its policy keeps everything."""
    policy = tenant_policy(home, tenant.tenant.name, PrivacyPolicy)
    if policy.retention_days is None:
        return None
    cutoff = (now or now_utc()) - timedelta(days=policy.retention_days)

    def select(tx: TenantTx) -> Doomed:
        return select_rows(tx, [interactions.c.created_at < cutoff], [feedback.c.received_at < cutoff])

    old_retrievals = retrievals.c.created_at < cutoff  # also those of /v1/retrieve, named by the app's ids
    with tenant.reading() as tx:
        doomed = select(tx)
        stale = tx.first(retrievals, old_retrievals, columns=(retrievals.c.id,)) is not None
    if not doomed.interactions and not doomed.events and not stale:
        return Retention(cutoff, 0, 0, [])
    trimmed = []
    if policy.snapshot_retention == "trim":
        trim = doomed.trim()
        for snapshot in list_snapshots(tenant):
            if trim.touches(snapshot):
                trim_snapshot(tenant, snapshot, trim)
                trimmed.append(snapshot.hash)

    def purge(tx: TenantTx) -> tuple[int, int]:
        counts = delete_rows(tx, doomed | select(tx))
        tx.delete(retrievals, old_retrievals)
        tx.audit(
            actor=actor,
            action="retention.run",
            subject=tenant.tenant.name,
            details={
                "days": policy.retention_days,
                "cutoff": cutoff.isoformat(),
                "interactions": counts[0],
                "feedback": counts[1],
                "snapshots": trimmed,
            },
        )
        return counts

    removed_interactions, removed_feedback = tenant.purge(purge)
    tenant.store.reclaim()
    return Retention(cutoff, removed_interactions, removed_feedback, trimmed)
