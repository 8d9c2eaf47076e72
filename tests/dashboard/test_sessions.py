"""Dashboard sessions, CSRF, cookie flags, drift-check rate limit and key revocation, over real HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.live import serve_app
from tuneloop.config import Settings
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store

COOKIE = "tuneloop_dashboard"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("home")
    Store(Settings(home=home).database_url).close()
    with serve_app(create_app(Settings(home=home, backend="none"))) as url:
        yield url, home


def tenant(home: Path, name: str) -> str:
    store = Store(Settings(home=home).database_url)
    try:
        return store.create_tenant(name)[1]
    finally:
        store.close()


def login(url: str, key: str, **headers: str) -> httpx.Client:
    client = httpx.Client(base_url=url, follow_redirects=False)
    answer = client.post("/dashboard/login", data={"key": key, "next": "/dashboard"}, headers=headers)
    assert answer.status_code == 303, answer.text
    return client


def csrf(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNELOOP_HOME": str(home)}
    env.pop("TUNELOOP_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "tuneloop", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_the_cookie_is_an_opaque_session_token_with_safe_flags(server) -> None:
    url, home = server
    key = tenant(home, "cookies")
    client = login(url, key)
    header = next(c for c in client.cookies.jar if c.name == COOKIE)
    assert header.value != key and key not in header.value
    set_cookie = httpx.post(f"{url}/dashboard/login", data={"key": key}).headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie and "path=/dashboard" in set_cookie
    assert "secure" not in set_cookie and "max-age=43200" in set_cookie
    behind_tls = httpx.post(
        f"{url}/dashboard/login", data={"key": key}, headers={"X-Forwarded-Proto": "https"}
    ).headers["set-cookie"]
    assert "secure" in behind_tls.lower()
    store = Store(Settings(home=home).database_url)
    with store.read() as conn:
        stored = conn.execute(sa.text("select token_hash from dashboard_sessions")).scalars().all()
    store.close()
    assert header.value not in stored and len(stored) >= 3


def test_logout_needs_the_csrf_token_and_kills_the_session_server_side(server) -> None:
    url, home = server
    client = login(url, tenant(home, "logout"))
    token = client.cookies[COOKIE]
    refused = client.post("/dashboard/logout")
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert client.post("/dashboard/logout", data={"csrf": csrf(client, "/dashboard")}).status_code == 303

    replayed = httpx.get(f"{url}/dashboard/t/logout/kpis", cookies={COOKIE: token})
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/dashboard/login")


def test_login_from_another_site_is_refused(server) -> None:
    url, home = server
    key = tenant(home, "origin")
    evil = httpx.post(f"{url}/dashboard/login", data={"key": key}, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and "set-cookie" not in evil.headers
    login(url, key, Origin=url)


def test_drift_checks_need_csrf_and_are_rate_limited_per_tenant(server) -> None:
    url, home = server
    client = login(url, tenant(home, "drifty"))
    assert client.post("/dashboard/t/drifty/drift/check").status_code == 403
    token = csrf(client, "/dashboard/t/drifty/drift")
    assert client.post("/dashboard/t/drifty/drift/check", data={"csrf": token}).status_code == 303
    again = client.post("/dashboard/t/drifty/drift/check", data={"csrf": token})
    assert again.status_code == 429 and 0 < int(again.headers["retry-after"]) <= 60
    other = login(url, tenant(home, "calm"))
    token = csrf(other, "/dashboard/t/calm/drift")
    assert other.post("/dashboard/t/calm/drift/check", data={"csrf": token}).status_code == 303


def test_revoked_and_rotated_keys_stop_at_once_despite_the_auth_cache(server) -> None:
    url, home = server
    key = tenant(home, "revoked")
    client = login(url, key)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
    assert api.get("/v1/feedback").status_code == 200  # now in the server's auth cache

    done = cli(home, "tenants", "revoke", key[:10])
    assert done.returncode == 0, done.stderr
    assert api.get("/v1/feedback").status_code == 401
    assert client.get("/dashboard/t/revoked/kpis").status_code == 303

    old = tenant(home, "rotated")
    assert httpx.get(f"{url}/v1/feedback", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    rotated = cli(home, "tenants", "rotate", "rotated")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert httpx.get(f"{url}/v1/feedback", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert httpx.get(f"{url}/v1/feedback", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_pages_carry_a_strict_csp_and_api_docs_are_off_by_default(server) -> None:
    url, home = server
    client = login(url, tenant(home, "csp"))
    policy = client.get("/dashboard").headers["content-security-policy"]
    assert (
        "default-src 'self'" in policy
        and "object-src 'none'" in policy
        and "frame-ancestors 'none'" in policy
    )
    assert httpx.get(f"{url}/docs").status_code == 404 and httpx.get(f"{url}/redoc").status_code == 404
    paths = {
        getattr(r, "path", None)
        for r in create_app(Settings(home=home, backend="none", api_docs=True)).routes
    }
    assert {"/docs", "/redoc"} <= paths


def test_a_page_a_broken_policy_file_stops_is_an_html_error_with_the_dashboards_headers(server) -> None:
    url, home = server
    client = login(url, tenant(home, "broken"))
    policy = home / "policies" / "broken" / "reward_policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text("weights: [unclosed\n")
    answer = client.get("/dashboard/t/broken/kpis")
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
    assert "reward_policy.yaml" in answer.text and str(home) not in answer.text
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"
