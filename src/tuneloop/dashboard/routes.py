"""The dashboard at /dashboard: server-rendered pages, logged into with an API key.

The login form puts the key in an HttpOnly, SameSite=Strict cookie scoped to /dashboard; every page
re-authenticates it, so a revoked key is logged out at once. A tenant key sees its own tenant only (any
other name answers 404, the same as a tenant that does not exist); an admin key sees all tenants.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from tuneloop.dashboard import views
from tuneloop.errors import NotFound, Unauthorized
from tuneloop.serve.http import read_body
from tuneloop.store.repository import Principal, TenantStore

COOKIE = "tuneloop_dashboard"
LOGIN_MAX_BYTES = 16_384
HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain"}
# Pages show private data: no caching, no framing, scripts and styles from this origin only.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
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
    key = request.cookies.get(COOKIE)
    if not key:
        return None
    try:
        return _state(request).store.authenticate(key)
    except Unauthorized:
        return None


def _login_redirect(request: Request) -> RedirectResponse:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/dashboard/login?next={target}", status_code=303)


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("charts", {})
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
    # Read before any key check, so capped: a login form is a key and a path.
    form = parse_qs((await read_body(request, LOGIN_MAX_BYTES)).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/dashboard"])[0])
    try:
        await run_in_threadpool(_state(request).store.authenticate, key)
    except Unauthorized:
        return _render(request, "login.html", 401, next=target, error="Unknown or revoked API key.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/dashboard",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


def _safe_next(target: str) -> str:
    # Only paths inside the dashboard: never an open redirect to another site.
    inside = target.startswith("/dashboard") and "//" not in target and "\\" not in target
    return target if inside else "/dashboard"


@router.get("")
@router.get("/")
def tenants_page(request: Request) -> Response:
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    store = _state(request).store
    tenants = [principal.tenant] if principal.tenant else store.tenants()
    handles = [store.for_tenant(t) for t in tenants]
    rows = [views.tenant_summary(h) for h in handles]
    charts = {"volume": {"title": "Interactions per day", **views.volume_chart(handles)}}
    return _render(request, "tenants.html", principal=principal, rows=rows, charts=charts, page="tenants")


@router.get("/t/{name}")
def tenant_home(name: str) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/t/{quote(name)}/kpis", status_code=303)


@router.get("/t/{name}/kpis")
def kpis_page(request: Request, name: str, days: int = 7) -> Response:
    days = max(1, min(days, 90))
    return _page(request, name, "kpis", lambda t: views.kpi_page(t, days))


@router.get("/t/{name}/versions")
def versions_page(request: Request, name: str) -> Response:
    return _page(request, name, "versions", lambda t: {"tree": views.lineage(t)})


@router.get("/t/{name}/canary")
def canary_page(request: Request, name: str) -> Response:
    def build(t: TenantStore) -> dict[str, Any]:
        view = views.canary_view(t)
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
def drift_check(request: Request, name: str) -> Response:
    """Run a drift check now (SameSite=Strict cookies keep other sites from triggering it)."""
    from tuneloop.monitor.alerts import run_checks

    def build(t: TenantStore) -> Response:
        run_checks(t, actor="dashboard")
        return RedirectResponse(f"/dashboard/t/{quote(name)}/drift", status_code=303)

    return _page(request, name, "drift", build)


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
