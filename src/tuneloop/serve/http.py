"""HTTP edge helpers: strict JSON bodies, bearer-key auth with per-tenant admission, and the one error
handler."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from tuneloop.capture.events import ID_PATTERN, text_problem
from tuneloop.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    RequestTimeout,
    TuneloopError,
    Unauthorized,
    UnsupportedMediaType,
)
from tuneloop.json_depth import MAX_DEPTH, nests_deeper
from tuneloop.serve.limits import TenantLimits
from tuneloop.store.group_commit import PerItem
from tuneloop.store.repository import TENANT_ROLES, Principal, Role, Store, Tenant, TenantStore

AUTH_CACHE_SECONDS = 30.0
# The tenant roles each kind of route admits; an admin key is admitted everywhere. Ingest keys are meant to
# ship inside browsers and apps: they write what users did and read nothing, not even the model.
Roles = frozenset[Role]
CAPTURE: Roles = frozenset({"ingest", "operator"})
GATEWAY: Roles = frozenset({"operator"})  # a model call spends the tenant's compute: never from a browser
REVIEW: Roles = frozenset({"reviewer", "operator"})
OPERATE: Roles = frozenset({"operator"})
ADMIN: Roles = frozenset()
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MAX_INT_DIGITS = 4300  # Python's own limit; past it a 400 says so, not Python's advice
ECHO_CHARS = 100  # the most of one client value an error message repeats
NAMED_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*): ")  # a message that names its field first
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*|\d+")  # a field name or a list index


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as text of at most `limit` characters, for echoing client input in an error."""
    text = _encodable(str(value))
    return text if len(text) <= limit else f"{text[:limit]}…"


def field_name(part: object) -> str:
    """A path part (a field name or a list index) for an error message; a key that reads as no field name
    (an address, a number, a sentence) is not repeated: clients put their users' data in keys too, and
    errors reach logs."""
    text = str(part)
    return clip(text) if _FIELD.fullmatch(text) else "<key>"


def _encodable(text: str) -> str:
    # A lone surrogate echoed into a response would make encoding the response itself fail.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


BODY_SECONDS = 30.0  # the most a request body may take to arrive


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw request body, refusing (413) one over `max_bytes` before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is {clip(declared)} bytes; the limit is {max_bytes}")
    body = bytearray()
    # A client that stalls mid-body would hold one of its tenant's concurrency slots for as long as it likes.
    with anyio.move_on_after(BODY_SECONDS) as reading:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    if reading.cancelled_caught:
        raise RequestTimeout(f"request body not received within {BODY_SECONDS:.0f} s; send it at once")
    return bytes(body)


def require_json_content_type(request: Request) -> None:
    """415 unless the request says its body is JSON (UTF-8, the only charset read)."""
    header = request.headers.get("content-type", "")
    media, *params = (part.strip().lower() for part in header.split(";"))
    charset = next((p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")), "utf-8")
    if media != "application/json" or charset not in ("utf-8", "utf8"):
        got = f"`{clip(header)}`" if header else "none"
        raise UnsupportedMediaType(
            f"send the body as JSON with `Content-Type: application/json` (got {got})", param="content-type"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # read as is, a compressed body would fail as "not valid UTF-8"
        raise UnsupportedMediaType(
            f"Content-Encoding `{clip(encoding)}` is not accepted on JSON routes; send the body uncompressed",
            param="content-encoding",
        )


INLINE_JSON_BYTES = 64 * 1024  # larger bodies are parsed and checked in a worker thread


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as strict JSON; every violation is a 4xx that names the field to fix."""
    require_json_content_type(request)
    body = await read_body(request, max_bytes)
    request.state.body_bytes = len(body)
    return await off_loop_if_large(request, parse_json, body)


async def off_loop_if_large(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, in a worker thread when the request's JSON body was large: parsing and walking a
    megabyte of tiny nested values takes a second, which on the event loop holds every tenant's requests.
    The thread is one of the request's tenant's (`Auth.tenant`), so one tenant's large bodies wait for
    each other rather than take the pool every tenant shares."""
    if getattr(request.state, "body_bytes", 0) > INLINE_JSON_BYTES:
        threads = getattr(request.state, "threads", None)
        return await (threads(fn, *args) if threads else anyio.to_thread.run_sync(partial(fn, *args)))
    return fn(*args)


def parse_json(body: bytes) -> Any:
    """`body` as strict JSON (`read_json`'s rules)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    text = text.removeprefix("\ufeff")  # RFC 8259 lets a parser ignore a byte order mark
    if not text.strip():
        raise BadRequest("request body is empty; send a JSON object")
    _check_depth(text)
    try:
        # Non-finite constants parse to floats so the walk below can name the field that holds them.
        data = json.loads(text, parse_constant=float, parse_int=_int, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise BadRequest(
            f"{exc.key}: duplicate key in a JSON object; send each key once", param=exc.key
        ) from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {clip(exc, 200)}") from None
    _check_values(data)
    return data


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before json.loads (and every recursive walk after it) sees it."""
    if nests_deeper(text):
        raise BadRequest(f"request body nests arrays/objects deeper than {MAX_DEPTH} levels; flatten it")


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits; numbers here have at most {MAX_INT_DIGITS}")
    return int(digits)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = field_name(key)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would keep the last of repeated keys: the client meant one of them, and we cannot tell which.
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _check_values(data: Any) -> None:
    """Refuse lone surrogates and NUL in any string or key, and non-finite numbers, naming where they are.

    None survives storage: surrogates cannot be encoded as UTF-8, and PostgreSQL refuses NUL and NaN.
    """
    found = _bad_value(data)
    if found is None:
        return
    path, problem = found
    where = ".".join(field_name(p) for p in path if p is not _KEY) or "body"
    where += " (the key)" if path and path[-1] is _KEY else ""
    raise BadRequest(f"{where}: {problem}", param=where)


_KEY = object()  # ends the path of a problem found in a key rather than in its value


def _bad_value(value: Any) -> tuple[list[Any], str] | None:
    # The path is built only on the way out of a find (as in _too_long): this walk runs on every field of
    # every request. Depth is bounded by _check_depth before json.loads.
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else ([], problem)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        spelling = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return [], f"{spelling} is not valid JSON (numbers must be finite); send a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            if (problem := text_problem(key)) is not None:
                return [key, _KEY], problem
            found = _bad_value(item)
            if found is not None:
                return [key, *found[0]], found[1]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_value(item)
            if found is not None:
                return [i, *found[0]], found[1]
    return None


def validate(model: type[M], data: Any, max_text: int, where: str = "") -> M:
    """Validate `data` as `model`; the error names the first bad field and what to send instead."""
    if not isinstance(data, dict):
        raise BadRequest(f"{where.rstrip('.') or 'body'}: expected a JSON object")
    too_long = _longest_string(data, max_text)
    if too_long:
        raise BadRequest(f"{where}{too_long}: string longer than {max_text} characters", param=too_long)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe(exc, where), param=_param(exc.errors()[0], where)) from None


def describe(exc: ValidationError, where: str = "") -> str:
    """One line per problem, each naming the field: `messages.0.role: Input should be 'user', ...`."""
    parts = []
    for err in exc.errors()[:5]:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it (the API reference lists the accepted fields)"
        elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == ID_PATTERN:
            msg = "use only letters, digits and . _ : - (not dots alone)"  # rather than the regex itself
        parts.append(f"{_loc(err, where)}: {msg}" if err["loc"] or where else msg)
    return "; ".join(parts)


def _param(err: dict, where: str) -> str:
    """The field an error is about: its location, or for a check across fields (a model validator, whose
    location is the model) the field its message starts with (`value.value: ...`)."""
    if not err["loc"] and (named := NAMED_FIELD.match(err["msg"].removeprefix("Value error, "))):
        return f"{where}{named.group(1)}"
    return _loc(err, where)


def _loc(err: dict, where: str) -> str:
    loc = ".".join(field_name(p) for p in err["loc"])
    return f"{where}{loc}" if loc else where.rstrip(".")


def _longest_string(value: Any, limit: int) -> str | None:
    """The path of the first string longer than `limit` ("body" for the value itself), or None."""
    path = _too_long(value, limit)
    return None if path is None else ".".join(field_name(k) for k in path) or "body"


def _too_long(value: Any, limit: int) -> list[Any] | None:
    # The path is built only on the way out of a find: this walk runs on every field of every request.
    if isinstance(value, str):
        return [] if len(value) > limit else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _too_long(item, limit)
        if found is not None:
            return [key, *found]
    return None


class StoreCalls:
    """Runs blocking store calls in worker threads, at most `limit` at once: the size of the store's pool,
    so a call never waits for a connection, and the event loop never waits for the store."""

    def __init__(self, limit: int) -> None:
        self._limiter = anyio.CapacityLimiter(limit)

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)


class TenantThreads:
    """Runs a tenant's redaction in worker threads, at most `per_tenant` of that tenant's at once. Redaction
    is granted round-robin between tenants (capture/redact.FairLock), but a thread waiting for its turn
    holds a thread: on one shared pool a burst of one tenant's captures held every thread, and another
    tenant's capture waited seconds before it could even ask (an 8-character event took 3.2 s)."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._queues: dict[tuple[PerItem, Tenant], deque[_Waiting]] = {}
        self._drains: dict[tuple[PerItem, Tenant], int] = {}  # the key's drains running, ≤ per_tenant
        self._draining: set[asyncio.Task] = set()

    async def __call__(self, tenant_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        limiter = self._limiters.get(tenant_id)
        if limiter is None:
            limiter = self._limiters.setdefault(tenant_id, anyio.CapacityLimiter(self.per_tenant))
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=limiter)

    async def many(self, fn: PerItem, store: TenantStore, items: list[Any]) -> list[Any]:
        """`fn(store, items)` in the tenant's threads, merged with the calls of `fn` for the same tenant that
        arrive while its threads are busy: analysing many requests' texts in one call costs far less than
        one call each (spaCy's and Presidio's per-call work, the store reads `fn` makes), so under load
        single-event requests cost about what a batch does, and an idle server adds no wait. Up to
        `per_tenant` merged calls run at once, so a small request never waits out a long one."""
        key = (fn, store.tenant)  # the tenant as read with the key: its redaction mode is part of it
        mine = _Waiting(items, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, deque()).append(mine)
        if self._drains.get(key, 0) < self.per_tenant:
            self._drains[key] = self._drains.get(key, 0) + 1
            task = asyncio.create_task(self._drain(key, store))
            self._draining.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._draining.discard)
        return await mine.future

    async def _drain(self, key: tuple[PerItem, Tenant], store: TenantStore) -> None:
        """Run the queued calls of `key` in merged groups until none is left."""
        fn, queue = key[0], self._queues[key]
        try:
            while queue:
                group, size = [], 0
                while queue and (not group or size + len(queue[0].items) <= MERGED_ITEMS):
                    waiting = queue.popleft()
                    if not waiting.future.done():  # its client went away before its turn
                        group.append(waiting)
                        size += len(waiting.items)
                if group:
                    await self._run_group(fn, store, group)
        finally:
            self._drains[key] -= 1
            if not self._drains[key]:
                del self._drains[key], self._queues[key]

    async def _run_group(self, fn: PerItem, store: TenantStore, group: list[_Waiting]) -> None:
        """One call on the group's items; when it fails, each caller alone, so only the one whose items
        broke it (a redaction budget, a text too long) hears the error."""
        tenant_id = store.tenant_id
        try:
            results = await self(tenant_id, fn, store, [item for w in group for item in w.items])
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0].future, error=exc)
                return
            for waiting in group:
                try:
                    _settle(waiting.future, await self(tenant_id, fn, store, waiting.items))
                except Exception as alone:
                    _settle(waiting.future, error=alone)
            return
        start = 0
        for waiting in group:
            _settle(waiting.future, results[start : start + len(waiting.items)])
            start += len(waiting.items)


# Items per merged call: enough to amortise a call's fixed cost, few enough that one call holds the
# tenant's redaction turn briefly and stays inside a request's redaction budget.
MERGED_ITEMS = 64


@dataclass
class _Waiting:
    items: list[Any]
    future: asyncio.Future


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # cancelled: the caller went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


ADMISSION = "tuneloop.admission"  # the scope key under which `Admission` keeps a request's slots


@dataclass
class _Slots:
    limits: TenantLimits
    held: AsyncExitStack
    tenants: set[str] = field(default_factory=set)


class Admission:
    """ASGI middleware that gives every request a place to hold its tenant's admission slot (`admit`) and
    gives the slot back once the app has answered in full: a streamed answer keeps it until its last chunk
    is sent, or until its client goes away."""

    def __init__(self, app: ASGIApp, limits: TenantLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with AsyncExitStack() as held:
            scope[ADMISSION] = _Slots(self.limits, held)
            await self.app(scope, receive, send)


async def admit(request: Request, tenant_id: str) -> None:
    """Hold one of the tenant's slots (`TenantLimits.admit`: 429 when none or no token is left) until the
    answer to `request` has been sent; a second call for the same tenant in one request holds nothing more.
    `Auth.tenant` calls it for every tenant route, so a route that names its tenant is admitted."""
    slots: _Slots | None = request.scope.get(ADMISSION)
    if slots is None:
        raise RuntimeError("admit() needs the Admission middleware (tuneloop.serve.app adds it)")
    if tenant_id not in slots.tenants:
        await slots.held.enter_async_context(slots.limits.admit(tenant_id))
        slots.tenants.add(tenant_id)


class Auth:
    """Resolves `Authorization: Bearer KEY` to a principal, cached for 30 s. A cache hit still reads the
    key's row (or the request's write does, in its own transaction: `recheck`): `tuneloop tenants revoke`
    runs in another process, and a revoked key must stop at once."""

    def __init__(self, store: Store, calls: StoreCalls, threads: TenantThreads) -> None:
        self.store = store
        self.calls = calls
        self.threads = threads
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._checks = SharedReads(partial(calls, store.key_active))

    async def authorize(
        self, request: Request, allow: Roles | None = None, *, recheck: bool = True
    ) -> Principal:
        """The key's principal, refused (403) unless it is an admin or its role is in `allow` (None: any
        role; the caller checks); a lookup in the store runs off the event loop. Without `recheck` a cached
        principal is not read again: for a caller whose write checks the key itself (`GroupCommit`'s key)."""
        key = bearer_key(request)
        cached = self._cached(key)
        if cached is not None and (not recheck or await self._checks(key)):
            principal = cached
        else:
            self._cache.pop(key, None)
            principal = self._remember(key, await self.calls(self.store.authenticate, key))
        if allow is not None and not principal.is_admin and principal.role not in allow:
            raise Forbidden(_refusal(request, principal.role, allow))
        return principal

    async def tenant(self, request: Request, allow: Roles, *, recheck: bool = True) -> TenantStore:
        """The tenant the key names, for a key whose role is in `allow` (or an admin key, which names the
        tenant with the `X-Tuneloop-Tenant` header), admitted (`admit`): the request holds one of that
        tenant's slots until it is answered, so no tenant route lets one tenant crowd out the others.
        `recheck` as for `authorize`."""
        principal = await self.authorize(request, allow, recheck=recheck)
        names = request.headers.getlist("x-tuneloop-tenant")
        if len(names) > 1:  # which one a proxy or client meant is a guess: refuse rather than pick
            raise BadRequest("send one X-Tuneloop-Tenant header, not several", param="X-Tuneloop-Tenant")
        name = names[0].strip() if names else ""  # a header value's edges are not part of it (RFC 9110)
        if principal.tenant is not None:
            if name and name != principal.tenant.name:
                # Acting for the key's own tenant instead would answer a request the caller did not make.
                raise Forbidden("this key speaks for one tenant only; X-Tuneloop-Tenant names another")
            store = self.store.for_tenant(principal.tenant)
        else:
            if not name:
                raise Forbidden("an admin key must name the tenant in the X-Tuneloop-Tenant header")
            store = self.store.for_tenant(await self.calls(self.store.tenant_by_name, name))
        await admit(request, store.tenant_id)
        request.state.role = "admin" if principal.is_admin else principal.role
        request.state.threads = partial(self.threads, store.tenant_id)
        return store

    def _cached(self, key: str) -> Principal | None:
        hit = self._cache.get(key)
        return hit[1] if hit and time.monotonic() - hit[0] < AUTH_CACHE_SECONDS else None

    def _remember(self, key: str, principal: Principal) -> Principal:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), principal)
        return principal


class SharedReads:
    """`read(key)` for many concurrent callers with few reads, each caller answered by a read that began
    after it asked: callers that arrive while a read is running share the one that starts when it ends.
    Under load one key check serves every request that arrived during the last, so a revocation still
    stops the next request, and the store sees one read per round trip rather than one per request."""

    def __init__(self, read: Callable[[str], Awaitable[bool]]) -> None:
        self._read = read
        self._waiting: dict[str, asyncio.Future[bool]] = {}  # callers of the key's next read
        self._readers: dict[str, asyncio.Task] = {}  # the task running the key's reads, while it has any

    async def __call__(self, key: str) -> bool:
        # State left by another event loop (an app served again after its loop closed) is not waited on.
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(key)
        if waiting is None or waiting.get_loop() is not loop:
            waiting = self._waiting[key] = loop.create_future()
            # A caller that went away does not leave "exception never retrieved" behind.
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
        reader = self._readers.get(key)
        if reader is None or reader.get_loop() is not loop:
            self._readers[key] = loop.create_task(self._reads(key))
        return await asyncio.shield(waiting)  # one caller's cancellation must not cancel the others'

    async def _reads(self, key: str) -> None:
        me = asyncio.current_task()
        try:
            while (callers := self._waiting.pop(key, None)) is not None:
                try:
                    callers.set_result(await self._read(key))
                except Exception as exc:
                    callers.set_exception(exc)
        finally:
            if self._readers.get(key) is me:
                del self._readers[key]


def trusted_sender(request: Request) -> bool:
    """Whether the key `Auth.tenant` admitted `request` with is one the operator keeps (not an ingest key,
    which may ship inside a browser or mobile app)."""
    return getattr(request.state, "role", "ingest") != "ingest"


def _refusal(request: Request, role: str, allow: Roles) -> str:
    if not allow:
        needed, how = "an admin key", "`tuneloop tenants key --admin`"
    else:
        needed = f"a key of role {' or '.join(sorted(allow))} (or admin)"
        least = next(r for r in TENANT_ROLES if r in allow)
        how = f"`tuneloop tenants key NAME --role {least}`"
    return (
        f"{request.method} {request.url.path} needs {needed}; this key's role is {role} — "
        f"create one with {how}"
    )


def bearer_key(request: Request) -> str:
    """The request's API key (`Authorization: Bearer KEY`); 400/401 when absent or ambiguous."""
    sent = request.headers.getlist("authorization")
    if len(sent) > 1:  # which key the client meant is a guess, and one of them may be another tenant's
        raise BadRequest("send one Authorization header, not several", param="Authorization")
    scheme, key = [*(sent[0] if sent else "").split(None, 1), "", ""][:2]  # a tab after Bearer too
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "missing API key — send `Authorization: Bearer <key>` "
            "(create one with `tuneloop tenants add NAME`)"
        )
    return key.strip()


def error_response(exc: TuneloopError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    body = exc.to_openai()
    body["error"] = {k: _encodable(v) if isinstance(v, str) else v for k, v in body["error"].items()}
    return JSONResponse(body, status_code=exc.status, headers=headers)
