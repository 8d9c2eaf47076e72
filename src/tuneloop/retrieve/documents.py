"""A tenant's document collection: add, replace and delete documents (redacted, chunked, embedded)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa

from tuneloop.capture.ingest import Capture
from tuneloop.clock import now_utc, utc
from tuneloop.errors import BadRequest, Conflict, NotFound
from tuneloop.retrieve.chunking import MAX_CHUNKS, chunk_text
from tuneloop.retrieve.extract import Format, title_of, to_text
from tuneloop.signals import embeddings
from tuneloop.store.pseudonyms import key_scope
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import audit_log, chunks, collections, documents

Status = Literal["created", "updated", "unchanged"]
_WORD = re.compile(r"[^\W\d_][^\W\d_A-Z]*")  # words, split at - _ . digits and camelCase humps


@dataclass(frozen=True)
class Stored:
    """What a put did: the document's id, its version now, its chunk count and whether it changed."""

    id: str
    version: int
    chunks: int
    status: Status


def chunk_id(document_id: str, version: int, position: int) -> str:
    return f"{document_id}:v{version}:{position}"


def chunk_key(chunk: str) -> int:
    """The chunk's key in the vector index: 63 bits of its id's SHA-256 (a signed BIGINT everywhere)."""
    return int.from_bytes(hashlib.sha256(chunk.encode()).digest()[:8], "big") >> 1


def content_digest(capture: Capture, text: str) -> str:
    """A document text's keyed digest: equal texts match, and a short text that held what redaction removes
    cannot be guessed back from it."""
    return capture.pseudonyms.digest({"document": text})


def put_document(
    tenant: TenantStore,
    capture: Capture,
    document_id: str,
    raw: str,
    fmt: Format,
    *,
    title: str | None = None,
    replace: bool = True,
    budget: bool = True,
    actor: str = "api",
) -> Stored:
    """Store a document's text (redacted by the tenant's mode, chunked, embedded) as its next version.

    The same text again is `unchanged`; with `replace` False an existing id with other text is a Conflict.
    `budget` refuses (413) more text than one request may send through redaction.
    """
    check_document_id(tenant, capture, document_id)
    text = to_text(raw, fmt)
    if not text:
        raise BadRequest(f"document {document_id!r} has no text once extracted from {fmt}", param="text")
    # The digest covers a given title too, so a changed title alone makes the next version.
    digest = content_digest(capture, text if title is None else f"{title}\x00{text}")
    current = tenant.first(documents, documents.c.id == document_id)
    if current is not None and current.content_hash == digest:
        return Stored(document_id, current.version, current.chunks, "unchanged")
    if current is not None and not replace:
        raise _exists(document_id)
    if budget:
        capture.redactor.check_budget([text])
    # A title taken from the text is cut from the redacted text: cut first, an email address or a card
    # number split at the cut would no longer be recognised, and its first part would be stored.
    redacted, *given = capture.redactor.redact_texts(
        [text, title] if title else [text],
        tenant.tenant.redaction,
        tenant.tenant_id,
        key_scope=key_scope(tenant.tenant),
    )
    heading = given[0] if given else title_of(redacted, document_id)
    pieces = chunk_text(redacted)
    if not pieces:
        raise BadRequest(f"document {document_id!r} holds no letter or digit: nothing in it could be found")
    if len(pieces) > MAX_CHUNKS:
        raise BadRequest(
            f"document {document_id!r} makes {len(pieces)} chunks; split it (the limit is {MAX_CHUNKS})"
        )
    vectors = embeddings.embed([p.text for p in pieces])

    def write(tx: TenantTx) -> Stored:
        tx.serialize()  # racing puts of one id: each reads the version the one before it wrote
        row = tx.first(documents, documents.c.id == document_id)
        if row is not None and row.content_hash == digest:
            return Stored(document_id, row.version, row.chunks, "unchanged")
        if row is not None and not replace:  # another request created it while this one was embedding
            raise _exists(document_id)
        version = row.version + 1 if row is not None else _last_version(tx, document_id) + 1
        now = now_utc()
        values = {
            "version": version,
            "title": heading,
            "format": fmt,
            "content_hash": digest,
            "chars": len(redacted),
            "chunks": len(pieces),
            "updated_at": now,
        }
        if row is None:
            tx.insert(documents, id=document_id, created_at=now, **values)
        else:
            tx.update(documents, documents.c.id == document_id, **values)
            tx.delete(chunks, chunks.c.document_id == document_id)
        for piece, vector in zip(pieces, vectors, strict=True):
            cid = chunk_id(document_id, version, piece.position)
            tx.insert(
                chunks,
                id=cid,
                key=chunk_key(cid),
                document_id=document_id,
                version=version,
                position=piece.position,
                start_char=piece.start,
                end_char=piece.end,
                text=piece.text,
                embedding=np.asarray(vector, dtype="<f4").tobytes(),
            )
        bump_revision(tx)
        tx.audit(
            actor=actor,
            action="document.put",
            subject=document_id,
            details={"version": version, "chunks": len(pieces), "digest": digest},
        )
        return Stored(document_id, version, len(pieces), "updated" if row is not None else "created")

    return tenant.transaction(write)


def check_document_id(tenant: TenantStore, capture: Capture, document_id: str) -> None:
    """Refuse an id that holds personal data: ids are stored, logged, audited and carried in chunk ids as
    they are. A name counts when it holds two capitalised words (`Maria-Garcia`): on a bare file name the
    name finder also takes products and places for people (`jira-workflow`, `Mastercard-limits`)."""
    if tenant.tenant.redaction == "off":
        return
    # File names join words with `_`, `-`, `.` or `:`, which hide an email, a card or a name from recognisers
    # that need word boundaries (`notes_jane@example.com_v2`, `Maria.Garcia`, `4111:1111:1111:1111`): look
    # at the words apart too; a doubled separator (`4111--1111`, `192..168.1.20`) as one.
    single = re.sub(r"([-_.:])[-_.:]+", r"\1", document_id)
    spellings = list(
        dict.fromkeys(
            [
                document_id,
                single,
                single.replace("_", " "),
                re.sub(r"[-_]", " ", single),
                re.sub(r"[-_.:]", " ", single),
            ]
        )
    )
    finds = capture.redactor.finds(spellings, tenant.tenant_id)
    personal = sorted({e for found in finds for e, text in found if e != "PERSON" or _capitalised(text) > 1})
    if personal:
        raise BadRequest(
            f"the document id holds what redaction takes for personal data ({', '.join(personal)}); "
            "name the document otherwise",
            param="id",
        )


def _capitalised(text: str) -> int:
    return sum(word[0].isupper() and len(word) > 1 for word in _WORD.findall(text))


def _last_version(tx: TenantTx, document_id: str) -> int:
    """The last version a deleted document had (0 for a new id), from the audit log: a re-created id
    goes on counting, so its chunk ids (and the source feedback that names them) are never reused."""
    rows = tx.all(
        audit_log,
        audit_log.c.action == "document.put",
        audit_log.c.subject == document_id,
        columns=(audit_log.c.details,),
        order_by=(audit_log.c.seq.desc(),),
        limit=1,
    )
    return int((rows[0].details or {}).get("version", 0)) if rows else 0


def _exists(document_id: str) -> Conflict:
    return Conflict(
        f"document {document_id!r} exists with other text; replace it with PUT /v1/documents/{document_id}",
        param="id",
    )


def delete_document(tenant: TenantStore, document_id: str, *, actor: str = "api") -> int:
    """Delete a document and its chunks (gone from the index at its next look); returns chunks removed."""

    def delete(tx: TenantTx) -> int:
        if tx.delete(documents, documents.c.id == document_id) == 0:
            raise NotFound(f"document {document_id!r} not found", param="id")
        removed = tx.delete(chunks, chunks.c.document_id == document_id)
        bump_revision(tx)
        tx.audit(actor=actor, action="document.delete", subject=document_id, details={"chunks": removed})
        return removed

    return tenant.transaction(delete)


def list_documents(tenant: TenantStore) -> list[dict[str, Any]]:
    """The tenant's documents, by id, without their text."""
    rows = tenant.all(documents, order_by=(documents.c.id,))
    return [
        {
            **{k: v for k, v in r._mapping.items() if k not in ("tenant_id", "content_hash")},
            "created_at": utc(r.created_at),
            "updated_at": utc(r.updated_at),
        }
        for r in rows
    ]


def revision(tx: TenantTx) -> int:
    """The collection's revision: it grows with every change to the tenant's documents."""
    row = tx.first(collections, columns=(collections.c.revision,))
    return row.revision if row is not None else 0


def bump_revision(tx: TenantTx) -> None:
    """Mark the collection changed, so every process's index catches up at its next look."""
    now = now_utc()
    if tx.update(collections, sa.true(), revision=collections.c.revision + 1, updated_at=now) == 0:
        tx.insert(collections, revision=1, updated_at=now)
