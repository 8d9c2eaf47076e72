"""Feedback that arrives before its interaction: kept for a while and attached when the interaction lands.

Apps often send a thumbs-up from the browser while the server's log of the answer is still in flight; a
404 there would lose the signal. Such an event is stored as pending (answered 202, status `pending`) for
PENDING_TTL, at most MAX_PENDING per tenant, and written as ordinary feedback as soon as its interaction is
logged (through the capture API or the gateway at once, by any other path at the next sweep). An event may
also name a `session` instead of an interaction: it lands on the session's latest interaction, or waits
for the session's first one. An event whose value names other interactions (a preference between two, the
answer a regeneration replaced it by) waits for each of them as well: a regenerated answer is logged after
the event that says it was asked for.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tuneloop.capture.events import self_reference
from tuneloop.clock import now_utc
from tuneloop.store.repository import ItemResult, TenantStore, TenantTx, existing_item, referenced
from tuneloop.store.schema import feedback, interactions, pending_feedback

log = logging.getLogger("tuneloop.capture")
PENDING_TTL = timedelta(hours=1)
MAX_PENDING = 10_000  # per tenant: an app that sends feedback for ids it never logs cannot grow it further
SESSION = "session:"  # a pending event's target is an interaction id, or this and a stored session id

Row = tuple[dict[str, Any], str]


def store_feedback(store: TenantStore, rows: list[Row]) -> list[ItemResult]:
    """Store redacted events: those whose interaction (or session) exists as feedback, the rest as pending."""
    now = now_utc()
    with store.reading() as tx:
        targets = _targets(tx, [row for row, _ in rows])
    # The rows are left as given (a group commit may run them again alone): a session names a target only.
    rows = [({k: v for k, v in row.items() if k != "session"}, digest) for row, digest in rows]
    results: list[ItemResult | None] = [None] * len(rows)
    # Each event as it lands or waits: on the interaction it is about, once that is known.
    rows = [({**row, "interaction_id": about}, d) for (row, d), (about, _) in zip(rows, targets, strict=True)]
    ready = [i for i, (about, waits) in enumerate(targets) if waits is None]
    stored = _land(store, [rows[i] for i in ready])
    for i, result in zip(ready, stored, strict=True):
        results[i] = result
    waiting = [i for i, (_, waits) in enumerate(targets) if waits is not None]
    if waiting:
        items = [(rows[i], targets[i][1]) for i in waiting]
        kept = store.transaction(lambda tx: _keep(tx, items, now))
        for i, result in zip(waiting, kept, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def store_interactions(store: TenantStore, rows: list[Row]) -> list[ItemResult]:
    """Write redacted interaction rows (idempotent on their ids; another payload under a stored id is
    rejected, 409) and the events that waited for them: the shape `GroupCommit.many` merges across requests,
    so concurrent requests' interactions cost one insert and one read of what waits."""
    results = store.log_interactions(rows)
    landed = [(r.id, row.get("session_id")) for r, (row, _) in zip(results, rows, strict=True)]
    attach(store, [ids for ids, r in zip(landed, results, strict=True) if r.status == "accepted"])
    return results


def attach(store: TenantStore, landed: list[tuple[str, str | None]]) -> list[ItemResult]:
    """Write the events waiting for just-logged interactions, (id, session id) each in the order logged, or
    for their sessions (a session's latest of them), as their feedback."""
    to = {SESSION + session: iid for iid, session in landed if session} | {iid: iid for iid, _ in landed}
    if not to:
        return []
    with store.reading() as tx:
        found = tx.all(
            pending_feedback,
            pending_feedback.c.target.in_(list(to)),
            pending_feedback.c.expires_at > now_utc(),
            order_by=(pending_feedback.c.received_at,),
        )
    return _release(store, found, to)


def sweep(store: TenantStore) -> int:
    """Attach events whose interaction was logged by a path that does not attach them (spool, OTLP), and
    drop expired ones; returns how many were attached. A tenant with nothing pending costs one read."""
    now = now_utc()
    with store.reading() as tx:
        waiting = tx.first(pending_feedback, columns=(sa.func.count(),))
        if not waiting or not waiting[0]:
            return 0
        ids = tx.query(interactions, columns=(interactions.c.id,))
        sessions = tx.query(interactions, columns=(sa.literal(SESSION) + interactions.c.session_id,))
        found = tx.all(
            pending_feedback,
            pending_feedback.c.target.in_(ids) | pending_feedback.c.target.in_(sessions),
            pending_feedback.c.expires_at > now,
            order_by=(pending_feedback.c.received_at,),
        )
        to = {
            row.target: _latest(tx, row.target.removeprefix(SESSION))
            if row.target.startswith(SESSION)
            else row.target
            for row in found
        }
    store.transaction(lambda tx: tx.delete(pending_feedback, pending_feedback.c.expires_at <= now))
    results = _release(store, found, to)
    return sum(r.status == "accepted" for r in results)


def forget(tx: TenantTx, user: str) -> int:
    """Delete the pending events an erased user gave (as rater); returns how many went. (Events about the
    user's interactions never wait: those interactions are logged, so their events were attached.)"""
    rows = tx.all(pending_feedback, columns=(pending_feedback.c.id, pending_feedback.c.event))
    doomed = [r.id for r in rows if r.event.get("rater") == user]
    return tx.delete(pending_feedback, pending_feedback.c.id.in_(doomed)) if doomed else 0


def _targets(tx: TenantTx, rows: list[dict[str, Any]]) -> list[tuple[str | None, str | None]]:
    """Per event: the interaction it is about (its own id, else its session's latest; None while the session
    has none), and what it waits for: None when that interaction and every one its value names are logged,
    else the first that is not (or the session)."""
    known = _logged(tx, [iid for r in rows for iid in (r.get("interaction_id"), *referenced(r)) if iid])
    out: list[tuple[str | None, str | None]] = []
    for row in rows:
        session = row.get("session")
        about = row["interaction_id"] if session is None else _latest(tx, session)
        if about is None:
            out.append((None, SESSION + session))
            continue
        named = referenced(row) if session else [about, *referenced(row)]  # a session's latest is logged
        missing = [iid for iid in named if iid not in known]
        out.append((about, missing[0] if missing else None))
    return out


def _logged(tx: TenantTx, ids: list[str]) -> set[str]:
    """Which of `ids` are logged interactions of the tenant."""
    found = tx.all(interactions, interactions.c.id.in_(sorted(set(ids))), columns=(interactions.c.id,))
    return {r.id for r in found}


def _latest(tx: TenantTx, session: str) -> str | None:
    """The id of a stored session's latest interaction, or None while it has none."""
    latest = tx.all(
        interactions,
        interactions.c.session_id == session,
        columns=(interactions.c.id,),
        order_by=(interactions.c.created_at.desc(), interactions.c.id.desc()),
        limit=1,
    )
    return latest[0].id if latest else None


def _keep(tx: TenantTx, rows: list[tuple[Row, str]], now: datetime) -> list[ItemResult]:
    """Insert events as pending, idempotent on their id; refused (404) past the tenant's cap."""
    tx.delete(pending_feedback, pending_feedback.c.expires_at <= now)
    count = tx.first(pending_feedback, columns=(sa.func.count(),))
    room = MAX_PENDING - (count[0] if count else 0)
    ids = [row["id"] for (row, _), _ in rows]
    seen = dict(
        tx.all(
            pending_feedback,
            pending_feedback.c.id.in_(ids),
            columns=(pending_feedback.c.id, pending_feedback.c.payload_hash),
        )
    )
    # An id stored as feedback is taken: kept here, the event would only meet it as a conflict on landing.
    stored = dict(tx.all(feedback, feedback.c.id.in_(ids), columns=(feedback.c.id, feedback.c.payload_hash)))
    results = []
    for (row, digest), target in rows:
        eid = row["id"]
        if eid in stored or seen.get(eid, digest) != digest:
            results.append(existing_item(eid, digest, stored.get(eid) or seen[eid]))
            continue
        if eid in seen:
            results.append(ItemResult(eid, "pending", code=202))
            continue
        if room <= 0:
            results.append(
                ItemResult(
                    eid,
                    "rejected",
                    f"{_awaited(target)}, and {MAX_PENDING} events already wait for interactions not "
                    "logged yet; log the interaction first",
                    code=404,
                )
            )
            continue
        room -= 1
        seen[eid] = digest
        row = {**row, "created_at": (row.get("created_at") or now).isoformat()}
        tx.insert(
            pending_feedback,
            id=eid,
            target=target,
            event=row,
            payload_hash=digest,
            received_at=now,
            expires_at=now + PENDING_TTL,
        )
        results.append(ItemResult(eid, "pending", code=202))
    return results


def _awaited(target: str) -> str:
    """What a pending event waits for, in words."""
    if target.startswith(SESSION):
        return f"session {target.removeprefix(SESSION)!r} has no interaction logged yet"
    return f"interaction {target!r} not found"


def _land(store: TenantStore, rows: list[Row]) -> list[ItemResult]:
    """`store.add_feedback` for events on the interactions they land on, with their ids now as stored: one
    that compares or replaces its interaction with itself is refused (400), whichever way each id was sent."""
    problems = [self_reference(row["kind"], row["value"], row["interaction_id"]) for row, _ in rows]
    fine = [row for row, problem in zip(rows, problems, strict=True) if problem is None]
    stored = iter(store.add_feedback(fine) if fine else [])
    return [
        next(stored) if problem is None else ItemResult(row["id"], "rejected", problem, code=400)
        for (row, _), problem in zip(rows, problems, strict=True)
    ]


def _release(store: TenantStore, found: list[sa.Row], to: dict[str, str]) -> list[ItemResult]:
    """Write pending rows as feedback on the interaction their target maps to, then forget them; a row whose
    value names an interaction not logged yet waits on, for that one."""
    if not found:
        return []
    events = []
    for row in found:
        when = datetime.fromisoformat(row.event["created_at"])
        # An event kept for an interaction its value names is about the interaction it was kept with.
        about = row.event.get("interaction_id") or to[row.target]
        events.append({**row.event, "interaction_id": about, "created_at": when})
    with store.reading() as tx:
        known = _logged(tx, [iid for event in events for iid in referenced(event)])
    waits = [next((iid for iid in referenced(event) if iid not in known), None) for event in events]
    if any(waits):
        store.transaction(lambda tx: _wait_longer(tx, found, events, waits))
    ready = [i for i, target in enumerate(waits) if target is None]
    rows = [(events[i], found[i].payload_hash) for i in ready]
    results = _land(store, rows)
    done = [found[i].id for i in ready]
    # An event its interaction refuses (a preference naming a choice it does not have) was acknowledged
    # as pending: the audit log keeps why it was dropped, so that nothing goes without a trace.
    outcomes = zip(rows, results, strict=True)
    refused = [(event, r.error) for (event, _), r in outcomes if r.status == "rejected"]

    def forget(tx: TenantTx) -> None:
        tx.delete(pending_feedback, pending_feedback.c.id.in_(done))
        for event, error in refused:
            details = {"interaction_id": event["interaction_id"], "kind": event.get("kind"), "error": error}
            tx.audit(actor="capture", action="feedback.rejected", subject=event["id"], details=details)

    store.transaction(forget)
    for event, error in refused:
        log.warning("pending feedback %s was refused by its interaction: %s", event["id"], error)
    return results


def _wait_longer(tx: TenantTx, found: list[sa.Row], events: list[dict], waits: list[str | None]) -> None:
    """Keep each pending row with a `waits` target for that interaction, now about the one it was released
    to; its expiry stays."""
    for row, event, target in zip(found, events, waits, strict=True):
        if target is not None:
            kept = {**row.event, "interaction_id": event["interaction_id"]}
            tx.update(pending_feedback, pending_feedback.c.id == row.id, target=target, event=kept)
