"""The dashboard in real headless Chromium: log in, open every page, check charts drew data, check scoping.

Every page is saved as a PNG under docs/screenshots/ so people can see the dashboard before installing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dashboard.site import SECRET, Site, build
from tests.live import serve_app as serve
from tuneloop.config import Settings
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
# `TUNELOOP_SCREENSHOTS=docs/screenshots make test` refreshes the pictures in the docs; by default they go to
# a temp dir, so a test run leaves the working tree as it found it.
SCREENSHOTS = Path(os.environ.get("TUNELOOP_SCREENSHOTS") or tempfile.mkdtemp(prefix="tuneloop-shots-"))
TENANT_PAGES = ("kpis", "progress", "versions", "canary", "gates", "drift", "review", "audit")
CHARTED = {"kpis", "progress", "canary", "drift"}

# For each canvas: the number of non-null points its Chart instance holds (-1 if no chart is attached),
# and whether any pixel was painted.
CHART_POINTS = """() => [...document.querySelectorAll('canvas[data-chart]')].map(c => {
  const chart = Chart.getChart(c);
  if (!chart) return [-1, false];
  const points = chart.data.datasets.reduce(
    (n, d) => n + d.data.filter(v => v !== null && v !== undefined).length, 0);
  const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = false;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { painted = true; break; } }
  return [points, painted];
})"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Site]]:
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, backend="none")
    store = Store(settings.database_url)
    seeded = build(store, home)
    store.close()
    with serve(create_app(settings)) as url:
        yield url, seeded


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing — run `make system` (scripts/system-deps.sh installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def logged_in(browser, url: str, key: str):
    """A fresh browser context logged in through the form; console errors are collected on it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{url}/dashboard/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    return page


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_tenant_pages_render_with_charts_that_hold_data(site, browser) -> None:
    url, seeded = site
    page = logged_in(browser, url, seeded.acme_key)
    assert "tl-" not in page.evaluate("document.cookie")  # the key cookie is HttpOnly

    for name in TENANT_PAGES:
        response = page.goto(f"{url}/dashboard/t/acme/{name}")
        assert response.status == 200, name
        charts = page.evaluate(CHART_POINTS)
        if name in CHARTED:
            assert charts, f"{name}: no charts"
            assert all(points > 0 and painted for points, painted in charts), (name, charts)
        shoot(page, name)
    assert page.errors == []


def test_pages_show_the_seeded_state(site, browser) -> None:
    url, seeded = site
    page = logged_in(browser, url, seeded.acme_key)

    page.goto(f"{url}/dashboard/t/acme/versions")
    assert page.locator("span.state.production").inner_text() == "production"
    assert "from v2" in page.locator("tr", has_text="v3").inner_text()
    page.goto(f"{url}/dashboard/t/acme/canary")
    assert (
        "exp-" in page.content() and "treatment" in page.content() and "Expected decision" in page.content()
    )
    page.goto(f"{url}/dashboard/t/acme/drift")
    assert page.locator("tr", has_text="input_drift").first.inner_text().count("drift") >= 2
    page.goto(f"{url}/dashboard/t/acme/gates")
    with page.expect_navigation() as opened:  # under load the title is read mid-navigation otherwise (blank)
        page.click("text=HTML report >> nth=0")
    assert "Gate report" in page.title()
    # Its own policy (a sandbox for a stored report) still refuses framing by another site.
    assert "frame-ancestors 'none'" in opened.value.headers["content-security-policy"]
    shoot(page, "gate-report")


def test_login_rejects_an_unknown_key(site, browser) -> None:
    url, _ = site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/dashboard/t/acme/kpis")
    assert page.url.startswith(f"{url}/dashboard/login")
    shoot(page, "login")
    page.fill("#key", "tl-not-a-real-key")
    page.click("button[type=submit]")
    assert "Unknown or revoked API key" in page.content()
    assert page.goto(f"{url}/dashboard/t/acme/kpis").url.startswith(f"{url}/dashboard/login")


def test_tenant_a_cannot_see_tenant_b(site, browser) -> None:
    url, seeded = site
    page = logged_in(browser, url, seeded.acme_key)

    assert "globex" not in page.content()
    for name in (*TENANT_PAGES, "gates/gx-1/report"):
        response = page.goto(f"{url}/dashboard/t/globex/{name}")
        assert response.status == 404, name
        assert SECRET not in page.content() and "gx-1" not in page.content()
    assert page.goto(f"{url}/dashboard/t/acme/gates/gx-1/report").status == 404
    for name in TENANT_PAGES:
        page.goto(f"{url}/dashboard/t/acme/{name}")
        assert SECRET not in page.content() and "gx-1" not in page.content(), name


def test_admin_key_sees_every_tenant(site, browser) -> None:
    url, seeded = site
    page = logged_in(browser, url, seeded.admin_key)

    rows = page.locator("tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == ["acme", "globex"]
    assert all(points > 0 for points, _ in page.evaluate(CHART_POINTS))
    shoot(page, "tenants")
    page.goto(f"{url}/dashboard/t/globex/kpis")
    assert "gx-1" in page.content()
    page.goto(f"{url}/dashboard/t/globex/canary")
    assert "No live canary" in page.content()


def test_logout_ends_the_session(site, browser) -> None:
    url, seeded = site
    page = logged_in(browser, url, seeded.acme_key)

    [session] = [c["value"] for c in page.context.cookies() if c["name"] == "tuneloop_dashboard"]
    assert session != seeded.acme_key  # an opaque session token, never the key itself

    page.click("text=Log out")
    page.wait_for_url(f"{url}/dashboard/login")
    assert page.goto(f"{url}/dashboard/t/acme/kpis").url.startswith(f"{url}/dashboard/login")
    replayed = httpx.get(f"{url}/dashboard/t/acme/kpis", cookies={"tuneloop_dashboard": session})
    assert replayed.status_code == 303  # the server ended the session: a copied cookie is dead too


def test_check_now_runs_a_drift_check_from_the_page(site, browser) -> None:
    url, seeded = site
    page = logged_in(browser, url, seeded.admin_key)

    page.goto(f"{url}/dashboard/t/globex/drift")
    with page.expect_navigation():
        page.click("text=Check now")
    assert page.url == f"{url}/dashboard/t/globex/drift"
    assert page.errors == []


def test_metrics_expose_requests_and_kpis_to_admins_only(site) -> None:
    url, seeded = site
    with httpx.Client(base_url=url) as browser_like:
        browser_like.post("/dashboard/login", data={"key": seeded.acme_key})
        assert browser_like.get("/dashboard/t/acme/kpis").status_code == 200

    admin = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {seeded.admin_key}"})
    tenant = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {seeded.acme_key}"})

    assert admin.status_code == 200 and admin.headers["content-type"].startswith("text/plain")
    assert (
        'tuneloop_http_requests_total{method="GET",route="/dashboard/t/{name}/kpis",status="200"}'
        in admin.text
    )
    assert (
        'tuneloop_http_request_duration_seconds_count{method="GET",route="/dashboard/t/{name}/kpis"}'
        in admin.text
    )
    assert tenant.status_code == 403
