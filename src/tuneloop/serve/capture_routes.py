"""Capture API: log interactions and feedback events, and read them back, for the key's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tuneloop.capture.events import FeedbackIn, InteractionIn
from tuneloop.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, TuneloopError
from tuneloop.serve.http import read_json, validate
from tuneloop.store.repository import ItemResult

router = APIRouter()


def _state(request: Request) -> Any:
    return request.app.state.tuneloop


@router.post("/v1/interactions", status_code=201)
async def log_interaction(request: Request) -> JSONResponse:
    """Log an interaction your own model made; answers its id."""
    st = _state(request)
    store = st.auth.tenant(request)
    item = validate(
        InteractionIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars
    )
    result = await run_in_threadpool(st.capture.log_interaction, store, item)
    return JSONResponse({"id": result.id, "status": result.status}, status_code=result.code)


@router.post("/v1/feedback")
async def post_feedback(request: Request) -> JSONResponse:
    """One event (answered with its status) or `{"events": [...]}` (answered per item)."""
    st = _state(request)
    store = st.auth.tenant(request)
    body = await read_json(request, st.settings.max_body_bytes)
    limit = st.settings.max_text_chars
    if isinstance(body, dict) and "events" in body:
        return await _batch(st, store, body, limit)
    event = validate(FeedbackIn, body, limit)
    [result] = await run_in_threadpool(st.capture.add_feedback, store, [event])
    if result.status == "rejected":
        raise _rejection(result)
    return JSONResponse({"id": result.id, "status": result.status}, status_code=result.code)


async def _batch(st: Any, store: Any, body: dict, limit: int) -> JSONResponse:
    events = body["events"]
    if set(body) != {"events"}:
        raise BadRequest(f"a batch has only the field `events`; got {sorted(set(body) - {'events'})}")
    if not isinstance(events, list) or not events:
        raise BadRequest("events: expected a non-empty list of feedback events", param="events")
    if len(events) > st.settings.max_batch_events:
        raise PayloadTooLarge(
            f"events: {len(events)} events in one batch; the limit is {st.settings.max_batch_events}",
            param="events",
        )
    results: list[ItemResult | None] = []
    valid = []
    for i, raw in enumerate(events):
        try:
            valid.append(validate(FeedbackIn, raw, limit, where=f"events.{i}."))
            results.append(None)
        except TuneloopError as exc:
            results.append(ItemResult(_id_of(raw), "rejected", exc.message, code=exc.status))
    stored = iter(await run_in_threadpool(st.capture.add_feedback, store, valid) if valid else [])
    merged = [r if r is not None else next(stored) for r in results]
    counts = {s: sum(r.status == s for r in merged) for s in ("accepted", "duplicate", "rejected")}
    items = [{"id": r.id, "status": r.status, **({"error": r.error} if r.error else {})} for r in merged]
    return JSONResponse({**counts, "results": items}, status_code=200)


def _id_of(raw: Any) -> str:
    return str(raw.get("id", "")) if isinstance(raw, dict) else ""


def _rejection(result: ItemResult) -> TuneloopError:
    cls = {404: NotFound, 409: Conflict}.get(result.code, BadRequest)
    return cls(result.error or "rejected")


@router.get("/v1/interactions/{interaction_id}")
async def get_interaction(request: Request, interaction_id: str) -> dict:
    """One interaction with its feedback; 404 for ids this tenant does not own."""
    store = _state(request).auth.tenant(request)
    return await run_in_threadpool(store.get_interaction, interaction_id)


@router.get("/v1/feedback")
async def list_feedback(
    request: Request,
    interaction_id: str | None = None,
    since: datetime | None = None,
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> dict:
    """Feedback events of this tenant, by interaction and/or received after `since`."""
    store = _state(request).auth.tenant(request)
    events = await run_in_threadpool(store.feedback, interaction_id=interaction_id, since=since, limit=limit)
    return {"data": events}
