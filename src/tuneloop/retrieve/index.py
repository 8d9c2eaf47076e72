"""Each tenant's vector index, in process: a usearch HNSW graph over its chunks' MiniLM vectors.

The store is the truth; an index catches up with it (adds new chunks, drops deleted ones) whenever the
tenant's collection revision moved, so a `tuneloop docs add` in another process shows up at the next
retrieval. One index per tenant: a query can only ever meet its own tenant's vectors.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from tuneloop.retrieve.documents import revision
from tuneloop.signals.embeddings import DIMENSIONS
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import chunks

# Sparse graph, wide search: building 10k chunks takes seconds on 2 cores, and a wide beam keeps recall.
CONNECTIVITY = 8
EXPANSION_ADD = 64
EXPANSION_SEARCH = 128
SYNC_BATCH = 2000


class TenantIndex:
    """One tenant's HNSW index and the collection revision it reflects."""

    def __init__(self) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=DIMENSIONS,
            metric="ip",  # MiniLM vectors are L2-normalised: inner product is cosine similarity
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self.keys: set[int] = set()
        self.revision = -1
        self.lock = threading.Lock()

    def sync(self, tenant: TenantStore) -> None:
        """Catch up with the store when the tenant's collection changed since the last look."""
        with tenant.reading() as tx:
            current = revision(tx)
            if current == self.revision:
                return
            stored = {r.key for r in tx.all(chunks, columns=(chunks.c.key,))}
        with self.lock:
            if gone := self.keys - stored:
                self.index.remove(np.fromiter(gone, dtype=np.uint64, count=len(gone)))
                self.keys -= gone
            new = sorted(stored - self.keys)
            for start in range(0, len(new), SYNC_BATCH):
                batch = new[start : start + SYNC_BATCH]
                rows = tenant.all(chunks, chunks.c.key.in_(batch), columns=(chunks.c.key, chunks.c.embedding))
                if rows:
                    keys = np.array([r.key for r in rows], dtype=np.uint64)
                    vectors = np.stack([np.frombuffer(r.embedding, dtype="<f4") for r in rows])
                    self.index.add(keys, vectors)
                    self.keys.update(int(k) for k in keys)
            self.revision = current

    def search(self, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        """Up to `count` (key, cosine similarity) pairs nearest to `vector`, best first."""
        with self.lock:
            if not self.keys:
                return []
            found = self.index.search(vector, min(count, len(self.keys)))
        return [(int(k), 1.0 - float(d)) for k, d in zip(found.keys, found.distances, strict=True)]


class Indexes:
    """The tenants' indexes of one store, created on first use."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, TenantIndex] = {}
        self._lock = threading.Lock()

    def get(self, tenant: TenantStore) -> TenantIndex:
        """The tenant's index, caught up with the store."""
        with self._lock:
            index = self._by_tenant.setdefault(tenant.tenant_id, TenantIndex())
        index.sync(tenant)
        return index


_STORES: weakref.WeakKeyDictionary[Store, Indexes] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def indexes_for(store: Store) -> Indexes:
    """The indexes that belong to `store` (one set per open store, freed with it)."""
    with _STORES_LOCK:
        found = _STORES.get(store)
        if found is None:
            found = _STORES[store] = Indexes()
        return found
