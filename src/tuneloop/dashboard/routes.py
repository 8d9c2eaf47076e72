"""The dashboard at /dashboard: server-rendered pages, logged into with an API key.

Logging in trades the key for an opaque session token (stored hashed, expiring after
`TUNELOOP_SESSION_HOURS`) in an HttpOnly, SameSite=Lax cookie scoped to /dashboard. Every page looks the
session up, so logging out or revoking its key ends it at once; every POST carries the session's CSRF
token. A tenant key sees its own tenant only (any other name answers 404, the same as a tenant that does
not exist); an admin key sees all tenants.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from tuneloop.config import tenant_policy
from tuneloop.dashboard import views
from tuneloop.errors import NotFound, Unauthorized
from tuneloop.serve.http import read_body
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Principal, TenantStore

COOKIE = "tuneloop_dashboard"
LOGIN_MAX_BYTES = 16_384
FORM_MAX_BYTES = 4096  # the other forms carry a CSRF token and nothing else
DRIFT_CHECK_SECONDS = 60  # a drift check reads a week of a tenant's traffic: one a minute per tenant
HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain"}
# Pages show private data: no caching, no framing, scripts and styles from this origin only.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PAGES = (("kpis", "KPIs"), ("versions", "Versions"), ("canary", "Canary"), ("gates", "Gates"),
         ("drift", "Drift"), ("audit", "Audit log"))  # fmt: skip

router = APIRouter(prefix="/dashboard", include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters.update(pct=_pct, num=_num, when=_when)


def _state(request: Request) -> Any:
    return request.app.state.tuneloop


def _principal(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return _state(request).store.session(token)
    except Unauthorized:
        return None


def _csrf(token: str) -> str:
    """The session's CSRF token: derived from the HttpOnly session token, which other sites cannot read."""
    return hashlib.sha256(f"csrf:{token}".encode()).hexdigest()


async def _posted(request: Request) -> Principal | Response:
    """The principal of a dashboard POST whose form carries its session's CSRF token; else the answer."""
    form = parse_qs((await read_body(request, FORM_MAX_BYTES)).decode("utf-8", "replace"))
    token = request.cookies.get(COOKIE)
    principal = await run_in_threadpool(_principal, request)
    if token is None or principal is None:
        return _login_redirect(request)
    sent = (form.get("csrf") or [""])[0]
    if not hmac.compare_digest(sent.encode(), _csrf(token).encode()):
        message = (
            "This form came without its security (CSRF) token, or from an old page or another site. "
            "Reload the page and submit it again."
        )
        return _render(request, "error.html", 403, principal=principal, title="Forbidden", message=message)
    return principal


def _secure(request: Request) -> bool:
    """Whether the cookie is marked Secure: per TUNELOOP_COOKIE_SECURE, `auto` when the client used TLS."""
    mode = _state(request).settings.cookie_secure
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


def _login_redirect(request: Request) -> RedirectResponse:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/dashboard/login?next={target}", status_code=303)


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("charts", {})
    token = request.cookies.get(COOKIE)
    context.setdefault("csrf", _csrf(token) if token else "")
    response = templates.TemplateResponse(request, name, {"pages": PAGES, **context}, status)
    response.headers.update(HEADERS)
    return response


def _not_found(request: Request, principal: Principal) -> HTMLResponse:
    return _render(request, "error.html", 404, principal=principal, message="No such tenant or page.")


def _tenant(request: Request, principal: Principal, name: str) -> TenantStore | None:
    """The tenant `name` if this principal may see it; None (answered as 404) otherwise."""
    if principal.tenant is not None:
        return _state(request).store.for_tenant(principal.tenant) if principal.tenant.name == name else None
    try:
        return _state(request).store.for_tenant(_state(request).store.tenant_by_name(name))
    except NotFound:
        return None


def _page(request: Request, name: str, page: str, build: Any) -> Response:
    """Authenticate, scope to the tenant, build the page's context and render `<page>.html`."""
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    tenant = _tenant(request, principal, name)
    if tenant is None:
        return _not_found(request, principal)
    try:
        context = build(tenant)
    except NotFound:
        return _not_found(request, principal)
    if isinstance(context, Response):
        return context
    return _render(request, f"{page}.html", principal=principal, tenant=tenant.tenant, page=page, **context)


@router.get("/login")
def login_form(request: Request, next: str = "/dashboard") -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    # Login CSRF (an attacker logging a victim into the attacker's tenant) is refused by the Origin check:
    # every browser sends Origin on a form POST, and a cross-site one names the other site.
    if not _same_origin(request):
        message = "Log in from this dashboard's own login page (this form was posted from another site)."
        return _render(request, "error.html", 403, principal=None, title="Forbidden", message=message)
    # Read before any key check, so capped: a login form is a key and a path.
    form = parse_qs((await read_body(request, LOGIN_MAX_BYTES)).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/dashboard"])[0])
    hours = _state(request).settings.session_hours
    try:
        token, _ = await run_in_threadpool(_state(request).store.create_session, key, hours)
    except Unauthorized:
        return _render(request, "login.html", 401, next=target, error="Unknown or revoked API key.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(hours * 3600),
        httponly=True,
        # Lax: links into the dashboard from elsewhere keep the session; POSTs need the CSRF token anyway.
        samesite="lax",
        secure=_secure(request),
        path="/dashboard",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    await run_in_threadpool(_state(request).store.end_session, request.cookies[COOKIE])
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


def _safe_next(target: str) -> str:
    # Only paths inside the dashboard: never an open redirect to another site.
    inside = target.startswith("/dashboard") and "//" not in target and "\\" not in target
    return target if inside else "/dashboard"


def _reward_policy(request: Request, tenant: TenantStore) -> RewardPolicy:
    """The tenant's reward policy: the one its canary decides by, so KPIs and the canary agree."""
    return tenant_policy(_state(request).settings.home, tenant.tenant.name, RewardPolicy)


@router.get("")
@router.get("/")
def tenants_page(request: Request) -> Response:
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    store = _state(request).store
    tenants = [principal.tenant] if principal.tenant else store.tenants()
    handles = [store.for_tenant(t) for t in tenants]
    rows = [views.tenant_summary(h, _reward_policy(request, h)) for h in handles]
    charts = {"volume": {"title": "Interactions per day", **views.volume_chart(handles)}}
    return _render(request, "tenants.html", principal=principal, rows=rows, charts=charts, page="tenants")


@router.get("/t/{name}")
def tenant_home(name: str) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/t/{quote(name)}/kpis", status_code=303)


@router.get("/t/{name}/kpis")
def kpis_page(request: Request, name: str, days: int = 7) -> Response:
    days = max(1, min(days, 90))
    return _page(request, name, "kpis", lambda t: views.kpi_page(t, _reward_policy(request, t), days))


@router.get("/t/{name}/versions")
def versions_page(request: Request, name: str) -> Response:
    return _page(request, name, "versions", lambda t: {"tree": views.lineage(t)})


@router.get("/t/{name}/canary")
def canary_page(request: Request, name: str) -> Response:
    def build(t: TenantStore) -> dict[str, Any]:
        view = views.canary_view(t, _reward_policy(request, t))
        return {"view": view, "charts": view["charts"] if view else {}}

    return _page(request, name, "canary", build)


@router.get("/t/{name}/gates")
def gates_page(request: Request, name: str) -> Response:
    return _page(request, name, "gates", lambda t: {"rows": views.gate_rows(t)})


@router.get("/t/{name}/gates/{version_id}/report")
def gate_report(request: Request, name: str, version_id: str) -> Response:
    def build(t: TenantStore) -> Response:
        html = views.gate_report_html(t, _state(request).settings.home, version_id)
        if html is None:
            raise NotFound(f"no gate report for {version_id}")
        # The report is a stored document: sandboxed, no scripts, its own inline styles only.
        policy = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        headers = {**HEADERS, "Content-Security-Policy": policy}
        return HTMLResponse(html, headers=headers)

    return _page(request, name, "gates", build)


@router.get("/t/{name}/drift")
def drift_page(request: Request, name: str) -> Response:
    return _page(request, name, "drift", views.drift_view)


@router.post("/t/{name}/drift/check")
async def drift_check(request: Request, name: str) -> Response:
    """Run a drift check now: CSRF-checked, and at most one per DRIFT_CHECK_SECONDS per tenant."""
    from tuneloop.monitor.alerts import run_checks

    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    tenant = await run_in_threadpool(_tenant, request, posted, name)
    if tenant is None:
        return _not_found(request, posted)
    last = _state(request).drift_checks
    wait = DRIFT_CHECK_SECONDS - (time.monotonic() - last.get(tenant.tenant_id, -DRIFT_CHECK_SECONDS))
    if wait > 0:
        message = f"A drift check ran for {name} less than a minute ago; try again in {wait:.0f} s."
        response = _render(
            request, "error.html", 429, principal=posted, title="Too many checks", message=message
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    last[tenant.tenant_id] = time.monotonic()  # set before running, so a second click meanwhile waits too
    await run_in_threadpool(run_checks, tenant, _reward_policy(request, tenant), actor="dashboard")
    return RedirectResponse(f"/dashboard/t/{quote(name)}/drift", status_code=303)


@router.get("/t/{name}/audit")
def audit_page(request: Request, name: str) -> Response:
    return _page(request, name, "audit", lambda t: {"rows": views.audit_rows(t)})


@router.get("/static/{filename}")
def static(filename: str) -> Response:
    path = STATIC / filename
    if path.parent != STATIC or not path.is_file() or path.suffix not in STATIC_TYPES:
        return HTMLResponse("not found", status_code=404)
    return FileResponse(
        path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "public, max-age=3600"}
    )
