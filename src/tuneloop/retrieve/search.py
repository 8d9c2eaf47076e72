"""Top-k chunks for a query: embed, search the tenant's index, re-rank, and log what was shown."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tuneloop.clock import now_utc
from tuneloop.retrieve.index import indexes_for
from tuneloop.retrieve.reranker import Reranker
from tuneloop.signals import embeddings
from tuneloop.store.repository import TenantStore
from tuneloop.store.schema import chunks, documents, retrievals

MIN_CANDIDATES = 20  # the re-ranker sees at least this many, so it can lift one from below the top k
_WORD = re.compile(r"[a-z0-9]{3,}")
_STOP = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "your", "with", "this", "that", "from", "have", "has",
    "was", "were", "what", "when", "where", "which", "who", "how", "why", "can", "does", "did", "will",
    "would", "should", "could", "about", "into", "than", "then", "them", "they", "their", "there", "these",
})  # fmt: skip


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with its provenance and the features the re-ranker reads."""

    chunk_id: str
    document_id: str
    version: int
    start: int
    end: int
    title: str
    text: str
    score: float  # cosine similarity of query and chunk
    lexical: float  # share of the query's content words found in the chunk
    # The embedding's best chunk for this query: what the query is about, standing in for its text (which
    # is never stored), so relevance learned from clicks is relevance to this kind of question.
    anchor: str

    def features(self) -> dict[str, Any]:
        """What the retrieval record keeps per result (no text: the chunk id points at it)."""
        return {k: v for k, v in asdict(self).items() if k not in ("text", "title", "start", "end")}


def terms(text: str) -> set[str]:
    """Lower-case content words of three letters or more."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def search(
    tenant: TenantStore,
    query: str,
    k: int,
    *,
    min_score: float = -1.0,
    reranker: Reranker | None = None,
) -> list[Hit]:
    """The tenant's best `k` chunks for `query` (none below `min_score`), in the order they are shown."""
    return ordered(candidates(tenant, query, k, min_score=min_score), k, reranker)


def search_vector(
    tenant: TenantStore,
    vector: np.ndarray,
    wanted: set[str],
    k: int,
    *,
    min_score: float = -1.0,
    reranker: Reranker | None = None,
) -> list[Hit]:
    """`search` for a query already embedded (`vector`) with its content words (`wanted`)."""
    return ordered(candidates_for_vector(tenant, vector, wanted, k, min_score=min_score), k, reranker)


def ordered(hits: list[Hit], k: int, reranker: Reranker | None) -> list[Hit]:
    """The top `k` of `hits` (embedding order) as `reranker` orders them (None: as they are)."""
    return (reranker.rank(hits) if reranker is not None else hits)[:k]


def candidates(tenant: TenantStore, query: str, k: int, *, min_score: float = -1.0) -> list[Hit]:
    """What the embedding finds for `query`, best first: enough for a re-ranker to choose a top `k` from."""
    vector = embeddings.embed([query])[0]
    return candidates_for_vector(tenant, vector, terms(query), k, min_score=min_score)


def candidates_for_vector(
    tenant: TenantStore, vector: np.ndarray, wanted: set[str], k: int, *, min_score: float = -1.0
) -> list[Hit]:
    """`candidates` for a query already embedded (`vector`) with its content words (`wanted`)."""
    index = indexes_for(tenant.store).get(tenant)
    found = dict(index.search(vector, max(4 * k, MIN_CANDIDATES)))
    if not found:
        return []
    # Read back through the store: a chunk deleted after the index last caught up is never shown.
    with tenant.reading() as tx:
        rows = tx.all(
            chunks,
            chunks.c.key.in_(list(found)),
            columns=tuple(c for c in chunks.c if c.name not in ("tenant_id", "embedding")),
        )
        titles = dict(
            tx.all(
                documents,
                documents.c.id.in_({r.document_id for r in rows}),
                columns=(documents.c.id, documents.c.title),
            )
        )
    anchor = max(rows, key=lambda r: (found[r.key], r.id)).id if rows else ""
    hits = [
        Hit(
            chunk_id=r.id,
            document_id=r.document_id,
            version=r.version,
            start=r.start_char,
            end=r.end_char,
            title=titles.get(r.document_id, r.document_id),
            text=r.text,
            score=round(found[r.key], 6),
            lexical=round(len(wanted & terms(r.text)) / len(wanted), 4) if wanted else 0.0,
            anchor=anchor,
        )
        for r in rows
        if found[r.key] >= min_score
    ]
    hits.sort(key=lambda h: (-h.score, h.chunk_id))
    return hits


def log_retrieval(
    tenant: TenantStore,
    hits: list[Hit],
    *,
    ranker: str,
    interaction_id: str | None = None,
    sides: list[str] | None = None,
) -> str:
    """Record which chunks were shown, in which positions, by which ranker (and, interleaved, from which
    side each came); returns the record's id."""
    retrieval_id = f"ret-{uuid.uuid4().hex}"
    results = [{"rank": i + 1, **h.features()} for i, h in enumerate(hits)]
    for result, side in zip(results, sides or (), strict=False):
        result["side"] = side
    tenant.transaction(
        lambda tx: tx.insert(
            retrievals,
            id=retrieval_id,
            interaction_id=interaction_id,
            ranker=ranker,
            results=results,
            created_at=now_utc(),
        )
    )
    return retrieval_id
