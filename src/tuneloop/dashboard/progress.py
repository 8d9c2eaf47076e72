"""The Progress page: the tenant's improvement curve (each canary's effect with its interval, and both arms'
KPIs) and the candidates waiting for a person's approval."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tuneloop.clock import now_utc
from tuneloop.dashboard import readable
from tuneloop.dashboard.views import chart
from tuneloop.loop.turns import list_turns
from tuneloop.monitor.kpis import kpis_of
from tuneloop.registry.versions import Registry
from tuneloop.rollout.experiments import list_experiments
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore


def improvement(tenant: TenantStore, policy: RewardPolicy) -> dict[str, Any]:
    """One row per two-arm canary (oldest first, with the loop turn that started it) and the charts."""
    turn_of = {t.report.get("experiment"): t.turn for t in list_turns(tenant)}
    rows: list[dict[str, Any]] = []
    for exp in list_experiments(tenant):
        if exp.arms:  # a multi-arm experiment has no single treatment − control effect
            continue
        test = (exp.decision or {}).get("test") or {}
        until = (exp.ended_at or now_utc()) + timedelta(seconds=1)
        window, events = tenant.window(exp.started_at, until, experiment_id=exp.id)
        arms = {
            k.version: k for k in kpis_of(window, events, policy, since=exp.started_at, until=until, by="arm")
        }
        turn = turn_of.get(exp.id)
        rows.append({
            "label": f"turn {turn}: {exp.treatment_version}" if turn else exp.treatment_version,
            "experiment": exp,
            "state": readable.STATES.get(exp.state, exp.state),
            "metric": readable.kpi_name((exp.decision or {}).get("metric")),
            "effect": test.get("effect"),
            "low": test.get("ci_low"),
            "high": test.get("ci_high"),
            "control": arms.get("control"),
            "treatment": arms.get("treatment"),
        })  # fmt: skip
    charts: dict[str, dict] = {}
    decided = [r for r in rows if r["low"] is not None and r["high"] is not None]
    if decided:
        labels = [r["label"] for r in decided]
        config = readable.interval_chart(labels, [r["low"] for r in decided], [r["high"] for r in decided],
                                         [r["effect"] for r in decided], "treatment − control")  # fmt: skip
        charts["effects"] = {"title": "Each canary's effect on its primary KPI, with its interval", **config}
    if rows:
        series = {
            arm: [r[arm].positive_rate if r[arm] else None for r in rows] for arm in ("control", "treatment")
        }
        title = "Positive-feedback rate in each canary: production (control) and candidate (treatment)"
        charts["kpi"] = {"title": title, **chart("line", [r["label"] for r in rows], series, percent=True)}
    return {"rows": rows, "charts": charts}


def awaiting_approval(tenant: TenantStore) -> list[dict[str, Any]]:
    """Candidates the loop holds in `pending_approval`, with their gate verdicts, oldest first."""
    out = []
    for version in Registry(tenant).list(state="pending_approval"):
        gate = version.metrics.get("gate") or {}
        out.append({"v": version, "suites": gate.get("suites") or {}, "decision": gate.get("decision")})
    return out
