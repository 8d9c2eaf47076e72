"""`tuneloop.Client`: the Python SDK for the capture API. Retries are safe: event ids are resent as is."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import httpx

from tuneloop.errors import BadRequest, Conflict, NotFound, Overloaded, TuneloopError, Unauthorized

_ERRORS: dict[int, type[TuneloopError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict}
RETRY_STATUSES = {429, 500, 502, 503, 504}


class Client:
    """Talks to a tuneloop server as one tenant (the API key names it)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def log_interaction(
        self,
        messages: list[dict[str, str]],
        response: str,
        *,
        id: str | None = None,
        user: str | None = None,
        session: str | None = None,
        model: str | None = None,
        choices: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Log an interaction your own model made; returns its id (give `id` to make retries idempotent)."""
        body = {
            "id": id or f"int-{uuid.uuid4().hex}",
            "messages": messages,
            "response": response,
            "user": user,
            "session": session,
            "model": model,
            "choices": choices,
            "metadata": metadata,
        }
        return self._post("/v1/interactions", {k: v for k, v in body.items() if v is not None})["id"]

    def feedback(
        self,
        interaction_id: str,
        kind: str,
        value: Any = None,
        *,
        id: str | None = None,
        rater: str | None = None,
        source: str = "user",
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send one feedback event; returns its status ("accepted" or "duplicate")."""
        return self._post("/v1/feedback", _event(interaction_id, kind, value, id, rater, source, metadata))[
            "status"
        ]

    def feedback_batch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send many events at once; each result says accepted, duplicate or rejected (with the reason)."""
        body = [
            {"id": e.get("id") or f"evt-{uuid.uuid4().hex}", **{k: v for k, v in e.items() if k != "id"}}
            for e in events
        ]
        return self._post("/v1/feedback", {"events": body})["results"]

    def report_outcome(
        self,
        interaction_id: str,
        *,
        junit: str | bytes | os.PathLike | None = None,
        sarif: str | bytes | os.PathLike | None = None,
    ) -> list[dict[str, Any]]:
        """Post a CI's JUnit report and/or a linter's SARIF file (content, or a path) as outcome events of
        the interaction whose code was applied; a re-post of the same report is a duplicate."""
        from tuneloop.capture.test_reports import junit_events, read_report, sarif_events

        events = []
        sources = ((junit, junit_events, "junit report"), (sarif, sarif_events, "sarif file"))
        for report, parse, what in sources:
            if report is not None:
                data = read_report(report, what) if isinstance(report, os.PathLike) else report
                events += parse(interaction_id, data)
        if not events:
            raise TypeError("report_outcome needs junit= or sarif=")
        return self.feedback_batch(events)

    def interaction(self, interaction_id: str) -> dict[str, Any]:
        """One interaction with its feedback."""
        return self._request("GET", f"/v1/interactions/{interaction_id}", None)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(float(resp.headers.get("retry-after", 0.2 * 2**attempt)))
                continue
            if resp.status_code >= 400:
                message = resp.json().get("error", {}).get("message", resp.text)
                if resp.status_code in RETRY_STATUSES:
                    raise Overloaded(message, retry_after=int(resp.headers.get("retry-after", "1")))
                raise _ERRORS.get(resp.status_code, TuneloopError)(message)
            return resp.json()
        raise AssertionError("unreachable")


def _event(
    interaction_id: str,
    kind: str,
    value: Any,
    id: str | None,
    rater: str | None,
    source: str,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    body = {
        "id": id or f"evt-{uuid.uuid4().hex}",
        "interaction_id": interaction_id,
        "kind": kind,
        "value": value,
        "rater": rater,
        "source": source,
        "metadata": metadata,
    }
    return {k: v for k, v in body.items() if v is not None}
