"""Review tasks and their items: create, list, add by hand, and hand reviewers items in rotation.

An item goes to `overlap` different reviewers. A reviewer asking for work gets back the item they hold, else
the highest-priority item they have not judged whose overlap is not yet taken; a hold lapses after the task's
`assignment_minutes`, and the item returns to the pool for whoever asks next.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneloop.capture.events import text_problem
from tuneloop.clock import now_utc, utc
from tuneloop.errors import BadRequest, Conflict, NotFound
from tuneloop.retrieve.extract import visible
from tuneloop.store.pseudonyms import key_scope
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import interactions, review_assignments, review_items, review_tasks

if TYPE_CHECKING:
    from tuneloop.capture.redact import Redactor

Kind = Literal["pairwise", "rubric", "correction"]
KINDS: tuple[Kind, ...] = ("pairwise", "rubric", "correction")
TASK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEFAULT_GUIDELINES = {
    "pairwise": "Pick the answer you would rather send this customer. Judge the answer, not its length.",
    "rubric": "Score the answer from 1 (harmful or wrong) to 5 (exactly what the customer needed).",
    "correction": "Rewrite the answer into the one you would send; leave it unchanged if it is right.",
}


class TaskIn(BaseModel):
    """A new review task, as the API and the CLI take it."""

    model_config = ConfigDict(extra="forbid", strict=True)  # `true` or "2" reviewers is a client's mistake
    name: str = Field(min_length=1, max_length=64, description="Lowercase letters, digits, '-' and '_'.")
    kind: Kind = Field(description="pairwise: choose between two answers; rubric: score 1-5; correction.")
    guidelines: str | None = Field(default=None, max_length=20_000, description="Shown beside every item.")
    overlap: int = Field(default=2, ge=1, le=10, description="Reviewers who judge each item.")
    assignment_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60, description="How long a hold lasts.")

    @field_validator("guidelines")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        # The API refuses these in any body; a file given to the CLI is checked here (PostgreSQL refuses NUL).
        if text is not None and (problem := text_problem(text)):
            raise ValueError(problem)
        return text


@dataclass(frozen=True)
class Task:
    id: str
    kind: Kind
    guidelines: str
    overlap: int
    assignment_minutes: int
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Item:
    id: str
    task_id: str
    interaction_id: str
    other_interaction_id: str | None
    reason: str
    priority: float
    added_by: str
    created_at: datetime


def redact_guidelines(spec: TaskIn, redactor: Redactor, tenant: TenantStore) -> TaskIn:
    """`spec` with its guidelines redacted by the tenant's mode, like every other text tuneloop stores (they
    are shown on every review screen)."""
    if not spec.guidelines:
        return spec
    [clean] = redactor.redact_texts(
        [spec.guidelines], tenant.tenant.redaction, tenant.tenant_id, key_scope=key_scope(tenant.tenant)
    )
    return spec.model_copy(update={"guidelines": clean})


def create_task(tenant: TenantStore, spec: TaskIn, *, actor: str) -> Task:
    """Store a new task (audited); Conflict if the name is taken."""
    if not TASK_NAME.fullmatch(spec.name):
        raise BadRequest(
            f"task name {spec.name[:64]!r}: use lowercase ASCII letters, digits, '-' or '_'", param="name"
        )
    task = Task(
        id=spec.name,
        kind=spec.kind,
        # Guidelines a reviewer could not read (blank, or zero-width characters) are none: the defaults show.
        guidelines=spec.guidelines.strip()
        if spec.guidelines and visible(spec.guidelines)
        else DEFAULT_GUIDELINES[spec.kind],
        overlap=spec.overlap,
        assignment_minutes=spec.assignment_minutes,
        created_by=actor,
        created_at=now_utc(),
    )

    def insert(tx: TenantTx) -> None:
        if tx.first(review_tasks, review_tasks.c.id == task.id) is not None:
            raise Conflict(f"review task {task.id!r} already exists", param="name")
        tx.insert(review_tasks, **task.__dict__)
        tx.audit(actor=actor, action="review.task", subject=task.id,
                 details={"kind": task.kind, "overlap": task.overlap})  # fmt: skip

    tenant.transaction(insert)
    return task


def list_tasks(tenant: TenantStore) -> list[Task]:
    return [_task(r) for r in tenant.all(review_tasks, order_by=(review_tasks.c.created_at,))]


def get_task(tenant: TenantStore, task_id: str) -> Task:
    row = tenant.first(review_tasks, review_tasks.c.id == task_id)
    if row is None:
        raise NotFound(
            f"no review task {task_id[:64]!r} — list them with `tuneloop review tasks --tenant NAME`",
            param="task",
        )
    return _task(row)


def add_items(
    tenant: TenantStore,
    task: Task,
    wanted: list[tuple[str, str | None, str, float]],
    *,
    actor: str,
    sent: dict[str, str] | None = None,
) -> list[Item]:
    """Queue (interaction, other interaction or None, reason, priority) items; ones queued already are
    skipped. NotFound for an interaction this tenant does not own; BadRequest for a pair the task cannot
    show (a pairwise item needs two choices or a second interaction, other kinds one answer). `sent` maps
    stored ids to the ids the client sent, so an error names the id the client knows, not its `ref-` hash."""
    now = now_utc()
    named = sent or {}

    def insert(tx: TenantTx) -> list[Item]:
        ids = {i for iid, other, _, _ in wanted for i in (iid, other) if i}
        rows = tx.all(
            interactions, interactions.c.id.in_(ids), columns=(interactions.c.id, interactions.c.choices)
        )
        choices = {r.id: len(r.choices) for r in rows}
        # Only the rows these items could repeat: reading the whole task here would hold the write lock
        # for longer the larger the task grows.
        existing = {
            (r.interaction_id, r.other_interaction_id)
            for r in tx.all(
                review_items,
                review_items.c.task_id == task.id,
                review_items.c.interaction_id.in_({iid for iid, _, _, _ in wanted}),
                columns=(review_items.c.interaction_id, review_items.c.other_interaction_id),
            )
        }
        added = []
        for iid, other, reason, priority in wanted:
            for ref in (iid, other):
                if ref and ref not in choices:
                    raise NotFound(
                        f"interaction {named.get(ref, ref)[:128]!r} not found", param="interaction_id"
                    )
            _check_shape(task, iid, other, choices[iid], named.get(iid, iid))
            if (iid, other) in existing:
                continue
            existing.add((iid, other))
            item = Item(
                "ri-" + uuid.uuid4().hex[:16], task.id, iid, other, reason, float(priority), actor, now
            )
            tx.insert(review_items, **item.__dict__)
            added.append(item)
        if added:
            reasons = sorted({i.reason for i in added})
            tx.audit(actor=actor, action="review.queue", subject=task.id,
                     details={"added": len(added), "reasons": reasons})  # fmt: skip
        return added

    return tenant.transaction(insert)


def _check_shape(task: Task, iid: str, other: str | None, choices: int, name: str) -> None:
    if other == iid:
        raise BadRequest("other_interaction_id: names the item's own interaction; send a different one")
    if task.kind == "pairwise" and other is None and choices < 2:
        raise BadRequest(
            f"interaction {name!r} has one answer; a pairwise item needs two choices or other_interaction_id",
            param="other_interaction_id",
        )
    if task.kind != "pairwise" and other is not None:
        raise BadRequest(f"a {task.kind} task judges one answer; drop other_interaction_id")


def queued_ids(tenant: TenantStore, task: Task) -> set[str]:
    """Interactions already queued in the task (either side of a pair)."""
    rows = tenant.all(review_items, review_items.c.task_id == task.id)
    return {i for r in rows for i in (r.interaction_id, r.other_interaction_id) if i}


def next_item(tenant: TenantStore, task: Task, reviewer: str) -> Item | None:
    """The item this reviewer holds, else a fresh hold on the next one due; None when nothing is left.
    Asking again while the hold lasts answers the same item and takes no second hold.

    Chosen by the store, not in Python: this runs in a serialized transaction, which on SQLite holds the
    write lock of every tenant, so it must not take time that grows with the task (reading a task of 20,000
    items row by row took 0.4 s a call, and a few reviewers asking at once made other tenants' writes 503).
    """
    now = now_utc()

    def assign(tx: TenantTx) -> Item | None:
        tx.serialize()  # reviewers asking at once: each sees the holds handed out before its own
        item, held = _choose(tx, task, reviewer, now)
        if item is not None and not held:
            _hold(tx, task, item.id, reviewer, now)
        return item

    return tenant.transaction(assign)


def peek_item(tenant: TenantStore, task: Task, reviewer: str) -> Item | None:
    """What `next_item` would answer, without taking or renewing a hold: the item this reviewer holds, else
    the next one due. For showing work on a page (a GET), which must not lock items away from others."""
    with tenant.reading() as tx:
        return _choose(tx, task, reviewer, now_utc())[0]


def _choose(tx: TenantTx, task: Task, reviewer: str, now: datetime) -> tuple[Item | None, bool]:
    """(the reviewer's live hold, True), else (the highest-priority item they have not judged whose
    `overlap` places others have not filled, False), else (None, False)."""
    ra, ri = review_assignments, review_items
    own = (ra.c.task_id == task.id, ra.c.reviewer == reviewer)
    live = (*own, ra.c.status == "assigned", ra.c.expires_at > now)
    hold = tx.first(ra, *live, columns=(ra.c.item_id,))
    held = None if hold is None else tx.first(ri, ri.c.id == hold.item_id, ri.c.task_id == task.id)
    if held is not None:
        return _item(held), True
    # Places others fill, per item; and the items this reviewer labelled or skipped (never again).
    others = (ra.c.task_id == task.id, ra.c.reviewer != reviewer, _takes_a_place_sql(now))
    counted = (ra.c.item_id, sa.func.count().label("taken"))
    places = tx.query(ra, *others, columns=counted).group_by(ra.c.item_id).subquery()
    judged = tx.query(ra, *own, ra.c.status != "assigned", columns=(ra.c.item_id,))
    taken = sa.func.coalesce(places.c.taken, 0)
    due = tx.execute(
        tx.query(ri, ri.c.task_id == task.id, ri.c.id.not_in(judged), taken < task.overlap)
        .outerjoin(places, places.c.item_id == ri.c.id)
        .order_by(ri.c.priority.desc(), taken.desc(), ri.c.created_at, ri.c.id)
        .limit(1)
    ).first()
    return (None if due is None else _item(due)), False


def _takes_a_place_sql(now: datetime) -> Any:
    """`_takes_a_place` as a condition on review_assignments."""
    ra = review_assignments
    return sa.or_(ra.c.status == "labelled", sa.and_(ra.c.status == "assigned", ra.c.expires_at > now))


def _takes_a_place(a: Any, now: datetime) -> bool:
    """Whether an assignment fills one of its item's `overlap` places: a label, or a hold not yet lapsed.
    A skip hands the item back: it must not keep the place, or an item skipped `overlap` times is
    offered to nobody ever again."""
    return a.status == "labelled" or (a.status == "assigned" and utc(a.expires_at) > now)


def claim(tenant: TenantStore, task: Task, item: Item, reviewer: str) -> None:
    """Hold `item` for the reviewer about to label it; Conflict when its `overlap` places are filled by
    others. A label does not need a hold from `next_item` first (a lapsed hold is still labelled), but
    one sent for an item whose overlap is taken would give it more judgements than the task asks."""
    now = now_utc()

    def hold(tx: TenantTx) -> None:
        tx.serialize()  # as in next_item: two reviewers labelling at once see each other's hold
        rows = tx.all(review_assignments, review_assignments.c.item_id == item.id)
        mine = next((a for a in rows if a.reviewer == reviewer), None)
        if mine is not None and (mine.status == "labelled" or _takes_a_place(mine, now)):
            return  # a label again (duplicate or conflict, decided by the caller) or a live hold
        taken = sum(_takes_a_place(a, now) for a in rows if a.reviewer != reviewer)
        if taken >= task.overlap:
            raise Conflict(
                f"item {item.id} already has the {task.overlap} reviewer(s) review task {task.id!r} asks "
                "for; take your next item (reload the review screen, or "
                f"POST /v1/review/tasks/{task.id}/next)",
                param="item",
            )
        _hold(tx, task, item.id, reviewer, now)

    tenant.transaction(hold)


def _hold(tx: TenantTx, task: Task, item_id: str, reviewer: str, now: datetime) -> None:
    """Give the reviewer a hold on the item for the task's `assignment_minutes` (renewing any earlier one)."""
    until = {"status": "assigned", "assigned_at": now,
             "expires_at": now + timedelta(minutes=task.assignment_minutes)}  # fmt: skip
    where = (review_assignments.c.item_id == item_id, review_assignments.c.reviewer == reviewer)
    if not tx.update(review_assignments, *where, **until):
        tx.insert(review_assignments, item_id=item_id, reviewer=reviewer, task_id=task.id, **until)


def get_item(tenant: TenantStore, task: Task, item_id: str) -> Item:
    row = tenant.first(review_items, review_items.c.id == item_id, review_items.c.task_id == task.id)
    if row is None:
        raise NotFound(f"no item {item_id[:64]!r} in review task {task.id!r}", param="item")
    return _item(row)


def record(tenant: TenantStore, task: Task, item: Item, reviewer: str, status: str, **values: Any) -> None:
    """Mark the reviewer's item labelled or skipped (with the label and its event id)."""
    now = now_utc()
    done = {"status": status, "labelled_at": now, **values}

    def write(tx: TenantTx) -> None:
        where = (review_assignments.c.item_id == item.id, review_assignments.c.reviewer == reviewer)
        if not tx.update(review_assignments, *where, **done):
            tx.insert(review_assignments, item_id=item.id, reviewer=reviewer, task_id=task.id,
                      assigned_at=now, expires_at=now, **done)  # fmt: skip

    tenant.transaction(write)


def assignment(tenant: TenantStore, item: Item, reviewer: str) -> Any:
    """The reviewer's assignment row for the item, or None."""
    return tenant.first(
        review_assignments, review_assignments.c.item_id == item.id, review_assignments.c.reviewer == reviewer
    )


def labels(tenant: TenantStore, task: Task) -> list[Any]:
    """Every label given in the task, oldest first."""
    return tenant.all(
        review_assignments,
        review_assignments.c.task_id == task.id,
        review_assignments.c.status == "labelled",
        order_by=(review_assignments.c.labelled_at, review_assignments.c.item_id),
    )


def queue_counts(tenant: TenantStore, task: Task) -> dict[str, int]:
    """Items queued, items with all their labels, and labels given."""
    items = tenant.all(review_items, review_items.c.task_id == task.id, columns=(review_items.c.id,))
    given: dict[str, int] = {}
    for a in labels(tenant, task):
        given[a.item_id] = given.get(a.item_id, 0) + 1
    done = sum(given.get(r.id, 0) >= task.overlap for r in items)
    return {"items": len(items), "done": done, "waiting": len(items) - done, "labels": sum(given.values())}


def _task(row: Any) -> Task:
    return Task(row.id, row.kind, row.guidelines, row.overlap, row.assignment_minutes, row.created_by,
                utc(row.created_at))  # fmt: skip


def _item(row: Any) -> Item:
    return Item(row.id, row.task_id, row.interaction_id, row.other_interaction_id, row.reason, row.priority,
                row.added_by, utc(row.created_at))  # fmt: skip
