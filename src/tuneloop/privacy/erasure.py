"""Forget one end user of a tenant: their rows leave the store (and its disk pages), every snapshot and file
under HOME that held them, and the versions trained on them leave service by the tenant's privacy policy.

Each step can run again, so an erasure cut short is finished by repeating it: versions are marked first,
then snapshots and files are rewritten, and the rows those steps are found from are deleted last.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneloop.capture import pending
from tuneloop.config import KEY_FILE, tenant_policy
from tuneloop.errors import BadRequest
from tuneloop.privacy.lineage import reranked_since, trained_on, withdraw
from tuneloop.privacy.policy import PrivacyPolicy
from tuneloop.privacy.residue import Needles, Owner, Residue, scrub_home
from tuneloop.privacy.rows import Doomed, delete_rows, first_retrieval, select_rows, texts_of
from tuneloop.signals.snapshots import list_snapshots, trim_snapshot
from tuneloop.store.engine import sqlite_files
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import feedback, interactions


@dataclass(frozen=True)
class Erasure:
    """What one erasure did, by reference only: its request id, counts, snapshot hashes and version ids."""

    request: str
    interactions: int
    feedback: int
    snapshots: list[str]
    snapshot_rows: int
    versions: dict[str, str]
    files: Residue
    disk_clean: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def forget_user(tenant: TenantStore, home: Path, user: str, *, actor: str = "cli") -> Erasure:
    """Erase the end user whose identifier is stored as `user` (capture's `identifier` of the raw id).

    Deleted: their interactions, all feedback on those, feedback they gave (as `rater`) and events that
    name their interactions. The audit log gets a request id and counts, never the identifier."""
    if not user:
        raise BadRequest("name the user to forget", param="user")
    request = f"er-{uuid.uuid4().hex[:12]}"
    raters = {user, f"user:{user}"}  # how snapshots name a rater: the stored id, or the user of a thumbs

    def select(tx: TenantTx) -> Doomed:
        return select_rows(tx, [interactions.c.user_id == user], [feedback.c.rater == user])

    with tenant.reading() as tx:
        doomed = select(tx)
        texts = texts_of(tx, doomed)
        shown_from = first_retrieval(tx, doomed)
    trim = doomed.trim(raters)
    held = [s for s in list_snapshots(tenant) if trim.touches(s)]
    policy = tenant_policy(home, tenant.tenant.name, PrivacyPolicy)
    affected = trained_on(tenant, [s.hash for s in held]) + reranked_since(tenant, shown_from)
    states = withdraw(tenant, affected, policy, request=request, actor=actor)
    snapshot_rows = sum(trim_snapshot(tenant, s, trim) for s in held)
    # Model files and the redaction key hold no captured text, and a chance match must never take them; the
    # store's own files are handled by `Store.reclaim`.
    skip = [home / "snapshots", home / "models", home / KEY_FILE, *sqlite_files(tenant.store.engine.url)]
    owner = Owner(tenant.tenant_id, tenant.tenant.name)
    files = scrub_home(home, Needles.of(texts, raters), owner, skip)

    def purge(tx: TenantTx) -> tuple[int, int, int]:
        waiting = pending.forget(tx, user)  # events they gave that still wait for their interaction
        counts = delete_rows(tx, doomed | select(tx))  # and rows that arrived meanwhile
        tx.audit(
            actor=actor,
            action="user.forget",
            subject=request,
            details={
                "interactions": counts[0],
                "feedback": counts[1],
                "snapshots": [s.hash for s in held],
                "snapshot_rows": snapshot_rows,
                "versions": states,
                "files_rewritten": len(files.rewritten),
                "files_removed": len(files.removed),
            },
        )
        return (*counts, waiting)

    removed_interactions, removed_feedback, removed_waiting = tenant.purge(purge)
    # Rebuilding the file holds every tenant's writes for seconds: only when some row of theirs went.
    any_removed = bool(removed_interactions or removed_feedback or removed_waiting)
    return Erasure(
        request=request,
        interactions=removed_interactions,
        feedback=removed_feedback,
        snapshots=[s.hash for s in held],
        snapshot_rows=snapshot_rows,
        versions=states,
        files=files,
        disk_clean=tenant.store.reclaim(vacuum=any_removed),
    )
