"""Probes for orchestrators: `/healthz` (the process answers) and `/readyz` (it can do its work).

Both are unauthenticated and carry no tenant data. `/healthz` touches nothing, so a busy store never makes
a live process look dead (and get restarted); `/readyz` asks the store and the backend, so a load balancer
stops sending traffic to a replica that cannot serve it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tuneloop.serve.backends.base import Backend
from tuneloop.store.repository import Store

log = logging.getLogger("tuneloop")
READY_TIMEOUT_SECONDS = 3.0  # below a probe's usual timeout, so a hung check reads as "not ready"

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict:
    """200 while the process runs its event loop."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the store answers and the model backend is loaded (or answers); else 503 with reasons."""
    state: Any = getattr(request.app.state, "tuneloop", None)
    if state is None:
        return _answer({"app": "starting"})
    checks = {"store": _timed(state.calls(_ping, state.store))}
    if state.backend is not None:
        checks["backend"] = _timed(_backend_problem(state.backend))
    problems = await asyncio.gather(*checks.values())
    return _answer({name: problem or "ok" for name, problem in zip(checks, problems, strict=True)})


def _answer(checks: dict[str, str]) -> JSONResponse:
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, 200 if ready else 503)


def _ping(store: Store) -> None:
    with store.read() as conn:
        conn.execute(sa.text("SELECT 1"))


async def _timed(check: Any) -> str | None:
    """None when `check` finishes in time without error, else why not (one line, no secrets)."""
    try:
        problem = await asyncio.wait_for(check, READY_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_SECONDS:.0f} s"
    except Exception as exc:
        return f"failed ({type(exc).__name__})"
    return problem if isinstance(problem, str) else None


async def _backend_problem(backend: Backend) -> str | None:
    """Why `backend` cannot generate now: the embedded model not loaded, or the upstream not answering."""
    from tuneloop.serve.backends.embedded import EmbeddedBackend
    from tuneloop.serve.backends.openai_upstream import OpenAIUpstreamBackend

    if isinstance(backend, EmbeddedBackend) and backend.tokenizer is None:
        return "the embedded model is not loaded"
    if isinstance(backend, OpenAIUpstreamBackend):
        from tuneloop.errors import TuneloopError

        try:
            await backend._request("GET", "/models")  # the call start() made: the upstream lists its models
        except TuneloopError as exc:
            log.warning("readiness: %s", exc.message)
            # The probe is public: say what failed, not where the upstream lives (the log says).
            return "the upstream model server does not answer GET /models"
    return None
