"""The FastAPI application: `create_app(settings)` builds everything; nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio.to_thread
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from tuneloop.capture import pending
from tuneloop.capture.ingest import Capture
from tuneloop.capture.public_terms import PublicTerms
from tuneloop.capture.redact import Redactor
from tuneloop.capture.spool import Spool
from tuneloop.config import Settings
from tuneloop.dashboard import review_pages
from tuneloop.dashboard import routes as dashboard_routes
from tuneloop.errors import BadRequest, NotFound, TuneloopError
from tuneloop.model_files import llamacpp_gguf
from tuneloop.monitor.metrics import install_metrics
from tuneloop.serve import (
    capture_routes,
    chat_routes,
    governance_routes,
    otlp_routes,
    privacy_routes,
    probes,
    retrieve_routes,
    review_routes,
)
from tuneloop.serve.backends.base import Backend
from tuneloop.serve.http import Admission, Auth, StoreCalls, TenantThreads, error_response
from tuneloop.serve.limits import TenantLimits
from tuneloop.serve.routing import Router
from tuneloop.store.engine import unavailable
from tuneloop.store.group_commit import GroupCommit
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store

log = logging.getLogger("tuneloop")
SPOOL_REPLAY_SECONDS = 15.0
PENDING_SWEEP_SECONDS = 60.0
# Redaction runs one batch at a time per process; a few threads per tenant keep it fed (and the default
# pool of 40 free for everything else).
REDACTION_THREADS = 4
# Indexing a document or embedding a query takes seconds of CPU: on the default pool, one tenant's 40
# uploads held every thread and another tenant's retrieval and dashboard waited 28 s for one.
RETRIEVAL_THREADS = 2


CLIENT_CLOSED = 499  # nginx's status for a request its client abandoned; /metrics counts it apart from 5xx


@dataclass
class AppState:
    """What every route needs, built once per app."""

    settings: Settings
    store: Store
    calls: StoreCalls
    writes: GroupCommit  # captured interactions and feedback: group-committed, acknowledged after commit
    auth: Auth
    capture: Capture
    redactions: TenantThreads  # the threads capture's redaction runs in, a few per tenant
    retrievals: TenantThreads  # the threads documents, retrieval and embeddings run in, a few per tenant
    spool: Spool
    backend: Backend | None
    router: Router | None
    # When each tenant's last dashboard drift check started (monotonic seconds), for its rate limit.
    drift_checks: dict[str, float] = field(default_factory=dict)


def make_backend(settings: Settings) -> Backend | None:
    """The serving backend `settings.backend` names; None serves the capture API alone."""
    gguf = llamacpp_gguf(settings.model, settings.engine) if settings.backend == "embedded" else None
    if gguf is not None:
        from tuneloop.serve.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend.from_settings(settings, gguf)
    if settings.backend == "embedded":
        from tuneloop.serve.backends.embedded import EmbeddedBackend

        return EmbeddedBackend.from_settings(settings)
    if settings.backend == "openai":
        from tuneloop.serve.backends.openai_upstream import OpenAIUpstreamBackend

        # The upstream names the model its own way; `model` stays the local copy adapters are trained on.
        named = settings.upstream_model or settings.model
        return OpenAIUpstreamBackend.from_settings(settings.model_copy(update={"model": named}))
    return None


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """Build the tuneloop HTTP service for `settings` (default: from the environment). `freeze_heap`, for
    a process of its own (`tuneloop serve`): what startup loaded is kept out of the collector's walks."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        secret = settings.hash_key()
        store = Store(
            settings.database_url,
            busy_timeout=settings.db_busy_timeout,
            pool_size=settings.db_pool_size,
            synchronous=settings.sqlite_synchronous,
            secret=secret,
        )
        redactor = Redactor(
            hash_key=secret,
            max_chars=settings.max_redact_chars,
            max_strings=settings.max_redact_strings,
        )
        redactor.warm_up()
        if backend is not None:
            await backend.start()
            metrics.watch(backend)
        calls = StoreCalls(settings.db_pool_size)
        redactions = TenantThreads(REDACTION_THREADS)
        writes = GroupCommit(store, observe=metrics.group_commits.observe)
        spool = Spool(settings.home / "spool" / "interactions.jsonl")
        app.state.tuneloop = AppState(
            settings=settings,
            store=store,
            calls=calls,
            writes=writes,
            auth=Auth(store, calls, redactions),
            capture=Capture(redactor, Pseudonyms(secret), PublicTerms(settings.public_term_users)),
            redactions=redactions,
            retrievals=TenantThreads(RETRIEVAL_THREADS),
            spool=spool,
            backend=backend,
            router=Router(backend) if backend else None,
        )
        replaying = asyncio.create_task(_replay_spool(spool, store, calls))
        sweeping = asyncio.create_task(_sweep_pending(store, calls))
        stop = threading.Event()
        if settings.loop_interval:
            # A worker, like `tuneloop worker`: under the tenants' leases, replicas never run one turn twice.
            from tuneloop.loop.worker import Worker

            threading.Thread(
                target=Worker(store, settings).run,
                args=(stop, settings.loop_interval),
                name="tuneloop-loop",
                daemon=True,
            ).start()
        if freeze_heap:
            # Libraries, models and the app live as long as the process, yet each full collection walked
            # them all: a 300 ms pause of every request and token stream every few seconds under load.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            stop.set()
            for task in (replaying, sweeping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if backend is not None:
                await backend.close()
            await anyio.to_thread.run_sync(writes.close)
            store.close()

    backend = make_backend(settings)
    limits = TenantLimits(
        settings.tenant_max_concurrency, settings.tenant_rate_limit, settings.tenant_rate_burst
    )
    generation_paths = {getattr(route, "path", "") for route in chat_routes.router.routes}
    # The docs pages load Swagger UI / ReDoc from a CDN with no CSP of ours: served only when asked for.
    docs = {} if settings.api_docs else {"docs_url": None, "redoc_url": None}
    app = FastAPI(title="tuneloop", version="0.1.0", lifespan=lifespan, **docs)
    app.include_router(probes.router)
    app.include_router(capture_routes.router)
    app.include_router(privacy_routes.router)
    app.include_router(governance_routes.router)
    app.include_router(otlp_routes.router)
    app.include_router(retrieve_routes.router)
    if backend is not None:
        app.include_router(chat_routes.router)

    app.include_router(review_routes.router)
    app.include_router(dashboard_routes.router)
    app.include_router(review_pages.router)
    # Every tenant route is admitted where it names its tenant (`Auth.tenant`); the slot is held until the
    # answer is sent in full, a stream's last chunk included.
    app.add_middleware(Admission, limits=limits)
    metrics = install_metrics(app, settings.kpi_metrics_seconds)

    @app.exception_handler(TuneloopError)
    async def on_tuneloop_error(_: Request, exc: TuneloopError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if p not in ("query", "path", "body"))
        return error_response(BadRequest(f"{field}: {err['msg']}", param=field))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404 and backend is None and request.url.path in generation_paths:
            return error_response(
                NotFound(
                    "this server has no model (TUNELOOP_BACKEND=none: the capture API only); serve with "
                    "TUNELOOP_BACKEND=embedded or openai to generate here"
                )
            )
        if exc.status_code == 404:
            return error_response(NotFound("no such endpoint — see /openapi.json (or README.md) for the API"))
        error = TuneloopError(str(exc.detail))
        error.status = exc.status_code
        error.type = "invalid_request_error"
        return error_response(error)

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.TimeoutError)
    async def on_store_error(_: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        busy = unavailable(exc)
        if busy is None:
            log.error("store error", exc_info=exc)
            return error_response(TuneloopError(f"internal error ({type(exc).__name__}); see the server log"))
        return error_response(busy)

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(_: Request, exc: ClientDisconnect) -> Response:
        # The client hung up before its body arrived: nobody reads this answer, and no server error occurred.
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(TuneloopError(f"internal error ({type(exc).__name__}); see the server log"))

    return app


def from_environment() -> FastAPI:
    """The app of one `tuneloop serve --workers` process, from the TUNELOOP_* environment it inherits. A
    setting it cannot serve with ends the process as a failed startup, one line in the log, so that uvicorn's
    supervisor stops rather than restart workers that fail the same way."""
    try:
        return create_app(Settings(), freeze_heap=True)
    except TuneloopError as exc:
        log.error("cannot start: %s", exc.message)
        from uvicorn.config import STARTUP_FAILURE

        sys.exit(STARTUP_FAILURE)


async def _sweep_pending(store: Store, calls: StoreCalls) -> None:
    """Every PENDING_SWEEP_SECONDS, attach pending feedback whose interaction came by another path (spool,
    OTLP) and drop expired pending feedback."""
    while True:
        await asyncio.sleep(PENDING_SWEEP_SECONDS)
        try:
            for tenant in await calls(store.tenants):
                await calls(pending.sweep, store.for_tenant(tenant))
        except Exception:
            log.exception("sweeping pending feedback failed")


async def _replay_spool(spool: Spool, store: Store, calls: StoreCalls) -> None:
    """Write spooled captures at start, then every SPOOL_REPLAY_SECONDS while any are left."""
    while True:
        try:
            if await calls(spool.replay, store):
                log.warning("spooled captures remain; retrying in %.0f s", SPOOL_REPLAY_SECONDS)
        except Exception:
            log.exception("replaying the capture spool failed")
        await asyncio.sleep(SPOOL_REPLAY_SECONDS)
