"""Retrieval that learns, measured on the `rag` scenario over real HTTP.

1. Hidden NDCG@5 of the ranking /v1/retrieve serves, before and after the re-ranker learns from simulated
   users' position-biased source clicks and helpful/wrong marks, through the tenant's loop on the shipped
   defaults: a turn trains and gates a re-ranker (no adapter trains, as no answer got feedback), its
   interleaved canary runs until the loop decides it, then the promoted one serves.
2. Hidden satisfaction of the embedded model's temperature-0 answers through the gateway, with retrieval
   on (the application's choice), on the scenario's 24 questions before and after.
3. Latency at 10k chunks: p50 of the plain query embedding (the anchor) next to p50 of what retrieval
   adds to it (HNSW + store read + re-rank, for a query already embedded), of a whole search in process
   and of /v1/retrieve over HTTP. Filler chunks carry random unit vectors (a uniform cloud, HNSW's hardest
   case); the HNSW recall@10 against exact search is printed beside.

    python benchmarks/retrieval.py [--sessions 400] [--filler 10000] [--no-answers]
"""

from __future__ import annotations

import argparse
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
from tuneloop.loop import Loop
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.documents import bump_revision, chunk_key
from tuneloop.retrieve.index import indexes_for
from tuneloop.retrieve.search import search, search_vector, terms
from tuneloop.retrieve.serving import CACHE_SECONDS, production_reranker
from tuneloop.signals import embeddings
from tuneloop.sim import satisfaction
from tuneloop.sim.scenarios.rag import DOCUMENTS, rag
from tuneloop.sim.sources import Session, retrieval_sessions
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import chunks, documents

K = 4


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


def _ndcg(sessions: list[Session]) -> float:
    return statistics.fmean(s.ndcg() for s in sessions) if sessions else float("nan")


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
    parser.add_argument("--no-answers", action="store_true", help="skip the answers (no model is loaded)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tuneloop-bench-retrieval-"))
    backend = "none" if args.no_answers else "embedded"
    settings = Settings(home=home, backend=backend, tenant_rate_limit=10_000, tenant_rate_burst=10_000)
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("rag", redaction="off")
    tenant = store.for_tenant(tenant_row)
    policy = home / "policies" / "rag" / "retrieval_policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text("enabled: true\n")
    scenario = rag(0)
    with (
        live_server(settings) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
    ):
        for doc, text in DOCUMENTS.items():
            http.put(f"/v1/documents/{doc}", json={"text": text, "format": "markdown"}).raise_for_status()
        answered = None if args.no_answers else satisfaction(url, key, scenario, scenario.pool())
        loop = Loop(tenant, settings)
        started = time.perf_counter()
        before = retrieval_sessions(http, args.sessions, seed=1, tag="before")
        turn = loop.tick()
        assert turn is not None, "no turn started"
        time.sleep(CACHE_SECONDS)  # the server's view of the re-rankers catches up
        canary = []  # interleaved sessions until the loop decides the canary
        while Registry(tenant).list("reranker", "canary") and len(canary) < 2000:
            canary += retrieval_sessions(http, 25, seed=100 + len(canary), tag=f"canary-{len(canary)}")
            loop.tick()
        decided = time.perf_counter() - started
        time.sleep(CACHE_SECONDS)  # the server's view of production catches up
        after = retrieval_sessions(http, args.sessions, seed=2, tag="after")
        events = sum(s.events for s in before + canary)
        print(f"hidden NDCG@5 of the served ranking ({len(DOCUMENTS)} documents, the loop on its defaults)")
        print(f"  embedding order ({len(before)} sessions)   : {_ndcg(before):.3f}")
        print(f"  turn {turn.turn}'s re-ranker: {turn.report['reranker']}")
        print(f"  interleaved canary: {len(canary)} sessions, {_ndcg(canary):.3f} while it ran")
        for v in Registry(tenant).list("reranker"):
            print(f"  {v.id}: {v.state}")
        print(f"  after ({len(after)} sessions)            : {_ndcg(after):.3f}")
        print(f"  feedback events until the decision: {events}; {decided:.0f} s from the first session")
        if answered is not None:
            print(f"hidden satisfaction of answers through the gateway ({len(scenario.pool())} questions)")
            print(f"  before: {answered:.3f}  after: {satisfaction(url, key, scenario, scenario.pool()):.3f}")

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
