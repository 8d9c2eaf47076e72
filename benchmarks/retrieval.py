"""Retrieval that learns, measured on the `rag` scenario over real HTTP.

1. Hidden NDCG@5 of the ranking /v1/retrieve serves, before and after the re-ranker learns from simulated
   users' position-biased source clicks and helpful/wrong marks (`tuneloop docs rerank`'s path).
2. Latency at 10k chunks: p50 of the plain query embedding (the anchor) next to p50 of what retrieval
   adds to it (HNSW + store read + re-rank, for a query already embedded), of a whole search in process
   and of /v1/retrieve over HTTP. Filler chunks carry random unit vectors (a uniform cloud, HNSW's hardest
   case); the HNSW recall@10 against exact search is printed beside.

    python benchmarks/retrieval.py [--sessions 400] [--filler 10000]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.live import live_server
from tuneloop import Settings
from tuneloop.clock import now_utc
from tuneloop.retrieve.documents import bump_revision, chunk_key
from tuneloop.retrieve.index import indexes_for
from tuneloop.retrieve.search import search, search_vector, terms
from tuneloop.retrieve.training import production_reranker, train_and_gate
from tuneloop.signals import embeddings
from tuneloop.sim.scenarios.rag import DOCUMENTS, rag, relevance, source_events
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import chunks, documents

K = 4


def hidden_ndcg(topic: str, shown: list[str], k: int = 5) -> float:
    """NDCG@k of the documents shown against the best list the whole collection allows."""
    best = sorted((relevance(topic, d) for d in DOCUMENTS), reverse=True)

    def dcg(labels: list[int]) -> float:
        return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(labels[:k]))

    return dcg([relevance(topic, d) for d in shown]) / dcg(best)


def traffic(http: httpx.Client, sessions: int, seed: int, tag: str) -> float:
    """Simulated users: retrieve, log the interaction, send their source feedback; mean hidden NDCG@5."""
    rng = random.Random(seed)
    prompts = rag(seed).pool()
    scores = []
    for i in range(sessions):
        prompt = rng.choice(prompts)
        iid = f"int-{tag}-{i}"
        found = http.post("/v1/retrieve", json={"query": prompt.text, "k": K, "interaction_id": iid}).json()
        shown = [r["document_id"] for r in found["data"]]
        chunk_of = {r["document_id"]: r["chunk_id"] for r in found["data"]}
        scores.append(hidden_ndcg(prompt.topic, shown))
        http.post(
            "/v1/interactions",
            json={
                "id": iid,
                "messages": [{"role": "user", "content": prompt.text}],
                "response": prompt.ideal,
            },
        ).raise_for_status()
        events = [
            {"id": f"{iid}-{n}", "interaction_id": iid, "kind": kind, "value": {"chunk_id": chunk_of[doc]}}
            for n, (kind, doc) in enumerate(source_events(rng, prompt.topic, shown))
        ]
        if events:
            http.post("/v1/feedback", json={"events": events}).raise_for_status()
    return statistics.fmean(scores)


def add_filler(tenant: TenantStore, n: int) -> None:
    """`n` filler chunks with random unit vectors, written like real ones (one document per 1,000)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, embeddings.DIMENSIONS)).astype("<f4")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = now_utc()

    def write(tx, start: int) -> None:
        doc = f"filler-{start // 1000}"
        tx.insert(
            documents,
            id=doc,
            version=1,
            title=doc,
            format="text",
            content_hash="-",
            chars=0,
            chunks=1000,
            created_at=now,
            updated_at=now,
        )
        for i in range(start, min(n, start + 1000)):
            cid = f"{doc}:v1:{i}"
            tx.insert(
                chunks,
                id=cid,
                key=chunk_key(cid),
                document_id=doc,
                version=1,
                position=i,
                start_char=0,
                end_char=9,
                text=f"filler {i}",
                embedding=vectors[i].tobytes(),
            )
        bump_revision(tx)

    for start in range(0, n, 1000):
        tenant.transaction(lambda tx, s=start: write(tx, s))


def p50_ms(fn, queries: list[str]) -> float:
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=400, help="simulated sessions before and after")
    parser.add_argument("--filler", type=int, default=10_000, help="chunks in the latency measurement")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tuneloop-bench-retrieval-"))
    settings = Settings(home=home, backend="none", tenant_rate_limit=10_000, tenant_rate_burst=10_000)
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("rag", redaction="off")
    tenant = store.for_tenant(tenant_row)
    with (
        live_server(settings) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
    ):
        for doc, text in DOCUMENTS.items():
            http.put(f"/v1/documents/{doc}", json={"text": text, "format": "markdown"}).raise_for_status()
        before = traffic(http, args.sessions, seed=1, tag="before")
        version, gate = train_and_gate(tenant, home, actor="benchmark")
        after = traffic(http, args.sessions, seed=2, tag="after")
        print(
            f"hidden NDCG@5 of the served ranking ({args.sessions} sessions each, {len(DOCUMENTS)} documents)"
        )
        print(f"  embedding order, before learning : {before:.3f}")
        print(f"  re-ranker {version.id} ({version.state}): {after:.3f}")
        print(f"  gate: {gate.reason}; weights {version.metrics['weights']}")

        add_filler(tenant, args.filler)
        started = time.perf_counter()
        indexes_for(store).get(tenant)
        build = time.perf_counter() - started
        queries = [p.text for p in rag(3).pool()] * 8
        reranker = production_reranker(tenant)
        vectors = {q: embeddings.embed([q])[0] for q in queries}
        embed_p50 = p50_ms(lambda q: embeddings.embed([q]), queries)
        added_p50 = p50_ms(
            lambda q: search_vector(tenant, vectors[q], terms(q), K, reranker=reranker), queries
        )
        search_p50 = p50_ms(lambda q: search(tenant, q, K, reranker=reranker), queries)
        http_p50 = p50_ms(lambda q: http.post("/v1/retrieve", json={"query": q, "k": K}), queries)
        print(f"latency at {args.filler + len(DOCUMENTS)} chunks (p50 of {len(queries)} queries)")
        print(f"  index catch-up after adding {args.filler} chunks: {build:.1f} s")
        print(f"  query embedding alone (anchor)   : {embed_p50:.1f} ms")
        print(f"  what retrieval adds (index, store, re-rank): {added_p50:.1f} ms")
        print(f"  search in process, with embedding: {search_p50:.1f} ms")
        print(f"  POST /v1/retrieve over HTTP      : {http_p50:.1f} ms (logs the retrieval too)")
        print(f"  HNSW recall@10 vs exact search   : {recall_at_10(store, tenant, queries):.3f}")
    store.close()


def recall_at_10(store: Store, tenant: TenantStore, queries: list[str]) -> float:
    index = indexes_for(store).get(tenant)
    rows = tenant.all(chunks, columns=(chunks.c.key, chunks.c.embedding))
    keys = np.array([r.key for r in rows])
    matrix = np.stack([np.frombuffer(r.embedding, dtype="<f4") for r in rows])
    hits = []
    for q in set(queries):
        vector = embeddings.embed([q])[0]
        exact = set(keys[np.argsort(-(matrix @ vector))[:10]].tolist())
        hits.append(len(exact & {k for k, _ in index.search(vector, 10)}) / 10)
    return statistics.fmean(hits)


if __name__ == "__main__":
    main()
