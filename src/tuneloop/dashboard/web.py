"""What every dashboard page shares: the router, templates and filters, sessions, CSRF, rendering, scoping.

A reviewer's session sees the review pages only; operator and admin sessions see every page. A reviewer is
known by the first 10 characters of the key they logged in with, kept in a cookie signed with the server
secret and bound to the session, so no one can label as someone else.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import anyio.from_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Undefined
from starlette.concurrency import run_in_threadpool

from tuneloop.config import tenant_policy
from tuneloop.errors import NotFound, TuneloopError, Unauthorized
from tuneloop.serve.http import admit, read_body
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Principal, TenantStore

COOKIE = "tuneloop_dashboard"
REVIEWER_COOKIE = "tuneloop_reviewer"
FORM_MAX_BYTES = 4096  # most forms carry a CSRF token and nothing else
HERE = Path(__file__).parent
# Pages show private data: no caching, no framing, scripts and styles from this origin only.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors' older form, for browsers that predate it
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PAGES = (("kpis", "KPIs"), ("progress", "Progress"), ("versions", "Versions"), ("canary", "Canary"),
         ("gates", "Gates"), ("drift", "Drift"), ("review", "Review"), ("audit", "Audit log"))  # fmt: skip
REVIEWER_PAGES = (("review", "Review"),)

router = APIRouter(prefix="/dashboard", include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _missing(value: Any) -> bool:
    # A figure an experiment has not measured yet (no look at it so far) is shown as a dash, not a 500.
    return value is None or isinstance(value, Undefined)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if _missing(value) else f"{value:.{digits}%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if _missing(value) else f"{value:.{digits}g}"


def _signed(value: float | None, digits: int = 2) -> str:
    return "–" if _missing(value) else f"{value:+.{digits}f}"


def _when(value: datetime | str | None) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters.update(pct=_pct, num=_num, signed=_signed, when=_when)


def state(request: Request) -> Any:
    return request.app.state.tuneloop


def principal_of(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return state(request).store.session(token)
    except Unauthorized:
        return None


def csrf(token: str) -> str:
    """The session's CSRF token: derived from the HttpOnly session token, which other sites cannot read."""
    return hashlib.sha256(f"csrf:{token}".encode()).hexdigest()


def reviewer_cookie(request: Request, token: str, key: str) -> str:
    """The reviewer cookie for a new session: the key's prefix and a keyed digest binding it to `token`."""
    prefix = key[:10]
    return f"{prefix}.{state(request).capture.pseudonyms.digest({'session': token, 'reviewer': prefix})}"


def reviewer_of(request: Request) -> str | None:
    """Who this session labels as (their key's prefix); None if the cookie is missing or forged."""
    token, signed = request.cookies.get(COOKIE), request.cookies.get(REVIEWER_COOKIE, "")
    prefix, _, digest = signed.partition(".")
    if not token or not prefix:
        return None
    expected = reviewer_cookie(request, token, prefix).partition(".")[2]
    return prefix if hmac.compare_digest(digest.encode(), expected.encode()) else None


async def posted(request: Request, max_bytes: int = FORM_MAX_BYTES) -> tuple[Principal, dict] | Response:
    """(principal, form fields) of a dashboard POST whose form carries its session's CSRF token; else the
    answer to send (the login page, or 403)."""
    form = parse_qs((await read_body(request, max_bytes)).decode("utf-8", "replace"))
    token = request.cookies.get(COOKIE)
    principal = await run_in_threadpool(principal_of, request)
    if token is None or principal is None:
        return login_redirect(request)
    sent = (form.get("csrf") or [""])[0]
    if not hmac.compare_digest(sent.encode(), csrf(token).encode()):
        message = (
            "This form came without its security (CSRF) token, or from an old page or another site. "
            "Reload the page and submit it again."
        )
        return render(request, "error.html", 403, principal=principal, title="Forbidden", message=message)
    return principal, {k: v[0] for k, v in form.items()}


def login_redirect(request: Request) -> RedirectResponse:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/dashboard/login?next={target}", status_code=303)


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("charts", {})
    token = request.cookies.get(COOKIE)
    context.setdefault("csrf", csrf(token) if token else "")
    principal = context.get("principal")
    pages = REVIEWER_PAGES if principal is not None and principal.role == "reviewer" else PAGES
    response = templates.TemplateResponse(request, name, {"pages": pages, **context}, status)
    response.headers.update(HEADERS)
    return response


def not_found(
    request: Request, principal: Principal, message: str = "No such tenant or page."
) -> HTMLResponse:
    return render(request, "error.html", 404, principal=principal, message=message)


def tenant_for(request: Request, principal: Principal, name: str) -> TenantStore | None:
    """The tenant `name` if this principal may see it; None (answered as 404) otherwise."""
    store = state(request).store
    if principal.tenant is not None:
        return store.for_tenant(principal.tenant) if principal.tenant.name == name else None
    try:
        return store.for_tenant(store.tenant_by_name(name))
    except NotFound:
        return None


def page(request: Request, name: str, slug: str, build: Any, *, reviewers: bool = False) -> Response:
    """Authenticate, scope to the tenant, build the page's context and render `<slug>.html`; reviewer
    sessions see only pages marked `reviewers`."""
    principal = principal_of(request)
    if principal is None:
        return login_redirect(request)
    tenant = tenant_for(request, principal, name)
    if tenant is None:
        return not_found(request, principal)
    if principal.role == "reviewer" and not reviewers:
        message = "A reviewer's key opens the review pages only; log in with an operator key for the rest."
        context = {"principal": principal, "tenant": tenant.tenant, "title": "Forbidden", "message": message}
        return render(request, "error.html", 403, **context)
    # Admitted as the tenant's API routes are (`serve.http.admit`), from the worker thread the page is built
    # on: one tenant's dashboard readers cannot crowd out the other tenants.
    anyio.from_thread.run(admit, request, tenant.tenant_id)
    try:
        context = build(tenant)
    except NotFound as exc:  # within the tenant: what is missing can be said
        return not_found(request, principal, exc.message)
    except TuneloopError as exc:  # a broken policy file, say: a page with the dashboard's headers, not JSON
        context = {"principal": principal, "tenant": tenant.tenant, "title": "Error", "message": exc.message}
        return render(request, "error.html", exc.status, **context)
    if isinstance(context, Response):
        return context
    return render(request, f"{slug}.html", principal=principal, tenant=tenant.tenant, page=slug, **context)


def reward_policy(request: Request, tenant: TenantStore) -> RewardPolicy:
    """The tenant's reward policy: the one its canary decides by, so KPIs and the canary agree."""
    return tenant_policy(state(request).settings.home, tenant.tenant.name, RewardPolicy)
