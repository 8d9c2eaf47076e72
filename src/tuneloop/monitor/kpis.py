"""KPIs per tenant x version x time window, from the interactions and feedback the tenant's store holds.

Definitions (each KPI of a bucket covers the interactions *created* in it, with all their feedback so far):
- volume: interactions served.
- positive / negative rate: share of interactions with reward evidence whose reward (under the tenant's
  `RewardPolicy`, the one its canary decides by) is > 0 / < 0. Interactions without feedback do not
  count either way.
- mean reward: mean of those rewards, each in [-1, 1].
- escalation rate: share of interactions with at least one `escalated` event.
- latency p50 / p95: of `latency_ms`, in milliseconds.
- error rate: share of interactions whose metadata carries a truthy `error` (what the app or gateway
  records when generation failed; a client disconnect is not an error).
- refusal rate: share of responses the pattern detector `evaluate.refusal.is_refusal` calls refusals.
- safety flags: interactions whose metadata has a truthy `safety_flag`, or with a truthy `outcome` event
  named in SAFETY_OUTCOMES.
- session KPIs (signals/sessions.py), over the sessions whose first answer is in the bucket: sessions,
  resolution rate and median time to resolution (s), median time to the first meaningful action (s),
  follow-up questions per question asked, and the share of sessions the same user came back about.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from tuneloop.clock import now_utc
from tuneloop.evaluate.refusal import is_refusal
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.rewards import compute_rewards
from tuneloop.signals.sessions import Session, session_kpis, sessions_of
from tuneloop.store.repository import TenantStore

BASE = "base"  # the version label of interactions served by the base model (no adapter)
SAFETY_OUTCOMES = ("safety_flag", "unsafe", "flagged")


@dataclass(frozen=True)
class KPI:
    """The KPIs of one version over one time bucket [start, end)."""

    version: str
    start: datetime
    end: datetime
    volume: int
    rated: int
    positive_rate: float | None
    negative_rate: float | None
    mean_reward: float | None
    escalation_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    error_rate: float | None
    refusal_rate: float | None
    safety_flags: int
    sessions: int
    resolution_rate: float | None
    resolution_p50_s: float | None
    first_action_p50_s: float | None
    followup_rate: float | None
    repeat_contact_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


GAUGE_FIELDS = (
    "volume",
    "positive_rate",
    "negative_rate",
    "mean_reward",
    "escalation_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "error_rate",
    "refusal_rate",
    "safety_flags",
    "sessions",
    "resolution_rate",
    "resolution_p50_s",
    "first_action_p50_s",
    "followup_rate",
    "repeat_contact_rate",
)


def rewards_of(
    rows: list[dict[str, Any]], events: list[dict[str, Any]], policy: RewardPolicy
) -> dict[str, float]:
    """Reward per interaction with evidence, under the tenant's reward `policy`, as of now."""
    if not events:
        return {}
    found = compute_rewards(rows, events, policy, now_utc())
    return {iid: r.reward for iid, r in found.items() if r.weight > 0}


def summarize(
    version: str,
    start: datetime,
    end: datetime,
    rows: list[dict[str, Any]],
    by_interaction: Mapping[str, list[dict[str, Any]]],
    rewards: Mapping[str, float],
    sessions: Sequence[Session] = (),
) -> KPI:
    """The KPI record of `rows` (one version, one bucket) and of the `sessions` that started in them."""
    n = len(rows)
    rated = [rewards[r["id"]] for r in rows if r["id"] in rewards]
    latencies = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    p50, p95 = np.percentile(latencies, [50, 95]).tolist() if latencies else (None, None)

    def share(count: int, of: int) -> float | None:
        return count / of if of else None

    return KPI(
        version=version,
        start=start,
        end=end,
        volume=n,
        rated=len(rated),
        positive_rate=share(sum(v > 0 for v in rated), len(rated)),
        negative_rate=share(sum(v < 0 for v in rated), len(rated)),
        mean_reward=float(np.mean(rated)) if rated else None,
        escalation_rate=share(sum(escalations(rows, by_interaction)), n),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        error_rate=share(sum(errors(rows)), n),
        refusal_rate=share(sum(is_refusal(r["response"]) for r in rows), n),
        safety_flags=sum(safety_flagged(r, by_interaction.get(r["id"], ())) for r in rows),
        **asdict(session_kpis(sessions)),
    )


def errors(rows: Iterable[Mapping[str, Any]]) -> list[bool]:
    """Per interaction: did generation fail (a truthy `error` in its metadata)?"""
    return [bool((r["metadata"] or {}).get("error")) for r in rows]


def escalations(
    rows: Iterable[Mapping[str, Any]], by_interaction: Mapping[str, list[dict[str, Any]]]
) -> list[bool]:
    """Per interaction: was it escalated (at least one `escalated` event among its grouped events)?"""
    return [any(e["kind"] == "escalated" for e in by_interaction.get(r["id"], ())) for r in rows]


def safety_flagged(row: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> bool:
    """Whether an interaction raised a safety flag: in its metadata, or by a safety outcome event."""
    if (row["metadata"] or {}).get("safety_flag"):
        return True
    return any(
        e["kind"] == "outcome" and e["value"]["name"] in SAFETY_OUTCOMES and bool(e["value"]["value"])
        for e in events
    )


def group_events(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["interaction_id"], []).append(event)
    return grouped


def kpis(
    tenant: TenantStore,
    policy: RewardPolicy,
    *,
    since: datetime,
    until: datetime | None = None,
    bucket: timedelta | None = None,
    by: str = "adapter_version",
) -> list[KPI]:
    """KPIs per version (or per `by` column, e.g. "arm") and per `bucket` of time; one bucket if None.

    Buckets start at `since`; only (version, bucket) pairs with traffic are returned, sorted by both.
    """
    until = until or now_utc()
    rows, events = tenant.window(since, until)
    return kpis_of(rows, events, policy, since=since, until=until, bucket=bucket, by=by)


def kpis_of(
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    policy: RewardPolicy,
    *,
    since: datetime,
    until: datetime,
    bucket: timedelta | None = None,
    by: str = "adapter_version",
) -> list[KPI]:
    """`kpis` over rows already loaded by `TenantStore.window`."""
    rewards = rewards_of(rows, events, policy)
    grouped = group_events(events)
    step = bucket or (until - since)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    cell_of: dict[str, tuple[str, int]] = {}
    for row in rows:
        index = int((row["created_at"] - since) / step) if bucket else 0
        cell_of[row["id"]] = (row[by] or BASE, index)
        cells.setdefault(cell_of[row["id"]], []).append(row)
    # A session counts where its first answer was served (a canary session in the canary's arm).
    started: dict[tuple[str, int], list[Session]] = {}
    for session in sessions_of(rows, events, policy):
        started.setdefault(cell_of[session.answers[0]], []).append(session)
    out = []
    for (version, index), members in sorted(cells.items()):
        start = since + index * step
        cell = started.get((version, index), [])
        out.append(summarize(version, start, min(start + step, until), members, grouped, rewards, cell))
    return out
