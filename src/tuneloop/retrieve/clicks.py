"""A position-based click model: users open a source only if they looked at its position (θ_rank) and
found it relevant (γ_item). Fitted by EM on logged impressions, it separates the two, so a source clicked
because it was shown first is not mistaken for the best one (Wang et al., WSDM 2018, regression-EM)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

ITERATIONS = 60
# Each item's relevance is shrunk toward the mean relevance by this many pseudo-impressions: an item shown
# only where few users look has little evidence, and must not outrank well-known ones on a guess.
SMOOTHING = 2.0


@dataclass(frozen=True)
class Impression:
    """One result shown at `rank` (1 = top) and whether the user opened it."""

    item: str
    rank: int
    clicked: bool


@dataclass(frozen=True)
class ClickModel:
    """Examination probability per rank (θ, top = 1) and relevance per item (γ)."""

    examination: tuple[float, ...]
    relevance: dict[str, float]

    def theta(self, rank: int) -> float:
        return self.examination[min(rank, len(self.examination)) - 1]

    def gamma(self, item: str) -> float:
        return self.relevance.get(item, 0.5)

    def posterior(self, imp: Impression) -> float:
        """P(relevant | what happened): 1 for a click; for a skip, relevance the user may not have seen."""
        if imp.clicked:
            return 1.0
        theta, gamma = self.theta(imp.rank), self.gamma(imp.item)
        return (1 - theta) * gamma / max(1e-9, 1 - theta * gamma)

    def propensity_weight(self, rank: int, cap: float = 10.0) -> float:
        """1 / θ_rank (capped): what one click at `rank` is worth in an inverse-propensity-weighted count."""
        return min(cap, 1.0 / max(1e-9, self.theta(rank)))


def fit_click_model(impressions: Sequence[Impression], iterations: int = ITERATIONS) -> ClickModel:
    """θ and γ that make the logged clicks most likely (EM); θ is scaled so the top position is 1."""
    if not impressions:
        return ClickModel((1.0,), {})
    ranks = max(i.rank for i in impressions)
    theta = [1.0 / r for r in range(1, ranks + 1)]
    items = {i.item for i in impressions}
    gamma = dict.fromkeys(items, 0.5)
    for _ in range(iterations):
        seen_at = [0.0] * ranks
        shown_at = [0] * ranks
        rel_sum: dict[str, float] = defaultdict(float)
        rel_n: dict[str, int] = defaultdict(int)
        for imp in impressions:
            t, g = theta[imp.rank - 1], gamma[imp.item]
            if imp.clicked:
                examined, relevant = 1.0, 1.0
            else:
                skip = max(1e-9, 1 - t * g)
                examined, relevant = t * (1 - g) / skip, (1 - t) * g / skip
            seen_at[imp.rank - 1] += examined
            shown_at[imp.rank - 1] += 1
            rel_sum[imp.item] += relevant
            rel_n[imp.item] += 1
        theta = [seen / n if n else t for seen, n, t in zip(seen_at, shown_at, theta, strict=True)]
        prior = sum(rel_sum.values()) / sum(rel_n.values())
        gamma = {item: (rel_sum[item] + SMOOTHING * prior) / (rel_n[item] + SMOOTHING) for item in items}
    top = max(theta[0], 1e-9)
    # θ and γ are identified only up to a common scale: fix the top position at 1.
    scaled = {item: min(1.0, g * top) for item, g in gamma.items()}
    return ClickModel(tuple(min(1.0, t / top) for t in theta), scaled)
