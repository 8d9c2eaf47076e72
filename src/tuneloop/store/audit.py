"""The append-only audit log: each row carries the hash of the one before it, so edits show."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tuneloop.clock import now_utc, utc
from tuneloop.store.schema import audit_log

GENESIS = "0" * 64


def chain_hash(
    prev_hash: str,
    seq: int,
    tenant_id: str | None,
    actor: str,
    action: str,
    subject: str,
    details: dict,
    created_at: datetime,
) -> str:
    """SHA-256 over the previous hash and the row's canonical JSON."""
    body = json.dumps(
        [seq, tenant_id, actor, action, subject, details, created_at.astimezone(UTC).isoformat()],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None: JSON (and PostgreSQL) has no NaN or Infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def append(
    conn: sa.Connection,
    *,
    tenant_id: str | None,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one row inside the caller's transaction; returns its sequence number."""
    details = json_safe(json.loads(json.dumps(details or {}, default=str)))
    last = conn.execute(
        sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    now = now_utc()
    # Two writers that read the same head collide on the primary key; the loser's transaction fails
    # and is retried by the caller's transaction machinery, so the chain never forks.
    conn.execute(
        audit_log.insert().values(
            seq=seq,
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            subject=subject,
            details=details,
            created_at=now,
            prev_hash=prev,
            hash=chain_hash(prev, seq, tenant_id, actor, action, subject, details, now),
        )
    )
    return seq


def verify(conn: sa.Connection) -> tuple[bool, str]:
    """Walk the whole chain; (True, summary) or (False, the first broken row and why)."""
    prev = GENESIS
    count = 0
    for row in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)):
        count += 1
        if row.seq != count:
            return False, f"audit row {row.seq}: expected sequence number {count} (a row was removed)"
        if row.prev_hash != prev:
            return False, f"audit row {row.seq}: prev_hash does not match row {row.seq - 1}"
        expected = chain_hash(
            prev, row.seq, row.tenant_id, row.actor, row.action, row.subject, row.details, utc(row.created_at)
        )
        if row.hash != expected:
            return False, f"audit row {row.seq}: contents do not match its hash (the row was altered)"
        prev = row.hash
    return True, f"audit log intact: {count} rows"
