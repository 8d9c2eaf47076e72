"""`/metrics` in Prometheus text format: HTTP requests, generation, and KPIs per tenant and version.

Each app gets its own CollectorRegistry (never the process-global one), so many apps can live in one
process. Every metric is in base units (seconds, ratios; counters end in `_total`). KPI gauges are computed
from the store over the last KPI_WINDOW at most once per `Settings.kpi_metrics_seconds` per process, never
at every scrape. The endpoint answers admin keys only: it names every tenant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloop.clock import now_utc
from tuneloop.config import tenant_policy
from tuneloop.errors import Forbidden, TuneloopError
from tuneloop.monitor.kpis import GAUGE_FIELDS, kpis
from tuneloop.serve.backends.base import Backend
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store

log = logging.getLogger("tuneloop")
StoreAt = tuple[Store, Path]  # the store and the HOME its tenants' policy files live in
KPI_WINDOW = timedelta(hours=1)
UNMATCHED = "<unmatched>"  # the route label of 404s: raw paths would be unbounded label values
# Any client can invent a method, and every new label value is a new series kept forever.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Each of kpis.GAUGE_FIELDS -> (metric name after `tuneloop_kpi_`, factor to its base unit, help).
KPI_GAUGES = {
    "volume": ("interactions", 1.0, "interactions"),
    "positive_rate": ("positive_ratio", 1.0, "share of rated interactions with positive feedback"),
    "negative_rate": ("negative_ratio", 1.0, "share of rated interactions with negative feedback"),
    "mean_reward": ("mean_reward", 1.0, "mean reward under the tenant's reward policy"),
    "escalation_rate": ("escalation_ratio", 1.0, "share of interactions escalated"),
    "latency_p50_ms": ("latency_p50_seconds", 0.001, "median response latency"),
    "latency_p95_ms": ("latency_p95_seconds", 0.001, "95th percentile response latency"),
    "error_rate": ("error_ratio", 1.0, "share of interactions that failed"),
    "refusal_rate": ("refusal_ratio", 1.0, "share of answers that refuse"),
    "safety_flags": ("safety_flags", 1.0, "interactions flagged unsafe"),
    "sessions": ("sessions", 1.0, "sessions"),
    "resolution_rate": ("resolution_ratio", 1.0, "share of sessions resolved"),
    "resolution_p50_s": ("resolution_p50_seconds", 1.0, "median time to resolution"),
    "first_action_p50_s": ("first_action_p50_seconds", 1.0, "median time to the user's first action"),
    "followup_rate": ("followup_ratio", 1.0, "share of answers followed by a follow-up question"),
    "repeat_contact_rate": ("repeat_contact_ratio", 1.0, "share of sessions followed by another contact"),
}
# Time to first token on 2 CPU cores runs from ~50 ms (idle) to tens of seconds (a full queue).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class KPICollector(Collector):
    """Gauges `tuneloop_kpi_<name>{tenant, version}` over the last `window`, recomputed at most every
    `ttl` seconds however often and from however many scrapers this process is scraped.

    Only the first scrape waits for the computation (seconds on a busy tenant); after that a scrape past
    the TTL gets the last values at once and starts one recomputation in the background.
    """

    def __init__(
        self, store: Callable[[], StoreAt | None], ttl: float, window: timedelta = KPI_WINDOW
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.window = window
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None
        self._refreshing = False

    def describe(self) -> list:
        return []  # registering must not query the store, which may not be open yet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            cached = self._cached
            stale = cached is None or time.monotonic() - cached[0] > self.ttl
            start = stale and not self._refreshing
            self._refreshing = self._refreshing or start
        if cached is None and start:
            self._refresh()
            cached = self._cached
        elif start:
            threading.Thread(target=self._refresh, name="tuneloop-kpi-metrics", daemon=True).start()
        yield from (cached or (0.0, []))[1]

    def _refresh(self) -> None:
        try:
            self._cached = (time.monotonic(), self._families())
        except Exception:  # a busy or unreachable store: keep the last values, try at the next scrape
            log.exception("computing KPI gauges for /metrics failed")
        finally:
            with self._lock:
                self._refreshing = False

    def _families(self) -> list[GaugeMetricFamily]:
        opened = self.store()
        if opened is None:
            return []
        store, home = opened
        window = f"over the last {int(self.window.total_seconds())} s"
        families = {}
        for field in GAUGE_FIELDS:
            name, _, text = KPI_GAUGES[field]
            families[field] = GaugeMetricFamily(
                f"tuneloop_kpi_{name}", f"{text} {window}", labels=["tenant", "version"]
            )
        since = now_utc() - self.window
        for tenant in store.tenants():
            try:
                policy = tenant_policy(home, tenant.name, RewardPolicy)
            except TuneloopError as exc:  # one tenant's broken policy file must not stop every tenant's KPIs
                log.warning("KPI gauges of tenant %s left out: %s", tenant.name, exc.message)
                continue
            for kpi in kpis(store.for_tenant(tenant), policy, since=since):
                for field in GAUGE_FIELDS:
                    value = getattr(kpi, field)
                    if value is not None:
                        factor = KPI_GAUGES[field][1]
                        families[field].add_metric([tenant.name, kpi.version], float(value) * factor)
        return list(families.values())


class Metrics:
    """One app's registry: HTTP requests, generation (queue, time to first token, tokens/s), KPIs."""

    def __init__(self, store: Callable[[], StoreAt | None], kpi_seconds: float) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneloop_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tuneloop_http_request_duration_seconds",
            "Time to the last byte of the response, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tuneloop_generation_queue_depth",
            "Generation requests waiting for the embedded model, or in flight to the upstream.",
            registry=self.registry,
        )
        self.first_token = Histogram(
            "tuneloop_generation_time_to_first_token_seconds",
            "From queueing a sequence to its first generated token (embedded backend).",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.decode_speed = Histogram(
            "tuneloop_generation_tokens_per_second",
            "Each finished sequence's decode speed after its first token (embedded backend).",
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "tuneloop_generation_completion_tokens",
            "Tokens generated (embedded backend); its rate is the server's throughput in tokens/s.",
            registry=self.registry,
        )
        self.group_commits = Histogram(
            "tuneloop_store_group_commit_calls",
            "Captured writes (requests' interactions and feedback) committed together in one transaction.",
            buckets=GROUP_BUCKETS,
            registry=self.registry,
        )
        if kpi_seconds > 0:
            self.registry.register(KPICollector(store, kpi_seconds))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def watch(self, backend: Backend) -> None:
        """Follow `backend`'s queue and, for the embedded model, each finished sequence's timings."""
        from tuneloop.serve.backends.embedded import EmbeddedBackend

        self.queue_depth.set_function(lambda: backend.queued)
        if isinstance(backend, EmbeddedBackend):
            backend.observe(self._finished)

    def _finished(self, seq: Any, at: float) -> None:
        """A sequence finished on the model's worker thread (prometheus_client is thread-safe)."""
        if seq.first_token_at is None:
            return
        self.first_token.observe(seq.first_token_at - seq.queued_at)
        self.tokens.inc(seq.completion_tokens)
        if seq.completion_tokens > 1 and at > seq.first_token_at:
            self.decode_speed.observe((seq.completion_tokens - 1) / (at - seq.first_token_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)


ACCESS_LOG = logging.getLogger("tuneloop.access")


class MetricsMiddleware:
    """Times, counts and logs every HTTP request by the matched route's template, never the raw path (a path
    or query may hold ids a client chose) nor the client's address (uvicorn's own access log is off)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router writes the matched route into this same scope dict on the way in.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.observe(method, route, status, time.perf_counter() - started)
            # No client address: an IP address is personal data, and a record's arguments reach every handler
            # an operator attaches, so it is never put in the record at all.
            ACCESS_LOG.info('"%s %s HTTP/%s" %d', method, route, scope["http_version"], status)


def install_metrics(app: FastAPI, kpi_seconds: float) -> Metrics:
    """Add request timing and `GET /metrics` (admin key) to `app`; call before the app starts, and
    `metrics.watch(backend)` once the backend has started."""

    def store() -> StoreAt | None:
        state: Any = getattr(app.state, "tuneloop", None)
        return (state.store, state.settings.home) if state is not None else None

    metrics = Metrics(store, kpi_seconds)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        principal = await request.app.state.tuneloop.auth.authorize(request)
        if not principal.is_admin:
            raise Forbidden("/metrics needs an admin key — create one with `tuneloop tenants key --admin`")
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
