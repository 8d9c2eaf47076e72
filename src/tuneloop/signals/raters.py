"""Rater reliability (one-coin Dawid-Skene on binary votes) and the per-rater contribution cap."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.records import Record, as_of, one_tenant, rater_of, record_hash

Item = tuple[str, ...]


@dataclass(frozen=True)
class RaterReport:
    """Each rater's weight in [0, 1], estimated accuracy and overlapping-vote count; the flagged raters."""

    weights: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    overlap: dict[str, int] = field(default_factory=dict)
    flagged: tuple[str, ...] = ()


def binary_votes(interactions: Mapping[str, Record], events: Iterable[Record]) -> dict[tuple[Item, str], int]:
    """Each rater's latest +1/-1 vote per item: an answer (thumbs; rating >= 4 or <= 2) or a pair.

    Anonymous events are left out: a vote nobody can be held to says nothing about a rater.
    """
    votes: dict[tuple[Item, str], int] = {}
    for event in events:  # sorted by time, so a later vote replaces an earlier one
        iid = event["interaction_id"]
        rater = rater_of(event, interactions.get(iid))
        if rater is None:
            continue
        kind, value = event["kind"], event["value"]
        item: Item | None = None
        vote = 0
        if kind == "thumbs":
            item, vote = ("answer", iid), int(value)
        elif kind == "rating" and value != 3:
            item, vote = ("answer", iid), 1 if value >= 4 else -1
        elif kind == "preference":
            if "chosen_interaction" in value:
                chosen, rejected = value["chosen_interaction"], value["rejected_interaction"]
            else:
                chosen, rejected = f"{iid}#{value['chosen']}", f"{iid}#{value['rejected']}"
            first, second = sorted((chosen, rejected))
            item, vote = ("pair", first, second), 1 if chosen == first else -1
        if item is not None:
            votes[(item, rater)] = vote
    return votes


def estimate_raters(
    interactions: Iterable[Record], events: Iterable[Record], policy: RewardPolicy, now: Any
) -> RaterReport:
    """Each rater's agreement with the consensus, by EM over items that at least two raters voted on."""
    interactions, events = list(interactions), list(events)
    one_tenant(interactions, events)
    by_id, seen = as_of(interactions, events, now)
    votes = binary_votes(by_id, seen)
    everyone = sorted({r for e in seen if (r := rater_of(e, by_id.get(e["interaction_id"]))) is not None})
    raters_per_item: dict[Item, set[str]] = {}
    for item, rater in votes:
        raters_per_item.setdefault(item, set()).add(rater)
    shared = sorted(item for item, raters in raters_per_item.items() if len(raters) >= 2)
    voters = sorted({r for (item, r) in votes if len(raters_per_item[item]) >= 2})
    accuracy = _one_coin_em(votes, shared, voters, policy.rater_prior_accuracy, policy.rater_prior_strength)
    overlap = {r: 0 for r in everyone}
    for item, rater in votes:
        if len(raters_per_item[item]) >= 2:
            overlap[rater] += 1
    prior = policy.rater_prior_accuracy
    acc = {r: accuracy.get(r, prior) for r in everyone}
    # Accuracy 0.5 is a coin flip and below it is worse: both get weight 0; the prior accuracy gets 1.
    weights = {r: round(min(1.0, max(0.0, (a - 0.5) / (prior - 0.5))), 6) for r, a in acc.items()}
    flagged = tuple(r for r in everyone if overlap[r] > 0 and weights[r] < policy.rater_flag_below)
    return RaterReport(
        weights=weights, accuracy={r: round(a, 6) for r, a in acc.items()}, overlap=overlap, flagged=flagged
    )


def _one_coin_em(
    votes: Mapping[tuple[Item, str], int], items: list[Item], raters: list[str], prior: float, strength: float
) -> dict[str, float]:
    """Each rater's probability of voting with the true label (one accuracy per rater, both classes alike)."""
    if not items:
        return {}
    item_ix = {item: i for i, item in enumerate(items)}
    rater_ix = {r: j for j, r in enumerate(raters)}
    rows = [(item_ix[item], rater_ix[r], v) for (item, r), v in sorted(votes.items()) if item in item_ix]
    t, j, v = (np.array(col) for col in zip(*rows, strict=True))
    positive = np.bincount(t, weights=(v > 0).astype(float), minlength=len(items))
    count = np.bincount(t, minlength=len(items)).astype(float)
    q = (positive + 1) / (count + 2)  # start from the (smoothed) majority vote
    per_rater = np.bincount(j, minlength=len(raters)).astype(float)
    acc = np.full(len(raters), prior)
    for _ in range(200):
        agree = np.where(v > 0, q[t], 1 - q[t])
        acc = (np.bincount(j, weights=agree, minlength=len(raters)) + prior * strength) / (
            per_rater + strength
        )
        acc = np.clip(acc, 1e-3, 1 - 1e-3)
        pi = float(np.clip(q.mean(), 0.05, 0.95))
        logits = np.bincount(t, weights=v * np.log(acc[j] / (1 - acc[j])), minlength=len(items))
        new_q = 1 / (1 + np.exp(-(math.log(pi / (1 - pi)) + logits)))
        done = float(np.max(np.abs(new_q - q))) < 1e-10
        q = new_q
        if done:
            break
    return {r: float(acc[rater_ix[r]]) for r in raters}


def cap_limit(totals: Mapping[str | None, float], cap: float, integer: bool = False) -> float:
    """The most any one rater may contribute so that none holds more than `cap` of the total (water-filling).

    `totals[None]` is anonymous contribution: it counts in the total but is never capped. With fewer named
    raters than 1/cap, the cap becomes 1/(number of named raters), so a small team is balanced, not erased.
    """
    anonymous = float(totals.get(None, 0.0))
    named = [float(t) for r, t in totals.items() if r is not None and t > 0]
    if not named:
        return math.inf
    cap = max(cap, 1.0 / len(named))
    top = max(named)

    def fits(limit: float) -> bool:
        return min(top, limit) <= cap * (anonymous + sum(min(t, limit) for t in named)) + 1e-9

    if fits(top):
        return math.inf
    # The feasible limits form an interval [0, L]: the slack is concave in the limit and non-negative at 0.
    low, high = 0.0, top
    if integer:
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def cap_weights(totals: Mapping[str | None, float], cap: float) -> dict[str | None, float]:
    """A multiplier in (0, 1] per named rater that holds each to at most `cap` of the total weight."""
    limit = cap_limit(totals, cap)
    return {r: min(1.0, limit / t) if r is not None and t > 0 else 1.0 for r, t in totals.items()}


def cap_rows(rows: list[dict[str, Any]], cap: float, key: str = "rater") -> list[dict[str, Any]]:
    """The rows, less the fewest needed so that no rater (row[key]) owns more than `cap` of them.

    Which of a rater's rows stay is decided by content hash, so the choice is stable.
    """
    counts: dict[str | None, float] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    limit = cap_limit(counts, cap, integer=True)
    if math.isinf(limit):
        return list(rows)
    keep: set[int] = set()
    by_rater: dict[str | None, list[int]] = {}
    for i, row in enumerate(rows):
        by_rater.setdefault(row[key], []).append(i)
    for rater, indexes in by_rater.items():
        if rater is None or len(indexes) <= limit:
            keep.update(indexes)
        else:
            keep.update(sorted(indexes, key=lambda i: record_hash(rows[i]))[: int(limit)])
    return [row for i, row in enumerate(rows) if i in keep]
