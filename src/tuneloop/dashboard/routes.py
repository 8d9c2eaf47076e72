"""The dashboard at /dashboard: server-rendered pages, logged into with an API key.

Logging in trades the key for an opaque session token (stored hashed, expiring after
`TUNELOOP_SESSION_HOURS`) in an HttpOnly, SameSite=Lax cookie scoped to /dashboard. Every page looks the
session up, so logging out or revoking its key ends it at once; every POST carries the session's CSRF
token. A tenant key sees its own tenant only (any other name answers 404, the same as a tenant that does
not exist); an admin key sees all tenants; a reviewer key sees its tenant's review pages.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tuneloop.dashboard import progress, views
from tuneloop.dashboard.web import (
    COOKIE,
    HEADERS,
    HERE,
    REVIEWER_COOKIE,
    login_redirect,
    not_found,
    page,
    posted,
    principal_of,
    render,
    reviewer_cookie,
    reward_policy,
    router,
    state,
    tenant_for,
)
from tuneloop.errors import Forbidden, NotFound, Unauthorized
from tuneloop.rollout.controller import waiting_for_approval
from tuneloop.serve.http import admit, read_body
from tuneloop.store.repository import DASHBOARD_ROLES, TenantStore

LOGIN_MAX_BYTES = 16_384
DRIFT_CHECK_SECONDS = 60  # a drift check reads a week of a tenant's traffic: one a minute per tenant
STATIC = HERE / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain"}
STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in STATIC_TYPES}
LOGIN_ROLES = DASHBOARD_ROLES | {"reviewer"}


def _secure(request: Request) -> bool:
    """Whether the cookie is marked Secure: per TUNELOOP_COOKIE_SECURE, `auto` when the client used TLS."""
    mode = state(request).settings.cookie_secure
    if mode != "auto":
        return mode == "always"
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or proto == "https"


def _same_origin(request: Request) -> bool:
    """False when a browser says the POST came from another site's page (Origin names another host)."""
    origin = request.headers.get("origin")
    if origin is None:  # browsers send Origin with every form POST; only non-browser clients omit it
        return True
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc == host


@router.get("/login")
def login_form(request: Request, next: str = "/dashboard") -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    # Login CSRF (an attacker logging a victim into the attacker's tenant) is refused by the Origin check:
    # every browser sends Origin on a form POST, and a cross-site one names the other site.
    if not _same_origin(request):
        message = "Log in from this dashboard's own login page (this form was posted from another site)."
        return render(request, "error.html", 403, principal=None, title="Forbidden", message=message)
    # Read before any key check, so capped: a login form is a key and a path.
    form = parse_qs((await read_body(request, LOGIN_MAX_BYTES)).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/dashboard"])[0])
    hours = state(request).settings.session_hours
    try:
        login_as = state(request).store.create_session
        token, _ = await run_in_threadpool(login_as, key, hours, LOGIN_ROLES)
    except Unauthorized:
        return render(request, "login.html", 401, next=target, error="Unknown or revoked API key.")
    except Forbidden as exc:
        return render(request, "login.html", 403, next=target, error=exc.message)
    response = RedirectResponse(target, status_code=303)
    # Lax: links into the dashboard from elsewhere keep the session; POSTs need the CSRF token anyway.
    cookie: dict[str, Any] = {
        "max_age": int(hours * 3600),
        "httponly": True,
        "samesite": "lax",
        "secure": _secure(request),
        "path": "/dashboard",
    }
    response.set_cookie(COOKIE, token, **cookie)
    response.set_cookie(REVIEWER_COOKIE, reviewer_cookie(request, token, key), **cookie)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    sent = await posted(request)
    if isinstance(sent, Response):
        return sent
    await run_in_threadpool(state(request).store.end_session, request.cookies[COOKIE])
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    response.delete_cookie(REVIEWER_COOKIE, path="/dashboard")
    return response


def _safe_next(target: str) -> str:
    # Only paths inside the dashboard: never an open redirect to another site.
    inside = target.startswith("/dashboard") and "//" not in target and "\\" not in target
    return target if inside else "/dashboard"


@router.get("")
@router.get("/")
def tenants_page(request: Request) -> Response:
    principal = principal_of(request)
    if principal is None:
        return login_redirect(request)
    if principal.role == "reviewer" and principal.tenant is not None:
        return RedirectResponse(f"/dashboard/t/{quote(principal.tenant.name)}/review", status_code=303)
    store = state(request).store
    tenants = [principal.tenant] if principal.tenant else store.tenants()
    handles = [store.for_tenant(t) for t in tenants]
    rows = [views.tenant_summary(h, reward_policy(request, h)) for h in handles]
    charts = {"volume": {"title": "Interactions per day", **views.volume_chart(handles)}}
    return render(request, "tenants.html", principal=principal, rows=rows, charts=charts, page="tenants")


@router.get("/t/{name}")
def tenant_home(name: str) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/t/{quote(name)}/kpis", status_code=303)


@router.get("/t/{name}/kpis")
def kpis_page(request: Request, name: str, days: int = 7) -> Response:
    days = max(1, min(days, 90))
    return page(request, name, "kpis", lambda t: views.kpi_page(t, reward_policy(request, t), days))


@router.get("/t/{name}/progress")
def progress_page(request: Request, name: str) -> Response:
    def build(t: TenantStore) -> dict[str, Any]:
        curve = progress.improvement(t, reward_policy(request, t))
        return {
            **curve,
            "approvals": progress.awaiting_approval(t),
            "promotion": waiting_for_approval(t),
        }

    return page(request, name, "progress", build)


@router.get("/t/{name}/versions")
def versions_page(request: Request, name: str) -> Response:
    return page(request, name, "versions", lambda t: {"tree": views.lineage(t)})


@router.get("/t/{name}/canary")
def canary_page(request: Request, name: str) -> Response:
    def build(t: TenantStore) -> dict[str, Any]:
        view = views.canary_view(t, reward_policy(request, t))
        return {"view": view, "charts": view["charts"] if view else {}}

    return page(request, name, "canary", build)


@router.get("/t/{name}/gates")
def gates_page(request: Request, name: str) -> Response:
    return page(request, name, "gates", lambda t: {"rows": views.gate_rows(t)})


@router.get("/t/{name}/gates/{version_id}/report")
def gate_report(request: Request, name: str, version_id: str) -> Response:
    def build(t: TenantStore) -> Response:
        html = views.gate_report_html(t, state(request).settings.home, version_id)
        if html is None:
            raise NotFound(f"no gate report for {version_id}")
        # The report is a stored document: sandboxed, no scripts, its own inline styles only.
        policy = (
            "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
        )
        headers = {**HEADERS, "Content-Security-Policy": policy}
        return HTMLResponse(html, headers=headers)

    return page(request, name, "gates", build)


@router.get("/t/{name}/drift")
def drift_page(request: Request, name: str) -> Response:
    return page(request, name, "drift", views.drift_view)


@router.post("/t/{name}/drift/check")
async def drift_check(request: Request, name: str) -> Response:
    """Run a drift check now: CSRF-checked, and at most one per DRIFT_CHECK_SECONDS per tenant."""
    from tuneloop.monitor.alerts import run_checks

    sent = await posted(request)
    if isinstance(sent, Response):
        return sent
    principal, _ = sent
    tenant = await run_in_threadpool(tenant_for, request, principal, name)
    if tenant is None or principal.role == "reviewer":
        return not_found(request, principal)
    await admit(request, tenant.tenant_id)
    last = state(request).drift_checks
    wait = DRIFT_CHECK_SECONDS - (time.monotonic() - last.get(tenant.tenant_id, -DRIFT_CHECK_SECONDS))
    if wait > 0:
        message = f"A drift check ran for {name} less than a minute ago; try again in {wait:.0f} s."
        response = render(
            request, "error.html", 429, principal=principal, title="Too many checks", message=message
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    last[tenant.tenant_id] = time.monotonic()  # set before running, so a second click meanwhile waits too
    await run_in_threadpool(run_checks, tenant, reward_policy(request, tenant), actor="dashboard")
    return RedirectResponse(f"/dashboard/t/{quote(name)}/drift", status_code=303)


@router.get("/t/{name}/audit")
def audit_page(request: Request, name: str) -> Response:
    return page(request, name, "audit", lambda t: {"rows": views.audit_rows(t)})


@router.get("/static/{filename}")
def static(filename: str) -> Response:
    # Looked up among the shipped files, not on disk: a name too long for the filesystem made is_file raise.
    path = STATIC_FILES.get(filename)
    if path is None:
        return HTMLResponse("not found", status_code=404)
    return FileResponse(
        path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=3600"}
    )
