"""/healthz says the process lives; /readyz says the store answers and the model backend can generate."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.live import live_server, serve_app
from tuneloop.config import Settings


def test_a_server_with_a_working_store_is_live_and_ready(tmp_path: Path) -> None:
    with live_server(Settings(home=tmp_path, backend="none")) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok"}}


def test_readyz_is_503_naming_the_store_while_the_database_refuses_connections_and_healthz_stays_200(
    tmp_path: Path, postgres
) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    db_url = postgres.create_database(name)
    admin = f"host=127.0.0.1 port={postgres.port} user=tuneloop dbname=postgres"
    settings = Settings(home=tmp_path, backend="none", db_url=db_url, db_busy_timeout=1)
    with live_server(settings) as url, psycopg.connect(admin, autocommit=True) as conn:
        assert httpx.get(f"{url}/readyz").status_code == 200
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        down = httpx.get(f"{url}/readyz", timeout=10)
        live = httpx.get(f"{url}/healthz")
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        back = httpx.get(f"{url}/readyz", timeout=10)
    assert down.status_code == 503
    assert down.json()["status"] == "not ready"
    assert down.json()["checks"]["store"] != "ok"
    assert live.status_code == 200
    assert back.status_code == 200


def _upstream(healthy: threading.Event) -> FastAPI:
    """An OpenAI-compatible model server (outside tuneloop) whose model listing can be switched off."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        if not healthy.is_set():
            return JSONResponse({"error": {"message": "engine dead"}}, status_code=500)
        return JSONResponse({"object": "list", "data": [{"id": "org/model", "object": "model"}]})

    return app


def test_readyz_is_503_while_the_upstream_model_server_does_not_answer(tmp_path: Path) -> None:
    healthy = threading.Event()
    healthy.set()
    with serve_app(_upstream(healthy)) as upstream:
        settings = Settings(home=tmp_path, backend="openai", upstream_url=f"{upstream}/v1")
        with live_server(settings) as url:
            ok = httpx.get(f"{url}/readyz")
            healthy.clear()
            down = httpx.get(f"{url}/readyz")
    assert ok.status_code == 200, ok.text
    assert ok.json()["checks"] == {"store": "ok", "backend": "ok"}
    assert down.status_code == 503
    assert down.json()["checks"]["backend"] == "the upstream model server does not answer GET /models"
    assert upstream not in down.text  # the probe is public: it does not say where the upstream lives
