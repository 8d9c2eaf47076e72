"""Collections on every store (SQLite and PostgreSQL with the in-process index, PostgreSQL with pgvector):
versions replace chunks, deletes reach the index, and two tenants' indexes never mix."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import sqlalchemy as sa

from tests.postgres import PostgresServer
from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.retrieve.documents import delete_document, list_documents, put_document
from tuneloop.retrieve.index import InProcessIndex, PgvectorIndex, chunk_vectors, indexes_for
from tuneloop.retrieve.search import search
from tuneloop.signals import embeddings
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store
from tuneloop.store.schema import audit_log, chunks, documents


def test_collections_version_delete_and_isolate_on_each_store(store: Store) -> None:
    versions_deletes_and_isolation(store)
    assert indexes_for(store).kind is InProcessIndex  # neither server has pgvector


def test_postgresql_with_pgvector_searches_in_the_database(pgvector_server: PostgresServer) -> None:
    store = Store(pgvector_server.create_database(f"v_{uuid.uuid4().hex[:12]}"))
    try:
        versions_deletes_and_isolation(store)
        assert indexes_for(store).kind is PgvectorIndex
        with store.read() as conn:  # beta's one chunk is all that is left, and its vector is in the table
            held = conn.execute(sa.select(chunk_vectors.c.tenant_id, chunk_vectors.c.key)).all()
        assert len(held) == 1 and held[0].tenant_id == store.tenant_by_name("beta").id
    finally:
        store.close()


def versions_deletes_and_isolation(store: Store) -> None:
    acme, beta = (store.for_tenant(store.create_tenant(n, redaction="off")[0]) for n in ("acme", "beta"))
    capture = Capture(Redactor(), Pseudonyms(b"secret"))
    put_document(acme, capture, "fees.md", "# Fees\n\nTransfers abroad cost 0.5%.", "markdown")
    put_document(beta, capture, "soup.txt", "Our soup of the day is tomato.", "text")
    first = [h.text for h in search(acme, "transfer fee abroad", 3)]

    updated = put_document(acme, capture, "fees.md", "# Fees\n\nTransfers abroad cost 0.7%.", "markdown")
    second = [(h.chunk_id, h.text) for h in search(acme, "transfer fee abroad", 3)]
    removed = delete_document(acme, "fees.md")

    assert first == ["Fees\n\nTransfers abroad cost 0.5%."]
    assert (updated.version, updated.status) == (2, "updated")
    assert second == [("fees.md:v2:0", "Fees\n\nTransfers abroad cost 0.7%.")]
    assert removed == 1 and search(acme, "transfer fee abroad", 3) == [] and list_documents(acme) == []
    assert [h.document_id for h in search(beta, "transfer fee abroad", 3)] == ["soup.txt"]


TOPICS = (
    "Reset your password from the sign-in page.",
    "Refunds reach your card within five business days.",
    "Transfers abroad cost 0.5% of the amount.",
    "Our support line is open from 8am to 8pm.",
    "Close your account in Settings, then Privacy.",
    "Cards can be frozen in the app at any time.",
    "Savings accounts pay 2% interest a year.",
    "Statements are sent on the first of each month.",
    "Two-factor sign-in uses an authenticator app.",
    "Cash withdrawals abroad are free up to $200.",
)


def test_pgvector_ranks_chunks_as_exact_cosine_search_does(pgvector_server: PostgresServer) -> None:
    store = Store(pgvector_server.create_database(f"v_{uuid.uuid4().hex[:12]}"))
    try:
        tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
        for i, text in enumerate(TOPICS):
            put_document(tenant, Capture(Redactor(), Pseudonyms(b"secret")), f"d{i}", text, "text")
        query = "I forgot my password and cannot sign in"
        served = [h.chunk_id for h in search(tenant, query, 5)]
        vector = embeddings.embed([query])[0]
        rows = tenant.all(chunks, columns=(chunks.c.id, chunks.c.embedding))
        exact = sorted(rows, key=lambda r: -float(np.frombuffer(r.embedding, dtype="<f4") @ vector))
    finally:
        store.close()
    assert served == [r.id for r in exact[:5]]


def test_a_documents_stored_digests_are_keyed_so_its_text_cannot_be_guessed_back(store: Store) -> None:
    """A short document can hold what redaction removes: a plain SHA-256 of its text would give it back to
    anyone who can guess it, in the row and in the audit log, which is never deleted."""
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    text = "Call Jane at 555-0100."
    put_document(tenant, Capture(Redactor(), Pseudonyms(b"secret")), "note", text, "text")
    plain = hashlib.sha256(text.encode()).hexdigest()
    with store.read() as conn:
        stored = conn.execute(sa.select(documents.c.content_hash)).scalar_one()
        details = [str(d) for d in conn.execute(sa.select(audit_log.c.details)).scalars()]
    assert stored != plain and all(plain not in d for d in details)


def test_racing_puts_of_one_new_document_each_store_a_version_on_each_store(store: Store) -> None:
    tenant = store.for_tenant(store.create_tenant(f"race-{uuid.uuid4().hex[:6]}", redaction="off")[0])
    capture = Capture(Redactor(), Pseudonyms(b"secret"))
    texts = [f"Refunds take {i + 2} business days." for i in range(6)]
    with ThreadPoolExecutor(len(texts)) as pool:
        stored = list(
            pool.map(lambda t: put_document(tenant, capture, "raced", t, "text", replace=True), texts)
        )

    assert sorted(s.version for s in stored) == list(range(1, len(texts) + 1))
    assert [(d["id"], d["version"]) for d in list_documents(tenant)] == [("raced", len(texts))]
