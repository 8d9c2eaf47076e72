"""Admin routes for end users' rights: `POST /v1/users/forget` erases one user of the named tenant."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.privacy.erasure import forget_user
from tuneloop.serve.http import ADMIN, read_json, validate

router = APIRouter()


class ForgetIn(BaseModel):
    """The user travels in the body, never the path: request paths end up in access logs."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=256)


@router.post("/v1/users/forget")
async def forget(request: Request) -> dict[str, Any]:
    """Erase one end user of the tenant named by `X-Tuneloop-Tenant`; needs an admin key."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, ADMIN)
    body = validate(
        ForgetIn, await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars
    )
    stored = st.capture.identifier(tenant, body.user)
    # Erasure rewrites files and vacuums the database: off the event loop, and outside the store pool.
    erase = partial(forget_user, tenant, st.settings.home, stored or "", actor="api")
    erasure = await anyio.to_thread.run_sync(erase)
    return erasure.as_dict()
