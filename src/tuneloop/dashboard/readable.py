"""Stored decisions as a person reads them: the canary's verdict in words, rounded figures, and intervals
as chart configs (a floating bar from the interval's low end to its high end, the estimate as a point)."""

from __future__ import annotations

from typing import Any

from tuneloop.rollout.experiments import Experiment

KPI_NAMES = {
    "mean_reward": "mean reward",
    "positive_rate": "positive-feedback rate",
    "escalation_rate": "escalation rate",
    "safety_flag_rate": "safety-flag rate",
    "error_rate": "error rate",
    "p95_latency": "share of answers slower than the latency limit",
}
STATES = {
    "running": "running",
    "paused": "paused by hand: every user gets control",
    "promoted": "promoted: the treatment became production",
    "rolled_back": "rolled back: control kept serving",
    "halted": "halted: traffic did not split as designed",
}


def kpi_name(metric: str | None) -> str:
    return KPI_NAMES.get(metric or "", (metric or "primary KPI").replace("_", " "))


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def interval_chart(
    labels: list[str], lows: list[Any], highs: list[Any], points: list[Any], unit: str
) -> dict:
    """A horizontal chart of intervals (floating bars) with their estimates (points), one row per label."""
    return {
        "type": "bar",
        "data": {
            "labels": labels,
            "datasets": [
                {
                    "label": f"95 % interval ({unit})",
                    "data": [[lo, hi] for lo, hi in zip(lows, highs, strict=True)],
                },
                {
                    "label": "estimate",
                    "data": points,
                    "type": "line",
                    "showLine": False,
                    "pointRadius": 6,
                    "order": 0,
                },
            ],
        },
        "percent": False,
        "signed": True,
        "horizontal": True,
    }


def canary_verdict(exp: Experiment) -> dict[str, str]:
    """What the canary has decided, or where it stands, in one or two sentences; `tone` colours it."""
    d = exp.decision or {}
    test = d.get("test") or {}
    metric = kpi_name(d.get("metric"))
    control = exp.control_version or "the base model"
    level = f"{1 - float(exp.policy.get('alpha', 0.05)):.0%}"
    if not test:
        return {"tone": "wait", "text": f"Waiting for traffic: no look at {exp.treatment_version} yet."}
    effect, low, high = test.get("effect"), test.get("ci_low"), test.get("ci_high")
    users = f"{test.get('n_treatment', 0)} users on the treatment, {test.get('n_control', 0)} on control"
    where = (
        f"{exp.treatment_version} differs from {control} by {_f(effect)} in {metric} "
        f"(always-valid {level} interval {_f(low)} to {_f(high)}; {users})."
    )
    if exp.state == "promoted":
        return {"tone": "ok", "text": f"Promoted: {where}"}
    if exp.state in ("rolled_back", "halted"):
        return {
            "tone": "bad",
            "text": f"{STATES[exp.state].capitalize()} ({d.get('reason', 'by hand')}). {where}",
        }
    if exp.state == "paused":
        return {"tone": "wait", "text": f"Paused by hand: every user gets control. So far {where}"}
    if low is not None and high is not None and low <= 0 <= high:
        why = "The interval still holds both harm and benefit, so the test keeps watching."
    else:
        why = f"The controller's next step: {d.get('action', 'continue')}."
    return {"tone": "wait", "text": f"Still deciding. So far {where} {why}"}


def guardrail_rows(guardrails: dict[str, Any]) -> list[dict[str, Any]]:
    """Each guardrail's verdict, both arms' rates and the bound compared with the tolerance, rounded."""
    rows = []
    for name, g in guardrails.items():
        if not isinstance(g, dict):  # a setting from the policy, before the first look
            rows.append({"name": kpi_name(name), "status": "not checked yet", "breached": False,
                         "detail": f"setting: {g}"})  # fmt: skip
            continue
        rows.append({
            "name": kpi_name(name),
            "status": "breached" if g.get("breached") else "within tolerance",
            "breached": bool(g.get("breached")),
            "control": g.get("control_rate"),
            "treatment": g.get("treatment_rate"),
            "bound": g.get("lower_bound"),
            "tolerance": g.get("tolerance"),
            "detail": (
                f"the treatment's rise is at least {_f(100 * g['lower_bound'], 1)} points; "
                f"at most {_f(100 * g['tolerance'], 1)} is tolerated"
                if g.get("lower_bound") is not None and g.get("tolerance") is not None
                else g.get("reason", "")
            ),
        })  # fmt: skip
    return rows


def guardrail_chart(guardrails: dict[str, Any]) -> dict | None:
    """Each guardrail's always-valid lower bound beside its tolerance (a breach: the bound passes it)."""
    checked = {
        n: g for n, g in guardrails.items() if isinstance(g, dict) and g.get("lower_bound") is not None
    }
    if not checked:
        return None
    return {
        "type": "bar",
        "data": {
            "labels": [kpi_name(n) for n in checked],
            "datasets": [
                {
                    "label": "lower bound of the treatment's rise",
                    "data": [g["lower_bound"] for g in checked.values()],
                },
                {"label": "tolerated rise", "data": [g["tolerance"] for g in checked.values()]},
            ],
        },
        "percent": False,
        "signed": True,
        "horizontal": True,
    }


def srm_text(p_value: float | None, threshold: float) -> str:
    if p_value is None:
        return "not checked yet"
    verdict = "split as designed" if p_value >= threshold else "split NOT as designed (the test is halted)"
    return f"users {verdict} (sample-ratio check p = {p_value:.2g}, halts below {threshold:g})"
