"""Leases on tenants' loops: at most one worker advances a tenant's turn, and a dead worker's lease expires.

One row per tenant in `loop_leases` (holder, fencing token, expiry). Acquiring is one transaction: insert the
row if missing, then take it only where it has expired or is already ours, bumping the token. The rowcount
decides, on both stores: PostgreSQL re-checks the UPDATE's WHERE against a row a concurrent transaction just
committed, and SQLite serialises writers. Expiry compares the workers' clocks, so keep them in sync (NTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tuneloop.clock import now_utc, utc
from tuneloop.store.repository import Store
from tuneloop.store.schema import loop_leases

NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # the expiry of a lease nobody holds


@dataclass(frozen=True)
class Lease:
    """A held lease: `token` grows with every acquisition, so a stale holder's token no longer matches."""

    tenant_id: str
    holder: str
    token: int


class Leases:
    """Acquire, renew, check and release tenants' loop leases lasting `ttl` seconds."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = timedelta(seconds=ttl)

    def acquire(self, tenant_id: str, holder: str) -> Lease | None:
        """Take the tenant's lease if it is free, expired or ours already; None while another holds it."""
        row = {"tenant_id": tenant_id, "holder": None, "token": 0, "expires_at": NEVER}
        with self.store.write() as conn:
            conn.execute(self.store._insert(loop_leases).values(**row).on_conflict_do_nothing())
            now = now_utc()
            taken = conn.execute(
                loop_leases.update()
                .where(
                    loop_leases.c.tenant_id == tenant_id,
                    sa.or_(loop_leases.c.expires_at <= now, loop_leases.c.holder == holder),
                )
                .values(holder=holder, token=loop_leases.c.token + 1, expires_at=now + self.ttl)
            ).rowcount
            if not taken:
                return None
            token = conn.execute(
                sa.select(loop_leases.c.token).where(loop_leases.c.tenant_id == tenant_id)
            ).scalar_one()
        return Lease(tenant_id, holder, token)

    def renew(self, lease: Lease) -> bool:
        """Extend the lease by `ttl` from now; False when it was lost (taken by another after expiring)."""
        with self.store.write() as conn:
            return bool(
                conn.execute(
                    loop_leases.update().where(*_mine(lease)).values(expires_at=now_utc() + self.ttl)
                ).rowcount
            )

    def holds(self, lease: Lease) -> bool:
        """Whether `lease` is still held and unexpired: checked before each stage of a turn is recorded."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(loop_leases.c.expires_at).where(*_mine(lease))).first()
        return row is not None and utc(row.expires_at) > now_utc()

    def release(self, lease: Lease) -> None:
        """Give the lease up at once (a clean exit), so another worker need not wait for it to expire."""
        with self.store.write() as conn:
            conn.execute(loop_leases.update().where(*_mine(lease)).values(holder=None, expires_at=NEVER))

    def holders(self) -> dict[str, str]:
        """Tenant id → holder of every unexpired lease (for status pages and tests)."""
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(loop_leases.c.tenant_id, loop_leases.c.holder, loop_leases.c.expires_at).where(
                    loop_leases.c.holder.isnot(None)
                )
            ).all()
        now = now_utc()
        return {r.tenant_id: r.holder for r in rows if utc(r.expires_at) > now}


def _mine(lease: Lease) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        loop_leases.c.tenant_id == lease.tenant_id,
        loop_leases.c.holder == lease.holder,
        loop_leases.c.token == lease.token,
    )
