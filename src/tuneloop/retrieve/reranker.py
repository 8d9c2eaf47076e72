"""The learned re-ranker: a linear model over retrieval features, per-source trust and a debiased
per-chunk relevance, fitted by logistic regression on click-model posteriors. Stored as plain JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from tuneloop.evaluate.stats import binomial_at_most

FEATURES = ("score", "lexical", "trust", "relevance")
PRIOR_TRUST = 0.5  # a source nobody marked yet
# A chunk never shown for this kind of question has no evidence of relevance: it ranks below every shown
# chunk users opened, so the re-ranker reorders what it has seen rather than promoting what it has not.
UNSEEN_RELEVANCE = 0.0
# A chunk is dropped from what is shown once its marks put this posterior probability on "users mark it
# wrong more often than helpful" (five wrong marks and no helpful one do).
SURELY_WRONG = 0.95


class Ranked(Protocol):
    """Anything with the fields the re-ranker reads (a search hit, a logged result, a training example)."""

    @property
    def chunk_id(self) -> str: ...
    @property
    def document_id(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def lexical(self) -> float: ...
    @property
    def anchor(self) -> str: ...


def relevance_key(anchor: str, chunk_id: str) -> str:
    """Relevance is learned per (kind of question, chunk): the query's anchor chunk and the chunk."""
    return f"{anchor} {chunk_id}"


H = TypeVar("H", bound=Ranked)


@dataclass(frozen=True)
class Example:
    """One shown result with its soft relevance label (the click model's posterior)."""

    chunk_id: str
    document_id: str
    score: float
    lexical: float
    anchor: str
    label: float


@dataclass(frozen=True)
class Reranker:
    """Linear scores over FEATURES; `trust` per document, `relevance` (debiased γ) per `relevance_key`."""

    version: str
    weights: dict[str, float]
    bias: float = 0.0
    mean: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    trust: dict[str, float] = field(default_factory=dict)
    relevance: dict[str, float] = field(default_factory=dict)
    distrusted: list[str] = field(default_factory=list)  # chunk ids never shown (`distrusted_chunks`)

    def row(self, item: Ranked) -> dict[str, float]:
        return {
            "score": item.score,
            "lexical": item.lexical,
            "trust": self.trust.get(item.document_id, PRIOR_TRUST),
            "relevance": self.relevance.get(relevance_key(item.anchor, item.chunk_id), UNSEEN_RELEVANCE),
        }

    def value(self, item: Ranked) -> float:
        row = self.row(item)
        return self.bias + sum(
            self.weights[f] * (row[f] - self.mean.get(f, 0.0)) / self.scale.get(f, 1.0) for f in FEATURES
        )

    def rank(self, items: Sequence[H]) -> list[H]:
        """`items` best first (ties keep their order), without the chunks users keep marking wrong."""
        dropped = set(self.distrusted)
        return sorted((h for h in items if h.chunk_id not in dropped), key=lambda h: -self.value(h))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> Reranker:
        return cls(**json.loads(path.read_text()))


def trust_scores(marks: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Per document, the Beta(1, 1) posterior mean of (helpful, wrong) marks: (h + 1) / (h + w + 2)."""
    return {doc: (h + 1) / (h + w + 2) for doc, (h, w) in marks.items()}


def distrusted_chunks(marks: dict[str, tuple[int, int]]) -> list[str]:
    """Chunks users surely mark wrong more often than helpful, from their (helpful, wrong) counts: under a
    Beta(1, 1) prior, P(share of wrong marks > ½) = P(Binomial(h + w + 1, ½) ≤ w) ≥ SURELY_WRONG. Marks
    belong to a chunk of one document version, so a corrected page starts afresh."""
    return sorted(c for c, (h, w) in marks.items() if binomial_at_most(w, h + w + 1, 0.5) >= SURELY_WRONG)


def fit_reranker(
    examples: Sequence[Example],
    *,
    version: str,
    trust: dict[str, float],
    relevance: dict[str, float],
    distrusted: Sequence[str] = (),
) -> Reranker:
    """Logistic regression on the examples' soft labels (each row counts as `label` of a positive and
    1 − `label` of a negative); features standardised so the weights compare."""
    from sklearn.linear_model import LogisticRegression

    dropped = list(distrusted)
    draft = Reranker(
        version, dict.fromkeys(FEATURES, 0.0), trust=trust, relevance=relevance, distrusted=dropped
    )
    if not examples:
        return draft  # nothing logged to learn from: the embedding order
    x = np.array([[draft.row(e)[f] for f in FEATURES] for e in examples], dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    labels = np.array([e.label for e in examples])
    both = np.vstack([z, z])
    y = np.concatenate([np.ones(len(z)), np.zeros(len(z))])
    w = np.concatenate([labels, 1 - labels])
    keep = w > 0
    if len(set(y[keep])) < 2:
        return draft  # every label the same: nothing to learn, the draft keeps the embedding order
    model = LogisticRegression(C=1.0).fit(both[keep], y[keep], sample_weight=w[keep])
    # Every feature may only raise a chunk: a stale page that matches questions best teaches a negative
    # similarity weight, which would turn the embedding order upside down for questions never seen.
    weights = np.maximum(model.coef_[0], 0.0)
    return Reranker(
        version,
        dict(zip(FEATURES, map(float, weights), strict=True)),
        float(model.intercept_[0]),
        dict(zip(FEATURES, map(float, mean), strict=True)),
        dict(zip(FEATURES, map(float, scale), strict=True)),
        trust,
        relevance,
        dropped,
    )


def dcg(gains: Sequence[float], k: int = 5) -> float:
    """DCG@k of gains in the order shown (graded labels give 2^label − 1)."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))


def ndcg(gains: Sequence[float], k: int = 5) -> float:
    """NDCG@k of gains in the order shown; 1.0 when nothing is relevant."""
    best = dcg(sorted(gains, reverse=True), k)
    return dcg(gains, k) / best if best > 0 else 1.0
