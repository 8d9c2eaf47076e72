"""Alerts: drift and KPI findings stored per tenant, open until the condition clears or a turn handles them.

`run_checks` is what the loop's schedule (and the dashboard's button) calls: it raises an alert for each
kind that drifted and has none open, and resolves the open ones whose check ran again and came back clean.
`pending_alerts` is what the loop reads to decide whether to start a turn early, and `resolve_alerts` closes
the ones a turn has taken up. A drift that lasts does not pile up alerts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tuneloop.clock import now_utc, utc
from tuneloop.monitor.drift import DriftReport, check_drift
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import alerts, drift_checks

AlertStatus = Literal["open", "resolved"]


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    status: AlertStatus
    statistic: float
    threshold: float
    p_value: float | None
    message: str
    details: dict[str, Any]
    created_at: datetime
    handled_at: datetime | None = None
    handled_by: str | None = None


def raise_alerts(tenant: TenantStore, report: DriftReport, actor: str = "monitor") -> list[Alert]:
    """Store an open alert for each drifted test whose kind has no open alert yet; returns the new ones."""
    drifted = report.drifted
    if not drifted:
        return []
    created: list[str] = []

    def insert(tx: TenantTx) -> None:
        created.clear()
        tx.serialize()  # one open alert per kind, also when two checks finish at once
        open_kinds = {r.kind for r in tx.all(alerts, alerts.c.status == "open", columns=(alerts.c.kind,))}
        now = now_utc()
        for test in drifted:
            if test.kind in open_kinds:
                continue
            alert_id = f"al-{uuid.uuid4().hex[:12]}"
            details = {
                "method": test.method,
                "reference_n": test.reference_n,
                "current_n": test.current_n,
                "reference_window": [t.isoformat() for t in report.reference],
                "current_window": [t.isoformat() for t in report.current],
            }
            tx.insert(
                alerts,
                id=alert_id,
                kind=test.kind,
                status="open",
                statistic=test.statistic,
                threshold=test.threshold,
                p_value=test.p_value,
                message=test.message,
                details=details,
                created_at=now,
            )
            tx.audit(
                actor=actor,
                action="alert.open",
                subject=alert_id,
                details={"kind": test.kind, "message": test.message},
            )
            created.append(alert_id)

    tenant.transaction(insert)
    return [a for a in list_alerts(tenant) if a.id in created]


def run_checks(
    tenant: TenantStore, policy: RewardPolicy, actor: str = "monitor", **windows: Any
) -> tuple[DriftReport, list[Alert]]:
    """Check drift (keyword arguments go to `check_drift`), keep the report, raise alerts for what drifted;
    rewards are read under the tenant's reward `policy`."""
    report = check_drift(tenant, policy, **windows)
    tenant.transaction(
        lambda tx: tx.insert(
            drift_checks,
            id=f"dc-{uuid.uuid4().hex[:12]}",
            drifted=[t.kind for t in report.drifted],
            report=json.loads(json.dumps(report.as_dict(), default=str)),
            created_at=now_utc(),
        )
    )
    raised = raise_alerts(tenant, report, actor)
    clean = {t.kind for t in report.tests if not t.drifted}
    cleared = [a.id for a in pending_alerts(tenant) if a.kind in clean]
    if cleared:
        resolve_alerts(tenant, cleared, actor=actor, reason="the condition cleared at the next check")
    return report, raised


def latest_check(tenant: TenantStore) -> dict[str, Any] | None:
    """The newest stored drift report (as JSON: windows are ISO strings), with its `checked_at`."""
    newest = tenant.all(drift_checks, order_by=(drift_checks.c.created_at.desc(),), limit=1)
    row = newest[0] if newest else None
    return {**row.report, "checked_at": utc(row.created_at)} if row else None


def pending_alerts(tenant: TenantStore) -> list[Alert]:
    """Open alerts, oldest first: the loop's trigger for an early turn."""
    return list_alerts(tenant, status="open")


def list_alerts(tenant: TenantStore, status: AlertStatus | None = None, limit: int = 200) -> list[Alert]:
    where = [alerts.c.status == status] if status else []
    rows = tenant.all(alerts, *where, order_by=(alerts.c.created_at.desc(), alerts.c.id), limit=limit)
    return sorted((_alert(r) for r in rows), key=lambda a: (a.created_at, a.id))


def resolve_alerts(tenant: TenantStore, alert_ids: list[str], *, actor: str, reason: str) -> int:
    """Close open alerts (after the loop acted on them); returns how many were open."""

    def update(tx: TenantTx) -> int:
        closed = tx.update(
            alerts,
            alerts.c.id.in_(alert_ids),
            alerts.c.status == "open",
            status="resolved",
            handled_at=now_utc(),
            handled_by=actor,
        )
        if closed:
            tx.audit(
                actor=actor,
                action="alert.resolve",
                subject=",".join(sorted(alert_ids)),
                details={"reason": reason, "closed": closed},
            )
        return closed

    return tenant.transaction(update)


def _alert(row: sa.Row) -> Alert:
    data = dict(row._mapping)
    data.pop("tenant_id")
    data["created_at"] = utc(data["created_at"])
    data["handled_at"] = utc(data["handled_at"]) if data["handled_at"] else None
    return Alert(**data)
