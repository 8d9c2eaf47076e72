"""Capture API: log interactions and feedback events, and read them back, for the key's tenant."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tuneloop.capture import pending
from tuneloop.capture.events import ID_MAX, ID_PATTERN, FeedbackIn, InteractionIn, is_id, not_found
from tuneloop.capture.ingest import names_interactions
from tuneloop.clock import utc
from tuneloop.config import tenant_policy
from tuneloop.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, TuneloopError
from tuneloop.serve.http import (
    CAPTURE,
    NAMED_FIELD,
    OPERATE,
    bearer_key,
    clip,
    field_name,
    off_loop_if_large,
    read_json,
    trusted_sender,
    validate,
)
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Arrival, ItemResult, TenantStore

router = APIRouter()
QueryId = Annotated[str | None, Query(pattern=ID_PATTERN, max_length=ID_MAX)]


def _state(request: Request) -> Any:
    return request.app.state.tuneloop


@router.post("/v1/interactions", status_code=201)
async def log_interaction(request: Request) -> JSONResponse:
    """Log an interaction your own model made; answers its id."""
    st = _state(request)
    store = await st.auth.tenant(request, CAPTURE, recheck=False)  # the write checks the key
    async with _revoked_first(st, request):
        body = await read_json(request, st.settings.max_body_bytes)
        item = await off_loop_if_large(request, validate, InteractionIn, body, st.settings.max_text_chars)
    [row] = await st.redactions.many(
        st.capture.interaction_rows, store, [(item, {"teaches": trusted_sender(request)})]
    )
    [result] = await st.writes.many(pending.store_interactions, store, [row], key=bearer_key(request))
    st.capture.logged(store, item, result)
    # The client's own id comes back (the store may hold its keyed form); lookups accept either.
    return JSONResponse({"id": item.id or result.id, "status": result.status}, status_code=result.code)


@router.post("/v1/feedback")
async def post_feedback(request: Request) -> JSONResponse:
    """One event (answered with its status) or `{"events": [...]}` (answered per item)."""
    st = _state(request)
    store = await st.auth.tenant(request, CAPTURE, recheck=False)  # the write checks the key
    limit = st.settings.max_text_chars
    async with _revoked_first(st, request):
        body = await read_json(request, st.settings.max_body_bytes)
        if isinstance(body, dict) and "events" in body:
            checked = await off_loop_if_large(request, _validated, st, body, limit)
            return await _batch(request, st, store, checked)
        event = await off_loop_if_large(request, validate, FeedbackIn, body, limit)
    [result] = await _store_feedback(st, store, [event], request)
    if result.status == "rejected":
        raise _rejection(result)
    [warning] = _warnings(st, store, [event])
    return JSONResponse({"id": result.id, "status": result.status, **warning}, status_code=result.code)


@asynccontextmanager
async def _revoked_first(st: Any, request: Request) -> AsyncIterator[None]:
    """A body refused before the write (which checks the key) is refused to a revoked key as a 401."""
    try:
        yield
    except TuneloopError:
        await st.auth.tenant(request, CAPTURE)
        raise


def _warnings(st: Any, store: TenantStore, events: list[FeedbackIn]) -> list[dict[str, str]]:
    """Per event, `{"warning": why}` when the tenant's reward policy gives it no reward, else `{}`."""
    if not any(e.kind in ("outcome", "score") for e in events):
        return [{} for _ in events]  # the policy file is read only when an event could be unlisted
    try:
        policy = tenant_policy(st.settings.home, store.tenant.name, RewardPolicy)
    except TuneloopError:  # a broken policy file fails the loop's turn, which says so; the events are in
        return [{} for _ in events]
    # The name is quoted only when it reads as one: apps put their users' data in such fields too.
    reasons = [policy.unrewarded(e.kind, e.value, lambda name: repr(field_name(name))) for e in events]
    return [{"warning": why} if why else {} for why in reasons]


async def _store_feedback(
    st: Any, store: TenantStore, events: list[FeedbackIn], request: Request
) -> list[ItemResult]:
    """Redact (CPU, in turns with other tenants) and then write (store) validated events; each result
    names its event by the client's id."""
    rows = await st.redactions.many(st.capture.feedback_rows, store, events)
    results = await st.writes.many(pending.store_feedback, store, rows, key=bearer_key(request))
    return [_as_sent(st, store, r, e) for r, e in zip(results, events, strict=True)]


def _as_sent(st: Any, store: TenantStore, result: ItemResult, event: FeedbackIn) -> ItemResult:
    """`result` naming the event, and in its error the event and the interactions it names, by the ids the
    client sent rather than their stored (keyed) forms."""
    named = event.value.values() if names_interactions(event.value) else ()
    error = result.error and st.capture.as_sent(store, result.error, (event.id, event.interaction_id, *named))
    return replace(result, id=event.id, error=error)


def _validated(st: Any, body: dict, limit: int) -> list[ItemResult | FeedbackIn]:
    """Each event of a batch validated, or its rejection."""
    events = body["events"]
    if set(body) != {"events"}:
        extra = [field_name(k) for k in sorted(set(body) - {"events"})[:5]]
        raise BadRequest(f"a batch has only the field `events`; remove {extra}", param=extra[0])
    if not isinstance(events, list) or not events:
        raise BadRequest("events: expected a non-empty list of feedback events", param="events")
    if len(events) > st.settings.max_batch_events:
        raise PayloadTooLarge(
            f"events: {len(events)} events in one batch; the limit is {st.settings.max_batch_events}",
            param="events",
        )
    checked: list[ItemResult | FeedbackIn] = []
    for i, raw in enumerate(events):
        try:
            checked.append(validate(FeedbackIn, raw, limit, where=f"events.{i}."))
        except TuneloopError as exc:
            checked.append(ItemResult(_id_of(raw), "rejected", exc.message, code=exc.status))
    return checked


async def _batch(
    request: Request, st: Any, store: TenantStore, checked: list[ItemResult | FeedbackIn]
) -> JSONResponse:
    valid = [c for c in checked if isinstance(c, FeedbackIn)]
    if not valid:  # nothing to write, so no write checks the key
        await st.auth.tenant(request, CAPTURE)
    stored = iter(await _store_feedback(st, store, valid, request) if valid else [])
    warned = iter(_warnings(st, store, valid))
    merged = [
        (c, {}) if isinstance(c, ItemResult) else (_at(i, next(stored)), next(warned))
        for i, c in enumerate(checked)
    ]
    statuses = ("accepted", "duplicate", "pending", "rejected")
    counts = {s: sum(r.status == s for r, _ in merged) for s in statuses}
    items = [
        {"id": r.id, "status": r.status, **({"error": r.error} if r.error else warning)}
        for r, warning in merged
    ]
    return JSONResponse({**counts, "results": items}, status_code=200)


def _at(i: int, result: ItemResult) -> ItemResult:
    """A write's refusal of a batch's item `i`, named as its validation errors are (`events.3.value: …`)."""
    if not result.error:
        return result
    named = NAMED_FIELD.match(result.error)
    return replace(result, error=f"events.{i}{'.' if named else ': '}{result.error}")


def _id_of(raw: Any) -> str:
    return clip(raw.get("id", ""), 128) if isinstance(raw, dict) else ""


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API shows it: the key already names the tenant, so its internal id stays inside."""
    return {k: v for k, v in row.items() if k != "tenant_id"}


def _rejection(result: ItemResult) -> TuneloopError:
    cls = {404: NotFound, 409: Conflict}.get(result.code, BadRequest)
    return cls(result.error or "rejected")


@router.get("/v1/interactions/{interaction_id}")
async def get_interaction(request: Request, interaction_id: str) -> dict:
    """One interaction with its feedback; 404 for ids this tenant does not own."""
    st = _state(request)
    store = await st.auth.tenant(request, OPERATE)
    if not is_id(interaction_id):
        raise NotFound(not_found("interaction", interaction_id), param="interaction_id")
    stored = st.capture.reference(store, interaction_id)
    try:
        found = await st.calls(store.get_interaction, stored)
    except NotFound:
        if stored == interaction_id:
            raise
        found = await st.calls(store.get_interaction, interaction_id)  # logged before ids were keyed
    return {**_public(found), "feedback": [_public(e) for e in found["feedback"]]}


@router.get("/v1/feedback")
async def list_feedback(
    request: Request,
    interaction_id: QueryId = None,
    since: datetime | None = None,
    after: str | None = None,
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> dict:
    """Feedback events of this tenant in arrival order, by interaction, received strictly after `since`, and
    after the cursor `after` (a page's `next`: null once a page is not full)."""
    st = _state(request)
    store = await st.auth.tenant(request, OPERATE)
    if since is not None:
        # Stored times are UTC without an offset (SQLite): compare in UTC, whatever offset the client sent.
        try:
            since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
        except OverflowError:
            # Before year 1 or after 9999 once in UTC: earlier than every event, or later than all of them.
            since = None if since.year == 1 else datetime.max.replace(tzinfo=UTC)
    if interaction_id:
        interaction_id = st.capture.reference(store, interaction_id)
    position = _arrival(after) if after is not None else None
    events = await st.calls(
        store.feedback, interaction_id=interaction_id, since=since, after=position, limit=limit
    )
    full = len(events) == limit
    return {"data": [_public(e) for e in events], "next": _cursor(events[-1]) if full else None}


def _cursor(event: dict[str, Any]) -> str:
    """The opaque `after` cursor of the page that ends at `event`: its arrival, base64url without padding."""
    raw = f"{event['received_at'].isoformat()} {event['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _arrival(cursor: str) -> Arrival:
    """The arrival an `after` cursor names; 400 for anything `_cursor` would not have written."""
    with suppress(ValueError, OverflowError):  # base64's and UTF-8's errors are ValueErrors too
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        at, _, eid = raw.decode().partition(" ")
        if is_id(eid):  # a stored id: nothing else (a NUL, say) reaches the database
            return Arrival(utc(datetime.fromisoformat(at)), eid)
    raise BadRequest("after: not a cursor; pass the `next` of the page before, as it came", param="after")
