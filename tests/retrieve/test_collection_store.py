"""Collections on both stores (SQLite and PostgreSQL): versions replace chunks, deletes reach the index,
and two tenants' indexes never mix."""

from __future__ import annotations

from tuneloop.capture.redact import Redactor
from tuneloop.retrieve.documents import delete_document, list_documents, put_document
from tuneloop.retrieve.search import search
from tuneloop.store.repository import Store


def test_collections_version_delete_and_isolate_on_each_store(store: Store) -> None:
    acme, beta = (store.for_tenant(store.create_tenant(n, redaction="off")[0]) for n in ("acme", "beta"))
    redactor = Redactor()
    put_document(acme, redactor, "fees.md", "# Fees\n\nTransfers abroad cost 0.5%.", "markdown")
    put_document(beta, redactor, "soup.txt", "Our soup of the day is tomato.", "text")
    first = [h.text for h in search(acme, "transfer fee abroad", 3)]

    updated = put_document(acme, redactor, "fees.md", "# Fees\n\nTransfers abroad cost 0.7%.", "markdown")
    second = [(h.chunk_id, h.text) for h in search(acme, "transfer fee abroad", 3)]
    removed = delete_document(acme, "fees.md")

    assert first == ["Fees\n\nTransfers abroad cost 0.5%."]
    assert (updated.version, updated.status) == (2, "updated")
    assert second == [("fees.md:v2:0", "Fees\n\nTransfers abroad cost 0.7%.")]
    assert removed == 1 and search(acme, "transfer fee abroad", 3) == [] and list_documents(acme) == []
    assert [h.document_id for h in search(beta, "transfer fee abroad", 3)] == ["soup.txt"]
