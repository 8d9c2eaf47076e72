"""Win rates with Wilson score intervals: "candidate beats production", with its uncertainty."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (successes may be fractional: a tie counts half)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_change_p(worse: int, better: int) -> float:
    """One-sided exact McNemar p-value that a version is worse on paired items: P(X >= worse) for
    X ~ Binomial(worse + better, 1/2), where `worse`/`better` count the items whose verdict changed."""
    n = worse + better
    return sum(math.comb(n, k) for k in range(worse, n + 1)) / 2**n if n else 1.0


def binomial_at_most(successes: int, n: int, p: float) -> float:
    """P(X <= successes) for X ~ Binomial(n, p): the one-sided p-value that the true rate is below `p`."""
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(successes + 1)) if n else 1.0


def independent_count(outcomes: Sequence[bool], clusters: Sequence[str]) -> int:
    """How many independent outcomes `outcomes` are worth when those of one cluster go together: their number
    over the design effect (the cluster-robust variance of their share against the binomial one), which is
    never taken below 1. Held-out pairs of one prompt are ordered right or wrong together, and a test that
    counts each as independent declares a fit judge unfit far more often than its alpha."""
    n = len(outcomes)
    share = sum(outcomes) / n if n else 0.0
    groups: dict[str, list[bool]] = defaultdict(list)
    for outcome, cluster in zip(outcomes, clusters, strict=True):
        groups[cluster].append(outcome)
    if len(groups) == n:
        return n
    if len(groups) < 2 or share in (0.0, 1.0):  # no spread to measure: as many as the clusters
        return len(groups)
    spread = sum((sum(g) - share * len(g)) ** 2 for g in groups.values()) * len(groups) / (len(groups) - 1)
    design_effect = max(1.0, spread / (n * share * (1 - share)))
    return max(1, math.floor(n / design_effect))


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), clamped so that margins of hundreds of nats do not overflow."""
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def win_rate(differences: Iterable[float], tie_tolerance: float = 0.0) -> dict[str, Any]:
    """Candidate-minus-production differences → wins, ties, losses, win rate (ties count half) and its CI."""
    diffs = list(differences)
    wins = sum(d > tie_tolerance for d in diffs)
    losses = sum(d < -tie_tolerance for d in diffs)
    ties = len(diffs) - wins - losses
    n = len(diffs)
    rate = (wins + 0.5 * ties) / n if n else 0.0
    low, high = wilson_interval(wins + 0.5 * ties, n)
    return {
        "n": n,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "win_rate": round(rate, 4),
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
    }
