"""Per-tenant admission on every tenant route: a tenant at its concurrency cap is refused (429) on each of
them while another tenant is served, an admin key naming a tenant counts against that tenant, and a streamed
answer holds its slot until its last chunk. Real server before a stand-in upstream that streams slowly."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.live import serve_app
from tuneloop import Settings
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store

MODEL = "slow-standin"


def slow_upstream(release: threading.Event) -> FastAPI:
    """An OpenAI-compatible upstream whose streamed answer sends one chunk, then waits for `release`."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        await request.json()
        head = {"id": "up", "object": "chat.completion.chunk", "model": MODEL}

        def event(delta: dict, reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

        async def events() -> AsyncIterator[str]:
            yield event({"content": "Lisbon "})
            while not release.is_set():
                await asyncio.sleep(0.02)
            yield event({"content": "in spring."})
            yield event({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A gateway whose tenants may each have one request in progress: tenants `busy` and `calm`."""
    release = threading.Event()
    with serve_app(slow_upstream(release)) as upstream:
        settings = Settings(
            home=tmp_path_factory.mktemp("admission"),
            backend="openai",
            upstream_url=f"{upstream}/v1",
            tenant_max_concurrency=1,
            tenant_rate_limit=1000,
            tenant_rate_burst=1000,
        )
        store = Store(settings.database_url)
        keys = {name: store.create_tenant(name, redaction="off")[1] for name in ("busy", "calm")}
        keys["admin"] = store.add_key(None)
        store.close()
        app = create_app(settings)
        with serve_app(app) as url:
            yield {"app": app, "url": url, "keys": keys, "release": release}


def _as(site: dict[str, Any], tenant: str) -> dict[str, str]:
    """Headers of an admin key naming `tenant`: every tenant route takes them, the admin-only ones too."""
    return {"Authorization": f"Bearer {site['keys']['admin']}", "X-Tuneloop-Tenant": tenant}


def _tenant_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every tenant route the app serves under /v1/."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            filled = path
            for param in operation.get("parameters", []):
                if param["in"] == "path":
                    value = param["schema"].get("enum", ["x-1"])[0]
                    filled = filled.replace(f"{{{param['name']}}}", value)
            out.append((method.upper(), filled))
    return out


def _send(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {"json": {}} if method in ("POST", "PUT") else {}
    return http.request(method, path, headers=headers, **body)


def _stall(site: dict[str, Any]) -> socket.socket:
    """A connection whose request to tenant `busy` sends its head and never the rest of its body."""
    port = int(site["url"].rsplit(":", 1)[1])
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(
        b"POST /v1/feedback HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + site["keys"]["busy"].encode() + b"\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    return stalled


@pytest.fixture
def busy_slot(site: dict[str, Any]) -> Iterator[None]:
    """Tenant `busy`'s one slot, held by a request whose body never finishes arriving."""
    stalled = _stall(site)
    with httpx.Client(base_url=site["url"]) as http:
        deadline = time.monotonic() + 20
        while http.get("/v1/feedback", headers=_as(site, "busy")).status_code != 429:
            assert time.monotonic() < deadline, "the stalled request never took its tenant's slot"
            if select.select([stalled], [], [], 0)[0]:  # answered: the probe took the slot first
                stalled.close()
                stalled = _stall(site)
            time.sleep(0.05)
        yield
    stalled.close()
    # The client hung up: its slot comes back.
    with httpx.Client(base_url=site["url"]) as http:
        deadline = time.monotonic() + 20
        while http.get("/v1/feedback", headers=_as(site, "busy")).status_code == 429:
            assert time.monotonic() < deadline, "a closed request kept its tenant's slot"
            time.sleep(0.05)


def test_a_tenant_at_its_cap_is_refused_on_every_tenant_route_while_another_is_served(
    site: dict[str, Any], busy_slot: None
) -> None:
    routes = _tenant_routes(site["app"])
    paths = {p for _, p in routes}
    # The routes that used to skip admission are among those checked.
    assert {"/v1/review/tasks", "/v1/governance/versions", "/v1/users/forget", "/v1/models"} <= paths
    with httpx.Client(base_url=site["url"], timeout=30) as http:
        for method, path in routes:
            refused = _send(http, method, path, _as(site, "busy"))
            assert refused.status_code == 429, (method, path, refused.status_code, refused.text)
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "too_many_concurrent_requests"
            served = _send(http, method, path, _as(site, "calm"))
            assert served.status_code != 429 and served.status_code < 500, (method, path, served.text)
        # The tenant's own keys are refused too, not only an admin naming it.
        own = {"Authorization": f"Bearer {site['keys']['busy']}"}
        assert http.get("/v1/review/tasks", headers=own).status_code == 429
        assert http.get("/v1/governance/loop", headers=own).status_code == 429


def test_a_streamed_answer_holds_its_tenants_slot_until_its_last_chunk(site: dict[str, Any]) -> None:
    release: threading.Event = site["release"]
    release.clear()
    own = {"Authorization": f"Bearer {site['keys']['busy']}"}
    body = {"messages": [{"role": "user", "content": "Where to in May?"}], "stream": True}
    with httpx.Client(base_url=site["url"], timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", headers=own, json=body) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # streaming has begun
            during = http.get("/v1/feedback", headers=own)
            other = http.get("/v1/feedback", headers={"Authorization": f"Bearer {site['keys']['calm']}"})
            release.set()
            rest = [line for line in lines if line.startswith("data:")]
        after = http.get("/v1/feedback", headers=own)
    assert during.status_code == 429, during.text
    assert other.status_code == 200, other.text
    assert rest[-1] == "data: [DONE]"
    assert after.status_code == 200, after.text


def test_a_tenant_at_its_cap_is_refused_its_dashboard_pages_while_another_is_served(
    site: dict[str, Any], busy_slot: None
) -> None:
    pages = ["kpis", "progress", "versions", "canary", "gates", "drift", "audit", "review"]
    for tenant, status in (("busy", 429), ("calm", 200)):
        with httpx.Client(base_url=site["url"], timeout=30) as http:
            form = {"key": site["keys"][tenant], "next": "/dashboard"}
            signed_in = http.post("/dashboard/login", data=form)
            assert signed_in.status_code == 303, signed_in.text
            for slug in pages:
                answer = http.get(f"/dashboard/t/{tenant}/{slug}")
                assert answer.status_code == status, (tenant, slug, answer.status_code)
