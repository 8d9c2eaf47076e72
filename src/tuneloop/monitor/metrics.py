"""`/metrics` in Prometheus text format: HTTP requests per route, and KPIs per tenant and version.

Each app gets its own CollectorRegistry (never the process-global one), so many apps can live in one
process. KPI gauges are computed from the store when scraped, over the last KPI_WINDOW, and cached briefly.
The endpoint answers admin keys only: it names every tenant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloop.clock import now_utc
from tuneloop.config import tenant_policy
from tuneloop.errors import Forbidden
from tuneloop.monitor.kpis import GAUGE_FIELDS, kpis
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store

StoreAt = tuple[Store, Path]  # the store and the HOME its tenants' policy files live in
KPI_WINDOW = timedelta(hours=1)
CACHE_SECONDS = 10.0
UNMATCHED = "<unmatched>"  # the route label of 404s: raw paths would be unbounded label values
# Any client can invent a method, and every new label value is a new series kept forever.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class KPICollector(Collector):
    """Gauges `tuneloop_kpi_<name>{tenant, version}` over the last `window`, computed at scrape time."""

    def __init__(self, store: Callable[[], StoreAt | None], window: timedelta = KPI_WINDOW) -> None:
        self.store = store
        self.window = window
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def describe(self) -> list:
        return []  # registering must not query the store, which may not be open yet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > CACHE_SECONDS:
                self._cached = (time.monotonic(), self._families())
            yield from self._cached[1]

    def _families(self) -> list[GaugeMetricFamily]:
        opened = self.store()
        if opened is None:
            return []
        store, home = opened
        window = f"over the last {int(self.window.total_seconds())} s"
        families = {
            name: GaugeMetricFamily(f"tuneloop_kpi_{name}", f"{name} {window}", labels=["tenant", "version"])
            for name in GAUGE_FIELDS
        }
        since = now_utc() - self.window
        for tenant in store.tenants():
            policy = tenant_policy(home, tenant.name, RewardPolicy)
            for kpi in kpis(store.for_tenant(tenant), policy, since=since):
                for name in GAUGE_FIELDS:
                    value = getattr(kpi, name)
                    if value is not None:
                        families[name].add_metric([tenant.name, kpi.version], float(value))
        return list(families.values())


class Metrics:
    """One app's registry: request counter and latency histogram, plus the KPI collector."""

    def __init__(self, store: Callable[[], StoreAt | None]) -> None:
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
        self.registry.register(KPICollector(store))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request; labels it with the matched route's template, never the raw path."""

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


def install_metrics(app: FastAPI) -> Metrics:
    """Add request timing and `GET /metrics` (admin key) to `app`; call before the app starts."""

    def store() -> StoreAt | None:
        state: Any = getattr(app.state, "tuneloop", None)
        return (state.store, state.settings.home) if state is not None else None

    metrics = Metrics(store)
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
