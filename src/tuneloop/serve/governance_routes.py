"""Governance over HTTP, for operator (and admin) keys: approve or reject a candidate, roll production back,
promote or retire a reward model, list the loop's turns, pause and resume the loop. Each call is what the
CLI does (`tuneloop versions ...`, `tuneloop loop ...`), audited as `via: api`."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.errors import NotFound
from tuneloop.loop.pause import pause, paused, resume
from tuneloop.loop.turns import list_turns
from tuneloop.registry.versions import MAX_ACTOR_CHARS, Registry, ServedKind, Version
from tuneloop.rollout import controller
from tuneloop.serve.http import OPERATE, clip, read_json, validate
from tuneloop.store.repository import TenantStore

router = APIRouter(prefix="/v1/governance")
VERSION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
ACTOR = "api"


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000, description="Why, for the audit log.")


class Decision(Reason):
    by: str = Field(min_length=1, max_length=MAX_ACTOR_CHARS, description="Who approves or rejects, by name.")


class Rollback(Reason):
    kind: ServedKind = Field("adapter", description="What to roll back: the adapter or the re-ranker.")
    to: str | None = Field(
        None, min_length=1, max_length=64, description="A retired version (default: the one replaced)."
    )


async def _call(request: Request, body: type[Reason]) -> tuple[Any, TenantStore, Any]:
    """The app state, the key's tenant (operator or admin keys only) and the validated JSON body."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    data = validate(body, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    if data.reason:
        # The audit chain cannot forget what it holds: reasons enter it redacted, whatever the tenant's mode.
        [data.reason] = await st.redactions(
            tenant.tenant_id, st.capture.redactor.redact_texts, [data.reason], "redact"
        )
    return st, tenant, data


def _version_id(version_id: str) -> str:
    if not VERSION_ID.fullmatch(version_id):
        raise NotFound(f"version {clip(version_id)!r} not found for this tenant", param="version")
    return version_id


def _public(version: Version) -> dict[str, Any]:
    return {"id": version.id, "kind": version.kind, "state": version.state}


@router.get("/versions")
async def versions(request: Request) -> dict[str, Any]:
    """Every version of the tenant with its state, oldest first."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    return {"data": [_public(v) for v in await st.calls(Registry(tenant).list)]}


@router.post("/versions/{version_id}/{action}")
async def decide(request: Request, version_id: str, action: Literal["approve", "reject"]) -> dict[str, Any]:
    """Approve or reject a candidate pending approval, or a winning canary's promotion, as `by`."""
    st, tenant, body = await _call(request, Decision)
    fn = controller.approve if action == "approve" else controller.reject
    reason = body.reason or f"{action}d over the API"
    await st.calls(fn, tenant, _version_id(version_id), by=body.by, reason=reason, via=ACTOR)
    return _public(await st.calls(Registry(tenant).get, version_id))


@router.post("/reward-models/{version_id}/{action}")
async def reward_model(
    request: Request, version_id: str, action: Literal["promote", "retire"]
) -> dict[str, Any]:
    """Make a reward model the judge, or retire it."""
    st, tenant, body = await _call(request, Reason)
    to = "production" if action == "promote" else "retired"
    reason = body.reason or f"{action} over the API"
    registry = Registry(tenant)
    version = await st.calls(
        registry.set_reward_model, _version_id(version_id), to, actor=ACTOR, reason=reason
    )
    return _public(version)


@router.post("/rollback")
async def rollback(request: Request) -> dict[str, Any]:
    """Restore the previous production adapter or re-ranker (or `to`) at once; routing follows within a
    second, retrieval within five."""
    st, tenant, body = await _call(request, Rollback)
    reason = body.reason or "rollback over the API"
    rolled_back, restored = await st.calls(
        Registry(tenant).rollback, to=body.to, actor=ACTOR, reason=reason, kind=body.kind
    )
    return {"rolled_back": rolled_back, "production": restored}


@router.get("/loop")
async def loop(request: Request) -> dict[str, Any]:
    """Whether the tenant's loop is paused, and its turns with their stages, outcomes and reports."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, OPERATE)
    pause_row, turns = await st.calls(lambda: (paused(tenant), list_turns(tenant)))
    return {"paused": asdict(pause_row) if pause_row else None, "turns": [asdict(t) for t in turns]}


@router.post("/loop/{action}")
async def pause_or_resume(request: Request, action: Literal["pause", "resume"]) -> dict[str, Any]:
    """Pause the tenant's loop (every process that runs it skips the tenant) or resume it."""
    st, tenant, body = await _call(request, Reason)
    reason = body.reason or f"{action} over the API"
    if action == "pause":
        await st.calls(pause, tenant, actor=ACTOR, reason=reason)
    else:
        await st.calls(resume, tenant, actor=ACTOR, reason=reason)
    return {"paused": action == "pause"}
