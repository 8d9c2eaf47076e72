"""Choosing and deleting raw rows: interactions, every event on them, events pointing at them, and the
records that exist only because of them (retrievals shown on them, review items about them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tuneloop.capture.events import SOURCE_KINDS
from tuneloop.clock import utc
from tuneloop.signals.snapshots import Trim
from tuneloop.store.repository import TenantTx
from tuneloop.store.schema import feedback, interactions, retrievals, review_assignments, review_items

CHUNK = 500  # ids per IN list: far below SQLite's and PostgreSQL's parameter limits
# Kinds whose value names other interactions: such an event goes when an interaction it names goes.
REFERENCING_KINDS = ("preference", "regenerated")


@dataclass(frozen=True)
class Doomed:
    """The interactions and feedback events chosen for deletion."""

    interactions: frozenset[str]
    events: frozenset[str]

    def __or__(self, other: Doomed) -> Doomed:
        return Doomed(self.interactions | other.interactions, self.events | other.events)

    def trim(self, raters: Iterable[str] = ()) -> Trim:
        """What snapshots lose with these rows (and, for an erased user, their rater entries)."""
        return Trim(self.interactions, self.events, frozenset(raters))


def select_rows(tx: TenantTx, interaction_where: list[Any], feedback_where: list[Any]) -> Doomed:
    """Interactions matching any of `interaction_where`, every event on them or naming them, and the events
    matching any of `feedback_where`."""
    iids: set[str] = set()
    for where in interaction_where:
        iids |= {r.id for r in tx.all(interactions, where, columns=(interactions.c.id,))}
    eids: set[str] = set()
    for where in feedback_where:
        eids |= {r.id for r in tx.all(feedback, where, columns=(feedback.c.id,))}
    for chunk in _chunks(iids):
        eids |= {
            r.id for r in tx.all(feedback, feedback.c.interaction_id.in_(chunk), columns=(feedback.c.id,))
        }
    referencing = tx.all(
        feedback, feedback.c.kind.in_(REFERENCING_KINDS), columns=(feedback.c.id, feedback.c.value)
    )
    eids |= {r.id for r in referencing if not iids.isdisjoint(_named(r.value))}
    return Doomed(frozenset(iids), frozenset(eids))


def _named(value: Any) -> set[str]:
    """The interaction ids a preference or regeneration value names."""
    if not isinstance(value, dict):
        return set()
    keys = ("chosen_interaction", "rejected_interaction", "replaced_by")
    return {value[k] for k in keys if isinstance(value.get(k), str)}


def delete_rows(tx: TenantTx, doomed: Doomed) -> tuple[int, int]:
    """Delete the chosen events, then the interactions with their retrievals and review items (and those
    items' assignments and labels); returns how many interactions and events went."""
    events = sum(tx.delete(feedback, feedback.c.id.in_(chunk)) for chunk in _chunks(doomed.events))
    for chunk in _chunks(doomed.interactions):
        tx.delete(retrievals, retrievals.c.interaction_id.in_(chunk))
        about = sa.or_(
            review_items.c.interaction_id.in_(chunk), review_items.c.other_interaction_id.in_(chunk)
        )
        items = [r.id for r in tx.all(review_items, about, columns=(review_items.c.id,))]
        for ids in _chunks(items):
            tx.delete(review_assignments, review_assignments.c.item_id.in_(ids))
            tx.delete(review_items, review_items.c.id.in_(ids))
    rows = sum(
        tx.delete(interactions, interactions.c.id.in_(chunk)) for chunk in _chunks(doomed.interactions)
    )
    return rows, events


def first_retrieval(tx: TenantTx, doomed: Doomed) -> datetime | None:
    """When re-rankers could first have learned from the chosen rows: the earliest retrieval shown on their
    interactions or source feedback among their events (UTC); None when they hold neither."""
    moments = []
    for chunk in _chunks(doomed.interactions):
        shown = tx.all(retrievals, retrievals.c.interaction_id.in_(chunk), columns=(retrievals.c.created_at,))
        moments += [r.created_at for r in shown]
    for chunk in _chunks(doomed.events):
        marked = (feedback.c.id.in_(chunk), feedback.c.kind.in_(SOURCE_KINDS))
        moments += [r.received_at for r in tx.all(feedback, *marked, columns=(feedback.c.received_at,))]
    return min(map(utc, moments), default=None)


def texts_of(tx: TenantTx, doomed: Doomed) -> list[str]:
    """What people wrote in the chosen rows: users' messages and the feedback's text (edits, comments,
    follow-ups). Answers are the model's, often word for word the same for everyone, so they are left out."""
    texts: list[str] = []
    for chunk in _chunks(doomed.interactions):
        for row in tx.all(interactions, interactions.c.id.in_(chunk), columns=(interactions.c.messages,)):
            texts += [str(m.get("content", "")) for m in row.messages if m.get("role") == "user"]
    for chunk in _chunks(doomed.events):
        for row in tx.all(feedback, feedback.c.id.in_(chunk), columns=(feedback.c.value,)):
            if isinstance(row.value, str):
                texts.append(row.value)
    return texts


def _chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]
