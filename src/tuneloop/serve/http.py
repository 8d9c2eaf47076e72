"""HTTP edge helpers: strict JSON bodies, bearer-key auth, and the one error handler."""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from tuneloop.errors import BadRequest, Forbidden, PayloadTooLarge, TuneloopError, Unauthorized
from tuneloop.store.repository import Principal, Store, TenantStore

AUTH_CACHE_SECONDS = 30.0
M = TypeVar("M", bound=BaseModel)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send numbers only")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, refusing oversize bodies, invalid UTF-8, NaN and Infinity."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def validate(model: type[M], data: Any, max_text: int, where: str = "") -> M:
    """Validate `data` as `model`; the error names the first bad field and what to send instead."""
    if not isinstance(data, dict):
        raise BadRequest(f"{where or 'body'}: expected a JSON object")
    too_long = _longest_string(data, max_text)
    if too_long:
        raise BadRequest(f"{where}{too_long}: string longer than {max_text} characters", param=too_long)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe(exc, where), param=_loc(exc.errors()[0], where)) from None


def describe(exc: ValidationError, where: str = "") -> str:
    """One line per problem, each naming the field: `messages.0.role: Input should be 'user', ...`."""
    parts = []
    for err in exc.errors()[:5]:
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{_loc(err, where)}: {msg}" if err["loc"] or where else msg)
    return "; ".join(parts)


def _loc(err: dict, where: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    return f"{where}{loc}" if loc else where.rstrip(".")


def _longest_string(value: Any, limit: int, path: str = "") -> str | None:
    if isinstance(value, str):
        return path or "body" if len(value) > limit else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _longest_string(item, limit, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


class Auth:
    """Resolves `Authorization: Bearer KEY` to a principal, caching hits briefly (revocation lag ≤ 30 s)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal]] = {}

    def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized(
                "missing API key — send `Authorization: Bearer <key>` "
                "(create one with `tuneloop tenants add NAME`)"
            )
        key = key.strip()
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < AUTH_CACHE_SECONDS:
            return hit[1]
        principal = self.store.authenticate(key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), principal)
        return principal

    def tenant(self, request: Request) -> TenantStore:
        """The tenant the key names; an admin key names one with the `X-Tuneloop-Tenant` header."""
        principal = self.principal(request)
        if principal.tenant is not None:
            return self.store.for_tenant(principal.tenant)
        name = request.headers.get("x-tuneloop-tenant")
        if not name:
            raise Forbidden("an admin key must name the tenant in the X-Tuneloop-Tenant header")
        return self.store.for_tenant(self.store.tenant_by_name(name))


def error_response(exc: TuneloopError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
    return JSONResponse(exc.to_openai(), status_code=exc.status, headers=headers)
