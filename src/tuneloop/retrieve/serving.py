"""What a tenant's retrievals show: its production re-ranker's order or, while a re-ranker is on canary,
production's and the candidate's orders interleaved (retrieve/interleave.py); every retrieval logged."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tuneloop.registry.artifacts import checksums
from tuneloop.registry.versions import Kind, Registry, Version
from tuneloop.retrieve.interleave import team_draft
from tuneloop.retrieve.reranker import Reranker
from tuneloop.retrieve.search import Hit, candidates, log_retrieval, ordered
from tuneloop.store.repository import TenantStore

KIND: Kind = "reranker"
INTERLEAVED = "interleaved:"  # the ranker of a canary retrieval: this prefix and the candidate's version
CACHE_SECONDS = 5.0
log = logging.getLogger("tuneloop")


@dataclass(frozen=True)
class Rankers:
    """The re-rankers serving a tenant: production's (None: embedding order) and one on canary."""

    production: Reranker | None
    canary: Reranker | None


@dataclass(frozen=True)
class Served:
    """A logged retrieval: its record id, the ranker named in it, and the chunks shown in order."""

    id: str
    ranker: str
    hits: list[Hit]


_serving: dict[str, tuple[float, Rankers]] = {}
_serving_lock = threading.Lock()


def serving_rerankers(tenant: TenantStore) -> Rankers:
    """The tenant's production and canary re-rankers (each checked against its recorded checksums),
    looked up at most every CACHE_SECONDS."""
    with _serving_lock:
        hit = _serving.get(tenant.tenant_id)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    registry = Registry(tenant)
    canary = next(iter(registry.list(KIND, "canary")), None)
    before = hit[1] if hit is not None else Rankers(None, None)
    production = load_reranker(registry.production(KIND), before.production)
    found = Rankers(production, load_reranker(canary, before.canary))
    with _serving_lock:
        _serving[tenant.tenant_id] = (time.monotonic(), found)
    return found


def production_reranker(tenant: TenantStore) -> Reranker | None:
    """The tenant's production re-ranker; None while the embedding order serves."""
    return serving_rerankers(tenant).production


def load_reranker(version: Version | None, loaded: Reranker | None = None) -> Reranker | None:
    """`version`'s re-ranker (`loaded` when it is that version already); None for no version, or when its
    files changed since registration (logged)."""
    if version is None or not version.artifact_path:
        return None
    if loaded is not None and loaded.version == version.id:
        return loaded
    folder = Path(version.artifact_path)
    if checksums(folder) != version.artifact_checksums:
        log.error("re-ranker %s: files changed since registration; not serving it", version.id)
        return None
    return Reranker.load(folder / "reranker.json")


def serve(
    tenant: TenantStore,
    query: str,
    k: int,
    *,
    min_score: float = -1.0,
    rerank: bool = True,
    interaction_id: str | None = None,
) -> Served:
    """Retrieve `k` chunks for `query` as the tenant's re-rankers order them (`rerank` False: embedding
    order), and log what was shown."""
    rankers = serving_rerankers(tenant) if rerank else Rankers(None, None)
    pool = candidates(tenant, query, k, min_score=min_score)
    production = ordered(pool, k, rankers.production)
    if rankers.canary is None:
        hits, sides = production, None
        ranker = rankers.production.version if rankers.production else "embedding"
    else:
        picked = team_draft(production, ordered(pool, k, rankers.canary), k, random.Random())
        hits, sides = [h for h, _ in picked], [side for _, side in picked]
        ranker = INTERLEAVED + rankers.canary.version
    retrieval_id = log_retrieval(tenant, hits, ranker=ranker, interaction_id=interaction_id, sides=sides)
    return Served(retrieval_id, ranker, hits)
