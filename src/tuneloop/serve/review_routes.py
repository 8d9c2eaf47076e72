"""Review API: tasks and queues for operators, items and labels for reviewers (`/v1/review/...`).

A reviewer is known by their key's first 10 characters (as the audit log names keys); labels are written
as `labeler` feedback through the capture path.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.capture.events import Id
from tuneloop.review import labels
from tuneloop.review.agreement import task_agreement
from tuneloop.review.tasks import (
    Task,
    TaskIn,
    add_items,
    create_task,
    get_item,
    get_task,
    list_tasks,
    queue_counts,
    redact_guidelines,
)
from tuneloop.serve.http import OPERATE, REVIEW, Roles, bearer_key, read_json, validate
from tuneloop.store.repository import TenantStore

router = APIRouter(prefix="/v1/review")
MAX_ITEMS = 500


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interaction_id: Id
    other_interaction_id: Id | None = None


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS)


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: dict[str, Any]


async def _scope(request: Request, roles: Roles) -> tuple[Any, TenantStore, str]:
    """(app state, the tenant, the reviewer's id) for a key whose role is in `roles`; 403 otherwise."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, roles)
    # Authorised above, so the key is live; its first 10 characters name the reviewer in labels and audit.
    return st, tenant, bearer_key(request)[:10]


def _task_json(task: Task, counts: dict[str, int]) -> dict[str, Any]:
    return {"id": task.id, "kind": task.kind, "guidelines": task.guidelines, "overlap": task.overlap,
            "assignment_minutes": task.assignment_minutes, "created_at": task.created_at.isoformat(),
            **counts}  # fmt: skip


@router.get("/tasks")
async def tasks(request: Request) -> dict[str, Any]:
    """The tenant's review tasks with their queue counts."""
    st, tenant, _ = await _scope(request, REVIEW)

    def read() -> list[dict[str, Any]]:
        return [_task_json(t, queue_counts(tenant, t)) for t in list_tasks(tenant)]

    return {"data": await st.calls(read)}


@router.post("/tasks", status_code=201)
async def new_task(request: Request) -> dict[str, Any]:
    """Create a task: `{name, kind, guidelines?, overlap?, assignment_minutes?}`."""
    st, tenant, who = await _scope(request, OPERATE)
    spec = validate(TaskIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    spec = await st.redactions(tenant.tenant_id, redact_guidelines, spec, st.capture.redactor, tenant)
    task = await st.calls(create_task, tenant, spec, actor=f"api:{who}")
    return _task_json(task, {"items": 0, "done": 0, "waiting": 0, "labels": 0})


@router.post("/tasks/{task_id}/items", status_code=201)
async def add(request: Request, task_id: str) -> dict[str, Any]:
    """Queue items by hand: `{"items": [{"interaction_id", "other_interaction_id"?}]}`."""
    st, tenant, who = await _scope(request, OPERATE)
    body = validate(ItemsIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    task = await st.calls(get_task, tenant, task_id)
    ref = partial(st.capture.reference, tenant)
    wanted = [(ref(i.interaction_id), i.other_interaction_id and ref(i.other_interaction_id), "manual", 1.0)
              for i in body.items]  # fmt: skip
    # Answers and errors name interactions by the ids the client sent, never by their stored `ref-` hash.
    sent = {ref(i): i for item in body.items for i in (item.interaction_id, item.other_interaction_id) if i}
    added = await st.calls(add_items, tenant, task, wanted, actor=f"api:{who}", sent=sent)
    data = [{"id": i.id, "interaction_id": sent[i.interaction_id],
             "other_interaction_id": i.other_interaction_id and sent[i.other_interaction_id]}
            for i in added]  # fmt: skip
    return {"added": len(added), "data": data}


@router.post("/tasks/{task_id}/next")
async def next_for_me(request: Request, task_id: str) -> dict[str, Any]:
    """Hold the next item for this reviewer and show it: conversation, answer(s), guidelines."""
    st, tenant, reviewer = await _scope(request, REVIEW)

    def take() -> dict[str, Any]:
        task = get_task(tenant, task_id)
        view = labels.next_view(tenant, task, reviewer)
        if view is None:
            return {"task": task.id, "item": None, "guidelines": task.guidelines}
        item = view["item"]
        return {"task": task.id, "kind": task.kind, "guidelines": task.guidelines, "item": item.id,
                "reason": item.reason, "messages": view["messages"], "answers": view["answers"]}  # fmt: skip

    return await st.calls(take)


@router.post("/tasks/{task_id}/items/{item_id}/label")
async def label(request: Request, task_id: str, item_id: str) -> JSONResponse:
    """Label an item: `{"label": {"chosen": 0|1} | {"score": 1-5} | {"text": "..."}}` by the task's kind."""
    st, tenant, reviewer = await _scope(request, REVIEW)
    body = validate(LabelIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    task = await st.calls(get_task, tenant, task_id)
    item = await st.calls(get_item, tenant, task, item_id)
    # Redaction is CPU work: off the event loop, like every capture write.
    result = await st.redactions(
        tenant.tenant_id, labels.submit, tenant, st.capture, task, item, reviewer, body.label
    )
    return JSONResponse(result, status_code=201 if result["status"] == "accepted" else 200)


@router.post("/tasks/{task_id}/items/{item_id}/skip")
async def skip(request: Request, task_id: str, item_id: str) -> dict[str, Any]:
    """Hand an item back unlabelled; this reviewer is not offered it again."""
    st, tenant, reviewer = await _scope(request, REVIEW)
    task = await st.calls(get_task, tenant, task_id)
    item = await st.calls(get_item, tenant, task, item_id)
    await st.calls(labels.skip, tenant, task, item, reviewer)
    return {"item": item.id, "status": "skipped"}


@router.get("/tasks/{task_id}/agreement")
async def agreement(request: Request, task_id: str) -> dict[str, Any]:
    """Krippendorff's alpha for the task and each reviewer, with flagged reviewers."""
    st, tenant, _ = await _scope(request, OPERATE)
    return await st.calls(lambda: task_agreement(tenant, get_task(tenant, task_id)))
