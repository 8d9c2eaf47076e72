"""What each dashboard page shows, assembled from the store for one tenant; routes.py only renders it.

Charts are Chart.js configs built here as plain dicts; static/dashboard.js draws every `<canvas data-chart>`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuneloop.clock import now_utc, utc
from tuneloop.dashboard import readable
from tuneloop.errors import NotFound
from tuneloop.learn.privacy import budget_text
from tuneloop.monitor.alerts import latest_check, list_alerts
from tuneloop.monitor.kpis import KPI, kpis, kpis_of
from tuneloop.registry.composition import made_of
from tuneloop.registry.versions import Registry, Version
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore
from tuneloop.store.schema import audit_log

KPI_CHARTS = (
    ("volume", "Interactions", False),
    ("positive_rate", "Positive-feedback rate", True),
    ("mean_reward", "Mean reward", False),
    ("escalation_rate", "Escalation rate", True),
    ("latency_p95_ms", "Latency p95 (ms)", False),
    ("latency_p50_ms", "Latency p50 (ms)", False),
    ("error_rate", "Error rate", True),
    ("refusal_rate", "Refusal rate", True),
    ("safety_flags", "Safety flags", False),
)


def chart(
    kind: str, labels: list[str], series: dict[str, list[Any]], *, percent: bool = False, signed: bool = False
) -> dict:
    """A Chart.js config; dashboard.js shows `percent` on [0, 100%] and starts others at 0 unless `signed`."""
    return {
        "type": kind,
        "data": {
            "labels": labels,
            "datasets": [{"label": name, "data": values} for name, values in series.items()],
        },
        "percent": percent,
        "signed": signed,
    }


def bucket_for(days: int) -> timedelta:
    return timedelta(hours=1) if days <= 2 else timedelta(days=1)


def _label(moment: datetime, step: timedelta) -> str:
    return moment.strftime("%m-%d %H:00" if step < timedelta(days=1) else "%Y-%m-%d")


def kpi_charts(records: list[KPI], since: datetime, until: datetime, step: timedelta) -> dict[str, dict]:
    """One line chart per KPI, a line per version, over every bucket of the window (gaps where no traffic)."""
    count = max(1, int((until - since) / step + 0.999))
    starts = [since + i * step for i in range(count)]
    labels = [_label(s, step) for s in starts]
    index = {s: i for i, s in enumerate(starts)}
    versions = sorted({k.version for k in records})
    charts = {}
    for name, title, percent in KPI_CHARTS:
        series: dict[str, list[Any]] = {v: [None] * count for v in versions}
        for k in records:
            if k.start in index:
                series[k.version][index[k.start]] = getattr(k, name)
        signed = name == "mean_reward"
        charts[name] = {"title": title, **chart("line", labels, series, percent=percent, signed=signed)}
    return charts


def kpi_page(tenant: TenantStore, policy: RewardPolicy, days: int) -> dict[str, Any]:
    until = now_utc()
    step = bucket_for(days)
    # Align buckets to the step so labels read as whole hours or days.
    since = _floor(until - timedelta(days=days), step)
    records = kpis(tenant, policy, since=since, until=until, bucket=step)
    totals = kpis(tenant, policy, since=since, until=until)
    return {"days": days, "charts": kpi_charts(records, since, until, step), "totals": totals}


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return epoch + ((moment - epoch) // step) * step


def tenant_summary(tenant: TenantStore, policy: RewardPolicy) -> dict[str, Any]:
    """The tenants-page row: production, canary, the last day's traffic, open alerts."""
    from tuneloop.rollout.experiments import active_experiment

    since = now_utc() - timedelta(days=1)
    day = kpis(tenant, policy, since=since, by="tenant_id")
    production = Registry(tenant).production()
    experiment = active_experiment(tenant)
    return {
        "name": tenant.tenant.name,
        "created_at": tenant.tenant.created_at,
        "production": production.id if production else "base model",
        "canary": experiment.treatment_version if experiment else None,
        "volume": day[0].volume if day else 0,
        "positive_rate": day[0].positive_rate if day else None,
        "open_alerts": len(list_alerts(tenant, status="open")),
    }


def volume_chart(tenants: Iterable[TenantStore], days: int = 14) -> dict:
    """Daily interactions per tenant, for the tenants page."""
    step = timedelta(days=1)
    until = now_utc()
    since = _floor(until - timedelta(days=days), step)
    count = max(1, int((until - since) / step + 0.999))
    labels = [_label(since + i * step, step) for i in range(count)]
    series = {}
    for tenant in tenants:
        values = [0] * count
        rows, _ = tenant.window(since, until)
        for row in rows:
            values[min(count - 1, int((row["created_at"] - since) / step))] += 1
        series[tenant.tenant.name] = values
    return chart("bar", labels, series)


def lineage(tenant: TenantStore) -> list[dict[str, Any]]:
    """Versions as a depth-first tree (parent before children), each with its state history and DP budget."""
    versions = Registry(tenant).list()
    history = Registry(tenant).history()
    known = {v.id for v in versions}
    children: dict[str | None, list[Version]] = {}
    for v in versions:
        children.setdefault(v.parent_id if v.parent_id in known else None, []).append(v)
    out: list[dict[str, Any]] = []

    def walk(parent: str | None, depth: int) -> None:
        for v in children.get(parent, []):
            privacy = budget_text(v.metrics)
            item = {"v": v, "made_of": made_of(v), "depth": depth, "history": history.get(v.id, [])}
            out.append({**item, "privacy": privacy})
            walk(v.id, depth + 1)

    walk(None, 0)
    return out


def audit_rows(tenant: TenantStore, limit: int = 200) -> list[dict[str, Any]]:
    """The tenant's newest audit rows (rows of other tenants and global rows are never read)."""
    rows = tenant.all(audit_log, order_by=(audit_log.c.seq.desc(),), limit=limit)
    return [{**dict(r._mapping), "created_at": utc(r.created_at)} for r in rows]


def gate_rows(tenant: TenantStore) -> list[dict[str, Any]]:
    rows = []
    for v in Registry(tenant).list(kind="adapter"):
        gate = v.metrics.get("gate") or {}
        if v.gate_report or gate:
            rows.append({"v": v, "decision": gate.get("decision"), "suites": gate.get("suites") or {}})
    return rows


def gate_report_html(tenant: TenantStore, home: Path, version_id: str) -> str | None:
    """The stored HTML gate report of a version (report.html beside the linked report.json), or None."""
    from tuneloop.evaluate.report import render_html

    version = Registry(tenant).get(version_id)
    if not version.gate_report:
        return None
    root = (Path(home) / "reports" / tenant.tenant_id).resolve()
    json_path = Path(version.gate_report).resolve()
    if not json_path.is_relative_to(root):  # only this tenant's report folder is ever served
        return None
    html_path = json_path.with_suffix(".html")
    if html_path.exists():
        return html_path.read_text()
    if json_path.exists():
        import json

        return render_html(json.loads(json_path.read_text()))
    raise NotFound(
        f"The gate report of {version_id} is no longer on disk (an erasure deletes the reports that quoted "
        "an erased user's data); its verdict stays in the audit log."
    )


def canary_view(tenant: TenantStore, policy: RewardPolicy) -> dict[str, Any] | None:
    """The live canary: experiment, per-arm KPIs and chart, the decision's interval and guardrails; None if
    the tenant has no running or paused experiment."""
    from tuneloop.rollout.experiments import active_experiment

    experiment = active_experiment(tenant)
    if experiment is None:
        return None
    until = now_utc()
    since = experiment.started_at
    rows, events = tenant.window(since, until + timedelta(seconds=1), experiment_id=experiment.id)
    arms = kpis_of(rows, events, policy, since=since, until=until, by="arm")
    span = until - since
    step = timedelta(hours=1) if span <= timedelta(days=2) else timedelta(days=1)
    start = _floor(since, step)
    over_time = kpis_of(rows, events, policy, since=start, until=until, bucket=step, by="arm")
    decision = experiment.decision or {}
    test = decision.get("test") or {}
    by_arm = _arm_chart(over_time, start, until, step)
    charts = {"positive_rate": {"title": "Cumulative positive-feedback rate by arm", **by_arm}}
    if test.get("ci_low") is not None and test.get("ci_high") is not None:
        metric = readable.kpi_name(decision.get("metric"))
        config = readable.interval_chart([metric], [test["ci_low"]], [test["ci_high"]], [test.get("effect")],
                                         "treatment − control")  # fmt: skip
        charts["interval"] = {"title": f"Treatment − control in {metric}: estimate and interval", **config}
    guardrails = decision.get("guardrails") or experiment.policy.get("guardrails") or {}
    if guard_chart := readable.guardrail_chart(guardrails):
        charts["guardrails"] = {"title": "Guardrails: how far each rate rose at least, and what is tolerated",
                                **guard_chart}  # fmt: skip
    return {
        "experiment": experiment,
        "arms": arms,
        "decision": decision,
        "verdict": readable.canary_verdict(experiment),
        "state": readable.STATES.get(experiment.state, experiment.state),
        "srm": readable.srm_text(decision.get("srm_p"), float(experiment.policy.get("srm_p", 0.001))),
        "guardrails": readable.guardrail_rows(guardrails),
        "charts": charts,
    }


def _arm_chart(records: list[KPI], since: datetime, until: datetime, step: timedelta) -> dict:
    """Each arm's cumulative positive-feedback rate at the end of every bucket: what the test sees."""
    count = max(1, int((until - since) / step + 0.999))
    labels = [_label(since + (i + 1) * step, step) for i in range(count)]
    per_bucket: dict[str, list[tuple[int, int]]] = {}
    for k in records:
        cells = per_bucket.setdefault(k.version, [(0, 0)] * count)
        positive = round((k.positive_rate or 0.0) * k.rated)
        cells[min(count - 1, int((k.start - since) / step))] = (positive, k.rated)
    series: dict[str, list[Any]] = {}
    for arm, cells in sorted(per_bucket.items()):
        positives = rated = 0
        values: list[Any] = []
        for p, n in cells:
            positives, rated = positives + p, rated + n
            values.append(positives / rated if rated else None)
        series[arm] = values
    return chart("line", labels, series, percent=True)


def drift_view(tenant: TenantStore) -> dict[str, Any]:
    """The last stored drift check with its charts, and the alert history."""
    check = latest_check(tenant)
    charts: dict[str, dict] = {}
    tests = (check or {}).get("tests", [])
    for test in tests:
        details = test["details"]
        if test["kind"] == "length_drift":
            edges = details["edges"]
            labels = [f"{edges[i]:.0f}-{edges[i + 1]:.0f}" for i in range(len(edges) - 1)]
            series = {"reference": details["reference"], "current": details["current"]}
            title = "Response length (chars), share per bin"
            charts["length"] = {"title": title, **chart("bar", labels, series)}
        elif test["kind"] == "feedback_drift":
            series = {"positive rate": [details["reference_rate"], details["current_rate"]]}
            charts["feedback"] = {
                "title": "Positive-feedback rate",
                **chart("bar", ["reference", "current"], series, percent=True),
            }
        elif test["kind"] == "input_drift":
            points = details["projection"]
            series = {name: [{"x": x, "y": y} for x, y in points[name]] for name in ("reference", "current")}
            title = "Prompt embeddings, first two principal axes"
            charts["input"] = {"title": title, **chart("scatter", [], series, signed=True)}
    return {"check": check, "tests": tests, "charts": charts, "alerts": list(reversed(list_alerts(tenant)))}
