"""What a reviewer sees of an item, and how their label becomes a `labeler` feedback event.

Labels go through `Capture`, the one ingest path, so they are redacted, idempotent and reach the next
snapshot and rater reliability like any feedback: a pairwise choice is a `preference`, a rubric score a
`rating`, a correction an `edit` (or a thumbs-up when the reviewer leaves the answer as it is).
"""

from __future__ import annotations

import hashlib
from typing import Any

from tuneloop.capture.events import FeedbackIn
from tuneloop.capture.ingest import Capture
from tuneloop.errors import BadRequest, Conflict, NotFound
from tuneloop.retrieve.extract import visible
from tuneloop.review.tasks import Item, Task, assignment, claim, next_item, peek_item, record
from tuneloop.store.repository import TenantStore


def item_view(tenant: TenantStore, task: Task, item: Item) -> dict[str, Any]:
    """The conversation and the answer(s) to judge; a pair is shown in an order fixed per item (so neither
    side is always first), each answer keeping its `index` (0: the interaction's own, 1: the other)."""
    first = tenant.get_interaction(item.interaction_id)
    prompt = [{"role": m["role"], "content": m["content"]} for m in first["messages"]]
    answers = [{"index": 0, "text": first["response"]}]
    if task.kind == "pairwise":
        other = (
            tenant.get_interaction(item.other_interaction_id)["response"]
            if item.other_interaction_id
            else first["choices"][1]
        )
        answers.append({"index": 1, "text": other})
        if hashlib.sha256(item.id.encode()).digest()[0] & 1:
            answers.reverse()
    return {"item": item, "messages": prompt, "answers": answers}


def next_view(tenant: TenantStore, task: Task, reviewer: str, *, hold: bool = True) -> dict[str, Any] | None:
    """The view of the next item for this reviewer, held for them (`next_item`), or with `hold=False` only
    shown (`peek_item`: the item they hold, else the next one due, holding nothing). An item whose
    interaction was erased meanwhile is skipped, so it never blocks the queue."""
    choose = next_item if hold else peek_item
    while (item := choose(tenant, task, reviewer)) is not None:
        try:
            return item_view(tenant, task, item)
        except NotFound:
            record(tenant, task, item, reviewer, "skipped")
    return None


def parse_label(task: Task, raw: Any) -> dict[str, Any]:
    """The label normalised for the task's kind; BadRequest says what a valid one looks like."""
    if not isinstance(raw, dict):
        raise BadRequest("label: expected a JSON object", param="label")
    if task.kind == "pairwise":
        chosen = raw.get("chosen")
        if set(raw) != {"chosen"} or type(chosen) is not int or chosen not in (0, 1):
            raise BadRequest(
                'label: a pairwise task takes {"chosen": 0 or 1} (the answer\'s index)', param="label"
            )
        return {"chosen": chosen}
    if task.kind == "rubric":
        score = raw.get("score")
        if set(raw) != {"score"} or type(score) is not int or not 1 <= score <= 5:
            raise BadRequest('label: a rubric task takes {"score": an integer from 1 to 5}', param="label")
        return {"score": score}
    text = raw.get("text")
    if set(raw) != {"text"} or not isinstance(text, str) or not visible(text):
        raise BadRequest('label: a correction task takes {"text": the corrected answer}', param="label")
    if "\x00" in text:  # PostgreSQL cannot store NUL
        raise BadRequest("label.text: contains a NUL character; remove it", param="label")
    return {"text": text}


def feedback_for(task: Task, item: Item, reviewer: str, label: dict[str, Any], answer: str) -> FeedbackIn:
    """The labeler event a label stands for; its id is fixed per item and reviewer (resent: a duplicate)."""
    base: dict[str, Any] = {
        "id": f"rv:{item.id}:{reviewer}",
        "interaction_id": item.interaction_id,
        "rater": reviewer,
        "source": "labeler",
        "metadata": {"review_task": task.id, "review_item": item.id},
    }
    if task.kind == "pairwise":
        chosen = label["chosen"]
        if item.other_interaction_id:
            ids = (item.interaction_id, item.other_interaction_id)
            value = {"chosen_interaction": ids[chosen], "rejected_interaction": ids[1 - chosen]}
        else:
            value = {"chosen": chosen, "rejected": 1 - chosen}
        return FeedbackIn(**base, kind="preference", value=value)
    if task.kind == "rubric":
        return FeedbackIn(**base, kind="rating", value=label["score"])
    if label["text"].strip() == answer.strip():
        return FeedbackIn(**base, kind="thumbs", value=1)
    return FeedbackIn(**base, kind="edit", value=label["text"])


def submit(
    tenant: TenantStore, capture: Capture, task: Task, item: Item, reviewer: str, raw: Any
) -> dict[str, Any]:
    """Write one reviewer's label: the feedback event, then the assignment. Resending the same label is a
    duplicate; a different label for an item already judged is a Conflict."""
    label = parse_label(task, raw)
    answer = tenant.get_interaction(item.interaction_id)["response"]
    event = feedback_for(task, item, reviewer, label, answer)
    # A correction's text is stored only as the redacted event; the assignment keeps whether it changed.
    kept = {"edited": event.kind == "edit"} if task.kind == "correction" else label
    held = assignment(tenant, item, reviewer)
    once = Conflict(f"you labelled item {item.id} already; each reviewer judges an item once", param="label")
    if held is not None and held.status == "labelled" and held.label != kept:
        raise once
    claim(tenant, task, item, reviewer)
    [result] = capture.add_feedback(tenant, [event])
    if result.status == "rejected" and result.code == 409:  # another correction text: the event's id is ours
        raise once
    if result.status == "rejected":
        raise BadRequest(result.error or "the label was rejected")
    record(tenant, task, item, reviewer, "labelled", label=kept, event_id=result.id)
    return {"item": item.id, "event_id": result.id, "status": result.status}


def skip(tenant: TenantStore, task: Task, item: Item, reviewer: str) -> None:
    """Hand the item back without a label; this reviewer is not offered it again."""
    held = assignment(tenant, item, reviewer)
    if held is not None and held.status == "labelled":
        raise Conflict(f"you labelled item {item.id} already; it cannot be skipped", param="item")
    record(tenant, task, item, reviewer, "skipped")
