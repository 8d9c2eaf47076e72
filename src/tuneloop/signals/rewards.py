"""Per-interaction reward in [-1, 1] with a confidence in [0, 1], from its feedback events under a policy."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tuneloop.clock import utc
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.raters import cap_weights
from tuneloop.signals.records import Record, as_of, one_tenant, owner, rater_of
from tuneloop.signals.sessions import session_contributions, sessions_of

# Kinds whose event says one fixed thing about the event's own interaction.
_DIRECTION = {
    "accepted": 1.0,
    "copied": 1.0,
    "edit": -1.0,
    "regenerated": -1.0,
    "followup": -1.0,
    "escalated": -1.0,
    "abandoned": -1.0,
}


@dataclass(frozen=True)
class Reward:
    """One interaction's reward, its confidence, the evidence weight behind it and the events it came from."""

    interaction_id: str
    reward: float
    confidence: float
    weight: float
    event_ids: tuple[str, ...]
    rater: str | None  # who supplied over half its evidence weight, if anyone: charged by the row cap


def contributions(event: Record, interactions: Mapping[str, Record], policy: RewardPolicy) -> list[tuple]:
    """(interaction id, value in [-1, 1], kind weight) for each answer the event speaks about."""
    w, kind, value, iid = policy.weights, event["kind"], event["value"], event["interaction_id"]
    if kind == "thumbs":
        return [(iid, float(value), w.thumbs)]
    if kind == "rating":
        return [(iid, (value - 3) / 2, w.rating)]
    if kind == "preference":
        if "chosen_interaction" in value:
            return [
                (value["chosen_interaction"], 1.0, w.preference),
                (value["rejected_interaction"], -1.0, w.preference),
            ]
        # Only choice 0 is the interaction's own answer; other choices have no reward of their own.
        side = {value["chosen"]: 1.0, value["rejected"]: -1.0}
        return [(iid, side[0], w.preference)] if 0 in side and iid in interactions else []
    if kind in _DIRECTION:
        return [(iid, _DIRECTION[kind], getattr(w, kind))]
    if kind == "outcome" and value["name"] in policy.outcomes:
        weight = policy.outcomes[value["name"]]
        raw = value["value"]
        # Clamped before float(): an integer past float range stored before ingest refused them must not
        # raise OverflowError in every reward, KPI and /metrics read of the tenant.
        outcome = (1.0 if raw else -1.0) if isinstance(raw, bool) else float(max(-1.0, min(1.0, raw)))
        return [(iid, math.copysign(1.0, weight) * outcome, abs(weight))]
    if kind == "score" and value["name"] in policy.scores:
        mapping = policy.scores[value["name"]]
        reward = mapping.reward(value["data_type"], value["value"])
        weight = mapping.weight
        if weight is None:
            weight = getattr(w, mapping.kind) if mapping.kind != "reward" else 1.0
        return [] if reward is None else [(iid, reward, weight)]
    return []  # comment, dwell_ms, unlisted outcomes and unmapped scores carry no reward


def event_weight(
    event: Record,
    interactions: Mapping[str, Record],
    policy: RewardPolicy,
    now: datetime,
    rater_weights: Mapping[str, float] | None = None,
) -> float:
    """The event's multiplier before its kind weight: source weight x time decay x its rater's weight."""
    weight = policy.source_weights.get(event.get("source", "user"), 1.0)
    if policy.half_life_days is not None:
        age_days = max(0.0, (utc(now) - utc(event["created_at"])).total_seconds() / 86400)
        weight *= 0.5 ** (age_days / policy.half_life_days)
    rater = rater_of(event, interactions.get(event["interaction_id"]))
    if rater is not None and rater_weights is not None:
        weight *= rater_weights.get(rater, 1.0)
    return weight


def confidence(weight: float, policy: RewardPolicy) -> float:
    """Confidence that grows with evidence weight: 1 - exp(-w / k)."""
    return 1.0 - math.exp(-max(0.0, weight) / policy.confidence_scale)


def compute_rewards(
    interactions: Iterable[Record],
    events: Iterable[Record],
    policy: RewardPolicy,
    now: datetime,
    rater_weights: Mapping[str, float] | None = None,
) -> dict[str, Reward]:
    """The reward of every interaction with evidence, as of `now` (later events are unseen).

    Evidence is a weighted mean of the events' values; each rater's total weight is capped at
    `policy.rater_cap` of all evidence, so no one rater decides the dataset.
    """
    interactions, events = list(interactions), list(events)
    one_tenant(interactions, events)
    by_id, seen = as_of(interactions, events, now)
    parts: list[tuple[str, float, float, str | None, str | None]] = []
    for event in seen:
        base = event_weight(event, by_id, policy, now, rater_weights)
        rater = rater_of(event, by_id.get(event["interaction_id"]))
        for iid, value, kind_weight in contributions(event, by_id, policy):
            if iid in by_id and base * kind_weight > 0:
                parts.append((iid, value, base * kind_weight, event["id"], rater))
    for iid, value, weight in session_contributions(sessions_of(by_id.values(), seen, policy), policy):
        # No event carries a session signal: it is its user's evidence, dated by the answer it speaks about.
        signal = {"interaction_id": iid, "created_at": by_id[iid]["created_at"], "source": "user"}
        base = event_weight(signal, by_id, policy, now, rater_weights)
        parts.append((iid, value, base * weight, None, rater_of(signal, by_id[iid])))
    totals: dict[str | None, float] = {}
    for _, _, weight, _, rater in parts:
        totals[rater] = totals.get(rater, 0.0) + weight
    scale = cap_weights(totals, policy.rater_cap)
    grouped: dict[str, list[tuple[float, float, str | None, str | None]]] = {}
    for iid, value, weight, event_id, rater in parts:
        grouped.setdefault(iid, []).append((value, weight * scale.get(rater, 1.0), event_id, rater))
    rewards = {}
    for iid, items in sorted(grouped.items()):
        total = sum(weight for _, weight, _, _ in items)
        if total + policy.prior_weight <= 0:  # its evidence has all decayed away: no reward to give
            continue
        mean = sum(value * weight for value, weight, _, _ in items) / (total + policy.prior_weight)
        by_rater: dict[str | None, float] = {}
        for _, weight, _, rater in items:
            by_rater[rater] = by_rater.get(rater, 0.0) + weight
        rewards[iid] = Reward(
            interaction_id=iid,
            reward=round(max(-1.0, min(1.0, mean)), 6),
            confidence=round(confidence(total, policy), 6),
            weight=round(total, 6),
            event_ids=tuple(sorted({event_id for _, _, event_id, _ in items if event_id})),
            rater=owner(by_rater),
        )
    return rewards
