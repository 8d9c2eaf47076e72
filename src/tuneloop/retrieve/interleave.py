"""The re-ranker's canary: team-draft interleaving of production's and the candidate's rankings, judged by
an always-valid test on which side users' source feedback favours.

Interleaving (Radlinski, Kurup & Joachims, CIKM 2008) shows one list built from both rankings: the side
with fewer picks so far (a coin flip on a tie) adds its best result not yet listed, so each side holds
half the positions and users, examining from the top, see both sides' best. Every listed result keeps its
side; a retrieval's feedback (opened or helpful +1, marked wrong −1, per result) then says which side it
favours. It compares rankings on the same query and user, so it needs far fewer sessions than an A/B test
of two lists, and every list still holds production's top results.

Among retrievals that favour a side, the candidate's share of wins W/n is tested against ½ with a uniform
mixture over the share (a beta-binomial mixture SPRT): the Bayes factor

    BF = B(W + 1, n − W + 1) / ½ⁿ

is a nonnegative martingale under the null, so stopping when BF ≥ 1/α keeps the error ≤ α however often
the canary is looked at (Ville's inequality). A canary with no winner after MAX_DECISIVE such retrievals
ends, and production stays.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

CANDIDATE, PRODUCTION = "candidate", "production"
MAX_DECISIVE = 600  # retrievals that favour a side, after which a canary without a winner ends
T = TypeVar("T", bound=Hashable)
Verdict = Literal["promote", "rollback", "continue", "inconclusive"]


def team_draft(
    production: Sequence[T], candidate: Sequence[T], k: int, rng: random.Random
) -> list[tuple[T, str]]:
    """Up to `k` results interleaved from both rankings (of the same items), each with the side it
    came from."""
    picked: list[tuple[T, str]] = []
    listed: set[T] = set()
    sides = {PRODUCTION: list(production), CANDIDATE: list(candidate)}
    counts = {PRODUCTION: 0, CANDIDATE: 0}
    while len(picked) < k:
        fewer = sorted(counts, key=lambda s: (counts[s], rng.random()))
        for side in fewer:
            item = next((i for i in sides[side] if i not in listed), None)
            if item is not None:
                picked.append((item, side))
                listed.add(item)
                counts[side] += 1
                break
        else:
            break  # both rankings are used up
    return picked


def preference(sides: Sequence[str | None], votes: Sequence[int]) -> int:
    """+1 when a retrieval's feedback favours the candidate's results, −1 production's, 0 neither."""
    score = sum(
        v if s == CANDIDATE else -v if s == PRODUCTION else 0 for s, v in zip(sides, votes, strict=True)
    )
    return (score > 0) - (score < 0)


@dataclass(frozen=True)
class Tally:
    """The canary so far: retrievals that favoured the candidate (`wins`) of those that favoured a side."""

    wins: int
    decisive: int

    def log_bayes_factor(self) -> float:
        w, n = self.wins, self.decisive
        return math.lgamma(w + 1) + math.lgamma(n - w + 1) - math.lgamma(n + 2) + n * math.log(2)

    def verdict(self, alpha: float) -> Verdict:
        """promote or rollback once the test is sure, inconclusive past MAX_DECISIVE, else continue."""
        if self.decisive and self.log_bayes_factor() >= math.log(1 / alpha):
            return "promote" if 2 * self.wins > self.decisive else "rollback"
        return "inconclusive" if self.decisive >= MAX_DECISIVE else "continue"

    def describe(self) -> str:
        return f"candidate favoured in {self.wins} of {self.decisive} retrievals that favoured a side"
