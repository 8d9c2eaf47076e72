"""Pausing a tenant's loop: a stored row while paused, so every process that runs the loop skips it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tuneloop.clock import now_utc, utc
from tuneloop.errors import Conflict
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import loop_pauses


@dataclass(frozen=True)
class Pause:
    paused_by: str
    reason: str
    paused_at: datetime

    def describe(self, tenant: str) -> str:
        return (
            f"{tenant}'s loop is paused since {self.paused_at:%Y-%m-%d %H:%M} UTC by {self.paused_by} "
            f"({self.reason}); `tuneloop loop resume --tenant {tenant}` resumes it"
        )


def paused(tenant: TenantStore) -> Pause | None:
    """The tenant's pause, or None while its loop runs."""
    row = tenant.first(loop_pauses)
    return Pause(row.paused_by, row.reason, utc(row.paused_at)) if row else None


def pause(tenant: TenantStore, *, actor: str, reason: str) -> Pause:
    """Stop the tenant's loop from starting or advancing turns until `resume` (a live canary keeps its
    share: pause it with `tuneloop rollout pause`)."""

    def apply(tx: TenantTx) -> None:
        if tx.first(loop_pauses):
            raise Conflict(f"{tenant.tenant.name}'s loop is paused already")
        tx.insert(loop_pauses, paused_by=actor, reason=reason, paused_at=now_utc())
        tx.audit(actor=actor, action="loop.pause", subject=tenant.tenant.name, details={"reason": reason})

    tenant.transaction(apply)
    found = paused(tenant)
    assert found is not None
    return found


def resume(tenant: TenantStore, *, actor: str, reason: str) -> None:
    """Let the tenant's loop run again; its open turn carries on where it stopped."""

    def apply(tx: TenantTx) -> None:
        if not tx.delete(loop_pauses, loop_pauses.c.paused_at.isnot(None)):
            raise Conflict(f"{tenant.tenant.name}'s loop is not paused")
        tx.audit(actor=actor, action="loop.resume", subject=tenant.tenant.name, details={"reason": reason})

    tenant.transaction(apply)
