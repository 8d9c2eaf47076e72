"""A simulated retrieval log with hidden relevance: a noisy first-stage ranking, position-biased clicks."""

from __future__ import annotations

import random

from tuneloop.clock import now_utc
from tuneloop.retrieve.training import Logged
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import feedback, interactions, retrievals

GAMMA = (0.05, 0.3, 0.6, 0.9)  # P(click | examined) by hidden relevance 0-3
Items = list[list[tuple[str, int, float]]]  # per query: (chunk id, hidden relevance, first-stage score)


def world(seed: int, sessions: int = 1200, queries: int = 30) -> tuple[Items, list[Logged]]:
    """`queries` of 8 chunks with hidden relevance and a noisy first-stage score; sessions shown in score
    order (one random adjacent swap each), clicked with examination 1/rank."""
    rng = random.Random(seed)
    groups = []
    for q in range(queries):
        items = []
        for j in range(8):
            rel = rng.choice((0, 0, 0, 1, 1, 2, 3))
            items.append((f"q{q}-c{j}", rel, 0.3 + 0.06 * rel + rng.gauss(0, 0.12)))
        groups.append(items)
    logs = []
    for session in range(sessions):
        shown = sorted(rng.choice(groups), key=lambda item: -item[2])
        i = rng.randrange(len(shown) - 1)
        shown[i], shown[i + 1] = shown[i + 1], shown[i]
        clicked = {cid for rank, (cid, rel, _) in enumerate(shown, 1) if rng.random() < GAMMA[rel] / rank}
        results = [
            {"rank": rank, "chunk_id": cid, "document_id": cid, "score": score, "lexical": 0.0, "anchor": "a"}
            for rank, (cid, _, score) in enumerate(shown, 1)
        ]
        logs.append(Logged(f"ret-{session:05d}", results, clicked))
    return groups, logs


class Row:
    """Something the re-ranker can order: a chunk with its first-stage features."""

    def __init__(self, chunk_id: str, score: float) -> None:
        self.chunk_id = self.document_id = chunk_id
        self.score, self.lexical, self.anchor = score, 0.0, "a"


def store_logs(tenant: TenantStore, logs: list[Logged], start: int = 0) -> None:
    """Each retrieval with its interaction (numbered from `start`) and a source_clicked event per click, as
    the API stores them."""

    def write(tx: TenantTx) -> None:
        now = now_utc()
        for n, log in enumerate(logs, start):
            iid = f"int-{n}"
            tx.insert(interactions, id=iid, messages=[{"role": "user", "content": "q"}], response="a",
                      choices=["a"], payload_hash="-", created_at=now)  # fmt: skip
            tx.insert(retrievals, id=log.id, interaction_id=iid, ranker="embedding", results=log.results,
                      created_at=now)  # fmt: skip
            for chunk in sorted(log.clicked):
                tx.insert(feedback, id=f"{iid}-{chunk}", interaction_id=iid, kind="source_clicked",
                          value={"chunk_id": chunk}, source="user", payload_hash="-", created_at=now,
                          received_at=now)  # fmt: skip

    tenant.transaction(write)
