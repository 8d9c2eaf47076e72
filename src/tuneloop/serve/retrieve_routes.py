"""Retrieval API: the tenant's documents (add, replace, delete, list), `POST /v1/retrieve`, and what
each retrieval showed (`GET /v1/retrievals`)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tuneloop.capture.events import Id, is_id
from tuneloop.clock import utc
from tuneloop.errors import BadRequest, NotFound
from tuneloop.retrieve.documents import (
    Stored,
    content_digest,
    delete_document,
    list_documents,
    put_document,
)
from tuneloop.retrieve.extract import TITLE_CONTROL, visible
from tuneloop.retrieve.policy import retrieval_policy
from tuneloop.retrieve.prompting import cited
from tuneloop.retrieve.serving import serve
from tuneloop.serve.capture_routes import QueryId
from tuneloop.serve.http import GATEWAY, OPERATE, read_json, validate
from tuneloop.store.repository import TenantStore
from tuneloop.store.schema import interactions, retrievals

router = APIRouter()
MAX_K = 50


def _not_blank(text: str) -> str:
    if not visible(text):
        raise ValueError("holds only whitespace or invisible characters; send some text")
    return text


Text = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


def _one_line(title: str) -> str:
    if TITLE_CONTROL.search(title):
        raise ValueError("holds a control character (a line break, tab or terminal escape); send one line")
    return title


Title = Annotated[str, Field(max_length=200), AfterValidator(_one_line)]


class DocumentIn(BaseModel):
    """A document's text as the app has it; `format` says how to read it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: Id | None = None
    title: Title | None = None
    text: Text
    format: Literal["text", "markdown", "html"] = "text"


class RetrieveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    query: Text
    k: int | None = Field(None, ge=1, le=MAX_K)
    interaction_id: Id | None = Field(
        None, description="The interaction the app will log for this answer; source feedback on it joins."
    )


async def _document(request: Request, document_id: str | None, *, replace: bool) -> JSONResponse:
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    body = validate(
        DocumentIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars
    )
    if document_id and body.id not in (None, document_id):
        raise BadRequest("id: the path names the document; leave id out of the body", param="id")
    # Without an id the text names itself: posting the same text twice is `unchanged`.
    doc_id = document_id or body.id or f"doc-{content_digest(st.capture, body.text)[:16]}"
    put = partial(
        put_document,
        tenant,
        st.capture,
        doc_id,
        body.text,
        body.format,
        title=body.title,
        replace=replace,
        actor="api",
    )
    stored: Stored = await st.retrievals(tenant.tenant_id, put)
    code = 201 if stored.status == "created" else 200
    return JSONResponse(
        {"id": stored.id, "version": stored.version, "chunks": stored.chunks, "status": stored.status},
        status_code=code,
    )


def _checked_id(document_id: str, *, new: bool = False) -> str:
    if not is_id(document_id):
        # Not echoed: an id refused for its characters may be an email address someone typed in.
        if new:
            raise BadRequest(
                "id: use 1 to 128 letters, digits, '.', '_', ':' or '-', not dots alone", param="id"
            )
        raise NotFound("no document has that id (ids are letters, digits, '.', '_', ':' or '-')", param="id")
    return document_id


@router.post("/v1/documents")
async def add_document(request: Request) -> JSONResponse:
    """Add a document (201); the same text again is `unchanged`, other text under its id a 409."""
    return await _document(request, None, replace=False)


@router.put("/v1/documents/{document_id}")
async def replace_document(request: Request, document_id: str) -> JSONResponse:
    """Add or replace a document: new text makes its next version, and only that version is retrieved."""
    return await _document(request, _checked_id(document_id, new=True), replace=True)


@router.delete("/v1/documents/{document_id}")
async def remove_document(request: Request, document_id: str) -> dict:
    """Delete a document and its chunks; no retrieval shows them again."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    removed = await st.calls(delete_document, tenant, _checked_id(document_id), actor="api")
    return {"id": document_id, "deleted": True, "chunks": removed}


@router.get("/v1/documents")
async def get_documents(request: Request) -> dict:
    """The tenant's documents with their versions and chunk counts (no text)."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    return {"data": await st.calls(list_documents, tenant)}


@router.post("/v1/retrieve")
async def retrieve(request: Request) -> dict:
    """The tenant's top-k chunks for a query, logged as a retrieval record (its `id`)."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)
    body = validate(
        RetrieveIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars
    )
    policy = retrieval_policy(st.settings.home, tenant.tenant.name)
    if body.interaction_id:
        body.interaction_id = st.capture.reference(tenant, body.interaction_id)
    return await st.retrievals(tenant.tenant_id, _retrieve, tenant, body, body.k or policy.k, policy.rerank)


def _retrieve(tenant: TenantStore, body: RetrieveIn, k: int, rerank: bool) -> dict[str, Any]:
    served = serve(tenant, body.query, k, rerank=rerank, interaction_id=body.interaction_id)
    return {
        "id": served.id,
        "object": "list",
        "ranker": served.ranker,
        "data": [
            {
                "rank": i,
                "chunk_id": h.chunk_id,
                "document_id": h.document_id,
                "version": h.version,
                "start": h.start,
                "end": h.end,
                "title": h.title,
                "text": h.text,
                "score": h.score,
            }
            for i, h in enumerate(served.hits, 1)
        ],
    }


@router.get("/v1/retrievals")
async def get_retrievals(
    request: Request, interaction_id: QueryId = None, limit: int = Query(default=100, ge=1, le=1000)
) -> dict:
    """Retrieval records (newest first): what was shown, in which position, and which the answer cited."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    wanted = interaction_id and st.capture.reference(tenant, interaction_id)
    return {"data": await st.calls(_records, tenant, wanted, limit)}


def _records(tenant: TenantStore, interaction_id: str | None, limit: int) -> list[dict[str, Any]]:
    where = [retrievals.c.interaction_id == interaction_id] if interaction_id else []
    with tenant.reading() as tx:
        rows = tx.all(
            retrievals, *where, order_by=(retrievals.c.created_at.desc(), retrievals.c.id), limit=limit
        )
        ids = {r.interaction_id for r in rows if r.interaction_id}
        answers = dict(
            tx.all(
                interactions, interactions.c.id.in_(ids), columns=(interactions.c.id, interactions.c.response)
            )
        )
    out = []
    for r in rows:
        answer = answers.get(r.interaction_id)
        out.append(
            {
                "id": r.id,
                "interaction_id": r.interaction_id,
                "ranker": r.ranker,
                "results": r.results,
                "cited": cited(answer, len(r.results)) if answer is not None else None,
                "created_at": utc(r.created_at),
            }
        )
    return out
