"""Alerts: drift findings stored per tenant, open until a loop turn handles them.

`run_checks` is what a schedule calls; `pending_alerts` is what the loop reads to decide whether to start a
turn early, and `resolve_alerts` closes the ones a turn has acted on. An alert of a kind that is already
open is not raised again, so a drift that lasts does not pile up alerts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tuneloop.monitor.drift import DriftReport, check_drift
from tuneloop.store import audit
from tuneloop.store.repository import TenantStore, aware, now_utc
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

    def insert(conn: sa.Connection) -> None:
        created.clear()
        open_kinds = set(
            conn.execute(
                sa.select(alerts.c.kind).where(
                    alerts.c.tenant_id == tenant.tenant_id, alerts.c.status == "open"
                )
            ).scalars()
        )
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
            conn.execute(
                alerts.insert().values(
                    tenant_id=tenant.tenant_id,
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
            )
            audit.append(
                conn,
                tenant_id=tenant.tenant_id,
                actor=actor,
                action="alert.open",
                subject=alert_id,
                details={"kind": test.kind, "message": test.message},
            )
            created.append(alert_id)

    tenant.store.retrying(insert)
    return [a for a in list_alerts(tenant) if a.id in created]


def run_checks(
    tenant: TenantStore, actor: str = "monitor", **windows: Any
) -> tuple[DriftReport, list[Alert]]:
    """Check drift (keyword arguments go to `check_drift`), keep the report, raise alerts for what drifted."""
    report = check_drift(tenant, **windows)
    with tenant.store.write() as conn:
        conn.execute(
            drift_checks.insert().values(
                tenant_id=tenant.tenant_id,
                id=f"dc-{uuid.uuid4().hex[:12]}",
                drifted=[t.kind for t in report.drifted],
                report=json.loads(json.dumps(report.as_dict(), default=str)),
                created_at=now_utc(),
            )
        )
    return report, raise_alerts(tenant, report, actor)


def latest_check(tenant: TenantStore) -> dict[str, Any] | None:
    """The newest stored drift report (as JSON: windows are ISO strings), with its `checked_at`."""
    with tenant.store.read() as conn:
        row = conn.execute(
            sa.select(drift_checks)
            .where(drift_checks.c.tenant_id == tenant.tenant_id)
            .order_by(drift_checks.c.created_at.desc())
            .limit(1)
        ).first()
    return {**row.report, "checked_at": aware(row.created_at)} if row else None


def pending_alerts(tenant: TenantStore) -> list[Alert]:
    """Open alerts, oldest first: the loop's trigger for an early turn."""
    return list_alerts(tenant, status="open")


def list_alerts(tenant: TenantStore, status: AlertStatus | None = None, limit: int = 200) -> list[Alert]:
    query = sa.select(alerts).where(alerts.c.tenant_id == tenant.tenant_id)
    if status:
        query = query.where(alerts.c.status == status)
    query = query.order_by(alerts.c.created_at.desc(), alerts.c.id).limit(limit)
    with tenant.store.read() as conn:
        rows = conn.execute(query).all()
    return sorted((_alert(r) for r in rows), key=lambda a: (a.created_at, a.id))


def resolve_alerts(tenant: TenantStore, alert_ids: list[str], *, actor: str, reason: str) -> int:
    """Close open alerts (after the loop acted on them); returns how many were open."""

    def update(conn: sa.Connection) -> int:
        closed = conn.execute(
            alerts.update()
            .where(
                alerts.c.tenant_id == tenant.tenant_id,
                alerts.c.id.in_(alert_ids),
                alerts.c.status == "open",
            )
            .values(status="resolved", handled_at=now_utc(), handled_by=actor)
        ).rowcount
        if closed:
            audit.append(
                conn,
                tenant_id=tenant.tenant_id,
                actor=actor,
                action="alert.resolve",
                subject=",".join(sorted(alert_ids)),
                details={"reason": reason, "closed": closed},
            )
        return closed

    return tenant.store.retrying(update)


def _alert(row: sa.Row) -> Alert:
    data = dict(row._mapping)
    data.pop("tenant_id")
    data["created_at"] = aware(data["created_at"])
    data["handled_at"] = aware(data["handled_at"]) if data["handled_at"] else None
    return Alert(**data)
