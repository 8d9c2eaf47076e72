"""The review pages: a tenant's tasks with their queues and agreement, and one review screen per task kind.

A screen shows the reviewer's item (conversation, the answers side by side, the guidelines) and posts the
label with the session's CSRF token; `static/review.js` adds the keyboard shortcuts. Labels are written
through `review.labels.submit`, the same path as the review API.

Showing a screen (a GET) holds nothing: it shows the item the reviewer holds, else the next one due, so a
screen opened and left, a reload, or a browser's prefetch locks no item away from other reviewers. Holds
are taken by POSTs: labelling or skipping an item holds the next one for the screen that follows (as
`POST /v1/review/tasks/{task}/next` does), and a label claims its own item if it is not held yet.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tuneloop.dashboard.web import not_found, page, posted, render, reviewer_of, state, tenant_for
from tuneloop.errors import BadRequest, TuneloopError
from tuneloop.review import labels
from tuneloop.review.agreement import task_agreement
from tuneloop.review.tasks import get_item, get_task, list_tasks, next_item, queue_counts
from tuneloop.serve.http import admit
from tuneloop.store.repository import TenantStore

# Included by the app beside the dashboard's router, not inside it: FastAPI names a route of a nested
# router by its own path alone, so metrics and access lines read `/t/{name}/review`.
router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("/t/{name}/review")
def review_home(request: Request, name: str) -> Response:
    def build(tenant: TenantStore) -> dict[str, Any]:
        rows = []
        for task in list_tasks(tenant):
            rows.append({"task": task, "counts": queue_counts(tenant, task),
                         "agreement": task_agreement(tenant, task)})  # fmt: skip
        return {"rows": rows}

    return page(request, name, "review", build, reviewers=True)


@router.get("/t/{name}/review/{task_id}")
def review_screen(request: Request, name: str, task_id: str, saved: str | None = None) -> Response:
    reviewer = reviewer_of(request)

    def build(tenant: TenantStore) -> dict[str, Any] | Response:
        task = get_task(tenant, task_id)
        if reviewer is None:
            return _relogin(request)
        view = labels.next_view(tenant, task, reviewer, hold=False)
        counts = queue_counts(tenant, task)
        return {"task": task, "view": view, "counts": counts, "reviewer": reviewer, "saved": saved}

    return page(request, name, "review_task", build, reviewers=True)


@router.post("/t/{name}/review/{task_id}/{item_id}")
async def review_label(request: Request, name: str, task_id: str, item_id: str) -> Response:
    """Label (or skip) an item from the screen's form, then show the next one."""
    sent = await posted(request, state(request).settings.max_body_bytes)
    if isinstance(sent, Response):
        return sent
    principal, form = sent
    tenant = await run_in_threadpool(tenant_for, request, principal, name)
    reviewer = reviewer_of(request)
    if tenant is None:
        return not_found(request, principal)
    if reviewer is None:
        return _relogin(request)
    await admit(request, tenant.tenant_id)

    def save() -> None:
        task = get_task(tenant, task_id)
        item = get_item(tenant, task, item_id)
        if "skip" in form:
            labels.skip(tenant, task, item, reviewer)
        else:
            label = _label(task.kind, form, state(request).settings.max_text_chars)
            labels.submit(tenant, state(request).capture, task, item, reviewer, label)
        next_item(tenant, task, reviewer)  # held for the screen this answer leads to ("here is the next")

    try:
        await run_in_threadpool(save)
    except TuneloopError as exc:
        return render(request, "error.html", exc.status, principal=principal, tenant=tenant.tenant,
                      title="Label not saved", message=exc.message)  # fmt: skip
    target = f"/dashboard/t/{quote(name)}/review/{quote(task_id)}?saved={quote(item_id)}"
    return RedirectResponse(target, status_code=303)


def _label(kind: str, form: dict[str, str], max_text: int) -> dict[str, Any]:
    """The label a screen's form sends, in the shape `labels.parse_label` checks."""
    field = {"pairwise": "chosen", "rubric": "score", "correction": "text"}[kind]
    if field not in form:
        raise BadRequest(f"the form sent no {field}; reload the page and choose again")
    value = form[field]
    if kind == "correction":
        # The form may be as large as an API body: hold a correction to the API's limit on one string.
        if len(value) > max_text:
            raise BadRequest(f"text: the correction is longer than {max_text} characters; shorten it")
        return {"text": value}
    # ASCII digits only: "²".isdigit() is true, yet int() refuses it.
    if not (value.isascii() and value.isdigit()) or len(value) > 2:
        raise BadRequest(f"{field}: {value[:20]!r} is not one of the offered choices")
    return {field: int(value)}


def _relogin(request: Request) -> Response:
    message = "This session does not say who is reviewing; log out and log in again with your key."
    return render(request, "error.html", 403, principal=None, title="Log in again", message=message)
