"""Agreement between reviewers: Krippendorff's alpha per task, and each reviewer's share of it.

alpha = 1 - D_o / D_e (observed over expected disagreement) handles any number of reviewers per item and
missing labels. A reviewer's own alpha keeps the task's D_e and measures their disagreement with the
consensus of the other reviewers of each item (their mean score, or their common choice where they
agree). A reviewer is flagged when the alpha of their latest `WINDOW` such items falls below `FLAG_BELOW`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from tuneloop.review.tasks import Task, labels
from tuneloop.store.repository import TenantStore

Units = Mapping[Any, Mapping[str, float]]  # unit (any key) -> reviewer -> value
Metric = Callable[[float, float], float]
FLAG_BELOW = 0.4  # below this, a reviewer agrees with colleagues little better than chance
WINDOW = 20
MIN_SHARED = 5  # fewer shared items say nothing about a reviewer


def nominal(a: float, b: float) -> float:
    return float(a != b)


def interval(a: float, b: float) -> float:
    return (a - b) ** 2


def _pairable(units: Units) -> dict[Any, Mapping[str, float]]:
    return {u: values for u, values in units.items() if len(values) >= 2}


def expected_disagreement(units: Units, metric: Metric) -> float | None:
    """D_e: mean disagreement of two values drawn from all pairable values; None without two of them."""
    values = [v for vals in _pairable(units).values() for v in vals.values()]
    n = len(values)
    if n < 2:
        return None
    total = sum(metric(a, b) for i, a in enumerate(values) for j, b in enumerate(values) if i != j)
    return total / (n * (n - 1))


def _observed(units: Units, metric: Metric) -> tuple[float, int]:
    """Sum of within-item disagreements (each pair weighted 1/(m-1)) and the number of values counted."""
    total, count = 0.0, 0
    for values in _pairable(units).values():
        m = len(values)
        for r, a in values.items():
            total += sum(metric(a, b) for s, b in values.items() if s != r) / (m - 1)
            count += 1
    return total, count


def alpha(units: Units, metric: Metric = nominal) -> float | None:
    """Krippendorff's alpha; None when nothing is pairable or every value is the same (undefined)."""
    expected = expected_disagreement(units, metric)
    observed, n = _observed(units, metric)
    if not expected or not n:
        return None
    return 1.0 - (observed / n) / expected


def consensus(values: Mapping[str, float], reviewer: str, metric: Metric) -> float | None:
    """What the other reviewers of an item said: their mean (interval) or their most common value
    (categories; None on a tie, when they do not agree among themselves)."""
    others = [v for r, v in values.items() if r != reviewer]
    if not others:
        return None
    if metric is interval:
        return sum(others) / len(others)
    counts = sorted(((others.count(v), v) for v in set(others)), reverse=True)
    return None if len(counts) > 1 and counts[0][0] == counts[1][0] else counts[0][1]


def reviewer_alpha(units: Units, reviewer: str, metric: Metric, expected: float | None) -> float | None:
    """The reviewer's alpha against the consensus of their colleagues, on the task's expected disagreement:
    one contrarian colleague does not drag down those who agree with the rest."""
    against = [
        metric(values[reviewer], c)
        for values in units.values()
        if reviewer in values and (c := consensus(values, reviewer, metric)) is not None
    ]
    if not expected or not against:
        return None
    return 1.0 - (sum(against) / len(against)) / expected


def label_value(task: Task, label: Mapping[str, Any]) -> float:
    """The number a label compares by: the chosen index, the score, or whether the answer was changed."""
    if task.kind == "pairwise":
        return float(label["chosen"])
    if task.kind == "rubric":
        return float(label["score"])
    return float(bool(label["edited"]))


def task_agreement(tenant: TenantStore, task: Task) -> dict[str, Any]:
    """Alpha for the task and each reviewer (overall and over their latest WINDOW shared items), flagged
    reviewers, and counts; scores compare as intervals, choices and corrections as categories."""
    metric = interval if task.kind == "rubric" else nominal
    units: dict[str, dict[str, float]] = {}
    when: dict[tuple[str, str], datetime] = {}
    for row in labels(tenant, task):
        units.setdefault(row.item_id, {})[row.reviewer] = label_value(task, row.label)
        when[(row.item_id, row.reviewer)] = row.labelled_at
    expected = expected_disagreement(units, metric)
    pairable = _pairable(units)
    reviewers = []
    for reviewer in sorted({r for values in units.values() for r in values}):
        shared = sorted(
            (when[(u, reviewer)], u)
            for u, values in pairable.items()
            if reviewer in values and consensus(values, reviewer, metric) is not None
        )
        recent = {u: pairable[u] for _, u in shared[-WINDOW:]}
        overall = reviewer_alpha(pairable, reviewer, metric, expected)
        latest = reviewer_alpha(recent, reviewer, metric, expected)
        flagged = len(shared) >= MIN_SHARED and latest is not None and latest < FLAG_BELOW
        reviewers.append({
            "reviewer": reviewer,
            "labels": sum(reviewer in values for values in units.values()),
            "shared": len(shared),
            "alpha": _round(overall),
            "recent_alpha": _round(latest),
            "flagged": flagged,
        })  # fmt: skip
    return {
        "task": task.id,
        "kind": task.kind,
        "metric": "interval" if metric is interval else "nominal",
        "alpha": _round(alpha(units, metric)),
        "items": len(units),
        "shared_items": len(pairable),
        "labels": sum(len(v) for v in units.values()),
        "reviewers": reviewers,
        "flagged": [r["reviewer"] for r in reviewers if r["flagged"]],
        "min_shared": MIN_SHARED,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
