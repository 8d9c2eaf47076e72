"""Each tenant's vector index over its chunks' MiniLM vectors: a usearch HNSW graph in process, or, on a
PostgreSQL store whose server has the pgvector extension, an HNSW index in the database (`chunk_vectors`)
that every serving replica shares.

The store is the truth; an index catches up with it (adds new chunks, drops deleted ones) whenever the
tenant's collection revision moved, so a `tuneloop docs add` in another process shows up at the next
retrieval. A query only ever meets its own tenant's vectors.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from abc import ABC, abstractmethod

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from tuneloop.retrieve.documents import revision
from tuneloop.signals.embeddings import DIMENSIONS
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import chunks

log = logging.getLogger("tuneloop")
# Sparse graph, wide search: building 10k chunks takes seconds on 2 cores, and a wide beam keeps recall.
CONNECTIVITY = 8
EXPANSION_ADD = 64
EXPANSION_SEARCH = 128
SYNC_BATCH = 2000
MIN_PGVECTOR = (0, 8)  # iterative index scans, so a tenant filter never starves the top k


class Vector(sa.types.UserDefinedType):
    """pgvector's `vector(n)`, bound from a sequence of floats."""

    cache_ok = True

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    def get_col_spec(self, **_: object) -> str:
        return f"vector({self.dimensions})"

    def bind_processor(self, dialect: sa.Dialect):
        return lambda value: None if value is None else "[" + ",".join(f"{float(x):.8g}" for x in value) + "]"


# Created on first use, not by the migrations: they run on SQLite and on servers without pgvector.
pgvector_metadata = sa.MetaData()
chunk_vectors = sa.Table(
    "chunk_vectors",
    pgvector_metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.BigInteger, primary_key=True),
    sa.Column("embedding", Vector(DIMENSIONS), nullable=False),
    # Inner product over L2-normalised vectors is cosine similarity, as in usearch.
    sa.Index(
        "ix_chunk_vectors_hnsw",
        "embedding",
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_ip_ops"},
    ),
)


class TenantIndex(ABC):
    """One tenant's vectors and the collection revision they reflect; subclasses say where they live."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        self.revision = -1
        self.lock = threading.Lock()

    def sync(self) -> None:
        """Catch up with the store when the tenant's collection changed since the last look."""
        with self.tenant.reading() as tx:
            current = revision(tx)
            if current == self.revision:
                return
            stored = {r.key for r in tx.all(chunks, columns=(chunks.c.key,))}
        with self.lock:
            held = self._held()
            if gone := held - stored:
                self._remove(gone)
            new = sorted(stored - held)
            for start in range(0, len(new), SYNC_BATCH):
                batch = chunks.c.key.in_(new[start : start + SYNC_BATCH])
                rows = self.tenant.all(chunks, batch, columns=(chunks.c.key, chunks.c.embedding))
                if rows:
                    vectors = np.stack([np.frombuffer(r.embedding, dtype="<f4") for r in rows])
                    self._add([r.key for r in rows], vectors)
            self.revision = current

    @abstractmethod
    def search(self, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        """Up to `count` (key, cosine similarity) pairs nearest to `vector`, best first."""

    @abstractmethod
    def _held(self) -> set[int]:
        """The keys whose vectors the index holds."""

    @abstractmethod
    def _add(self, keys: list[int], vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _remove(self, keys: set[int]) -> None: ...


class InProcessIndex(TenantIndex):
    """A usearch HNSW graph in this process."""

    def __init__(self, tenant: TenantStore) -> None:
        from usearch.index import Index

        super().__init__(tenant)
        self.index = Index(
            ndim=DIMENSIONS,
            metric="ip",  # MiniLM vectors are L2-normalised: inner product is cosine similarity
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self.keys: set[int] = set()

    def search(self, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        with self.lock:
            if not self.keys:
                return []
            found = self.index.search(vector, min(count, len(self.keys)))
        return [(int(k), 1.0 - float(d)) for k, d in zip(found.keys, found.distances, strict=True)]

    def _held(self) -> set[int]:
        return set(self.keys)

    def _add(self, keys: list[int], vectors: np.ndarray) -> None:
        self.index.add(np.array(keys, dtype=np.uint64), vectors)
        self.keys.update(keys)

    def _remove(self, keys: set[int]) -> None:
        self.index.remove(np.fromiter(keys, dtype=np.uint64, count=len(keys)))
        self.keys -= keys


class PgvectorIndex(TenantIndex):
    """The tenant's rows of `chunk_vectors`, searched by pgvector's HNSW index in PostgreSQL."""

    def search(self, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        query = sa.bindparam("query", vector.tolist(), type_=Vector(DIMENSIONS))
        distance = chunk_vectors.c.embedding.op("<#>", return_type=sa.Float)(query)  # minus inner product
        with self.tenant.reading() as tx:
            # Other tenants' rows share the graph: keep scanning until this tenant's nearest are found.
            tx.conn.exec_driver_sql("SET LOCAL hnsw.iterative_scan = relaxed_order")
            tx.conn.exec_driver_sql(f"SET LOCAL hnsw.ef_search = {max(EXPANSION_SEARCH, min(count, 1000))}")
            columns = (chunk_vectors.c.key, distance)
            rows = tx.execute(tx.query(chunk_vectors, columns=columns).order_by(distance).limit(count)).all()
        return [(int(key), -float(d)) for key, d in rows]

    def _held(self) -> set[int]:
        return {r.key for r in self.tenant.all(chunk_vectors, columns=(chunk_vectors.c.key,))}

    def _add(self, keys: list[int], vectors: np.ndarray) -> None:
        rows = [{"key": k, "embedding": v} for k, v in zip(keys, vectors, strict=True)]
        self.tenant.transaction(lambda tx: tx.insert_new(chunk_vectors, rows))

    def _remove(self, keys: set[int]) -> None:
        self.tenant.transaction(lambda tx: tx.delete(chunk_vectors, chunk_vectors.c.key.in_(keys)))


def pgvector_ready(store: Store) -> bool:
    """Whether `store` is PostgreSQL with pgvector on offer; if so its extension and `chunk_vectors` are
    created when missing (under a lock, as several replicas may start at once)."""
    if store.engine.dialect.name != "postgresql":
        return False
    try:
        with store.write() as conn:
            offered = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            if conn.exec_driver_sql(offered).first() is None:
                return False
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('tuneloop.chunk_vectors'))")
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
            installed = conn.exec_driver_sql("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            version = tuple(int(p) for p in re.findall(r"\d+", installed.scalar_one())[:2])
            if version < MIN_PGVECTOR:
                log.warning("pgvector %s predates iterative scans (0.8); vectors stay in process", version)
                return False
            pgvector_metadata.create_all(conn)
    except DBAPIError as exc:
        log.warning("pgvector is on the server but could not be set up (%s); vectors stay in process", exc)
        return False
    return True


class Indexes:
    """The tenants' indexes of one store, created on first use: in PostgreSQL where pgvector is there."""

    def __init__(self, store: Store) -> None:
        self.kind: type[TenantIndex] = PgvectorIndex if pgvector_ready(store) else InProcessIndex
        self._by_tenant: dict[str, TenantIndex] = {}
        self._lock = threading.Lock()

    def get(self, tenant: TenantStore) -> TenantIndex:
        """The tenant's index, caught up with the store."""
        with self._lock:
            index = self._by_tenant.get(tenant.tenant_id)
            if index is None:
                index = self._by_tenant[tenant.tenant_id] = self.kind(tenant)
        index.sync()
        return index


_STORES: weakref.WeakKeyDictionary[Store, Indexes] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def indexes_for(store: Store) -> Indexes:
    """The indexes that belong to `store` (one set per open store, freed with it)."""
    with _STORES_LOCK:
        found = _STORES.get(store)
        if found is None:
            found = _STORES[store] = Indexes(store)
        return found
