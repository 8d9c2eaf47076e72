"""The Python SDK for the capture API: `Client` (blocking; `tuneloop.async_client.AsyncClient` for asyncio).

Retries are safe: event ids are minted on the client and resent as they are. Feedback and scores can be
queued (`background=True`) and sent in batches by a background flusher: when `batch_size` events wait,
every `flush_interval` seconds, and on `close()`, which returns only once every queued event is stored (or
raises `Unsent` holding the events the server could not take).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

import httpx

from tuneloop.errors import BadRequest, Conflict, NotFound, Overloaded, TuneloopError, Unauthorized

_ERRORS: dict[int, type[TuneloopError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict}
RETRY_STATUSES = {429, 500, 502, 503, 504}
log = logging.getLogger("tuneloop.client")


def server_url(base_url: str) -> str:
    """The server's root URL from what a user passes: OpenAI clients are set up with `.../v1`, and that URL
    names the same server here (kept, every path would be `/v1/v1/...`: 404 "no such endpoint")."""
    url = base_url.rstrip("/").removesuffix("/v1")
    if not url.startswith(("http://", "https://")):
        # httpx would fail only at the first request, naming `localhost://` as the protocol.
        raise BadRequest(f"server URL {base_url!r} needs http:// or https://, e.g. http://127.0.0.1:8000")
    return url


class Unsent(TuneloopError):
    """Queued events the server did not take before `close()`; `events` holds them for the caller to keep."""

    def __init__(self, message: str, events: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.events = events


def event(
    interaction_id: str | None,
    kind: str,
    value: Any = None,
    *,
    id: str | None = None,
    session: str | None = None,
    rater: str | None = None,
    source: str = "user",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A feedback event as the API takes it, with a fresh client-side id unless `id` is given."""
    body = {
        "id": id or f"evt-{uuid.uuid4().hex}",
        "interaction_id": interaction_id,
        "session": session,
        "kind": kind,
        "value": value,
        "rater": rater,
        "source": source,
        "metadata": metadata,
    }
    return {k: v for k, v in body.items() if v is not None}


def score_value(name: str, value: bool | float | str, data_type: str | None, comment: str | None) -> dict:
    """A named score's value; the data type follows the Python type unless given."""
    if data_type is None:
        data_type = (
            "boolean" if isinstance(value, bool) else "categorical" if isinstance(value, str) else "numeric"
        )
    out = {"name": name, "data_type": data_type, "value": value}
    return {**out, "comment": comment} if comment is not None else out


def interaction_body(messages: list[dict[str, str]], response: str, **fields: Any) -> dict[str, Any]:
    """An interaction as `POST /v1/interactions` takes it, with a fresh id unless `id` is given."""
    body = {"id": fields.pop("id") or f"int-{uuid.uuid4().hex}", "messages": messages, "response": response}
    return {**body, **{k: v for k, v in fields.items() if v is not None}}


def error_of(resp: httpx.Response) -> TuneloopError:
    """The SDK's error for an HTTP error answer."""
    try:
        message = resp.json().get("error", {}).get("message", resp.text)
    except ValueError:
        message = resp.text[:300]
    if resp.status_code in RETRY_STATUSES:
        return Overloaded(message, retry_after=int(resp.headers.get("retry-after", "1")))
    return _ERRORS.get(resp.status_code, TuneloopError)(message)


def retry_delay(resp: httpx.Response | None, attempt: int) -> float:
    """Seconds to wait before retry `attempt`: the server's Retry-After, else exponential."""
    header = resp.headers.get("retry-after") if resp is not None else None
    return float(header) if header and header.isdigit() else 0.2 * 2**attempt


def outcome_events(
    interaction_id: str, junit: str | bytes | os.PathLike | None, sarif: str | bytes | os.PathLike | None
) -> list[dict[str, Any]]:
    """The outcome events of a JUnit report and/or a SARIF file (content, or a path), parsed here so a bad
    file fails before anything is sent."""
    from tuneloop.capture.test_reports import junit_events, read_report, sarif_events

    events = []
    for report, parse, what in ((junit, junit_events, "junit report"), (sarif, sarif_events, "sarif file")):
        if report is not None:
            data = read_report(report, what) if isinstance(report, os.PathLike) else report
            events += parse(interaction_id, data)
    if not events:
        raise TypeError("report_outcome needs junit= or sarif=")
    return events


def log_rejected(results: list[dict[str, Any]]) -> None:
    """Warn about queued events the server refused (not retried: their data is bad) or stored with a
    warning (an outcome name the reward policy does not list)."""
    for r in results:
        if r["status"] == "rejected":
            log.warning("queued event %s was rejected: %s", r["id"], r.get("error"))
        warn_once(r)


_warned: set[str] = set()


def warn_once(result: dict[str, Any]) -> None:
    """Log a stored event's warning the first time this process hears it: one per outcome name, not one
    per sale."""
    warning = result.get("warning")
    if warning and warning not in _warned and len(_warned) < 256:
        _warned.add(warning)
        log.warning("%s", warning)


class EventQueue:
    """Events waiting to be sent, in order; safe to use from several threads."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def put(self, item: dict[str, Any]) -> bool:
        """Queue one event; True when a full batch waits."""
        with self._lock:
            self._events.append(item)
            return len(self._events) >= self.batch_size

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            batch, self._events = self._events[: self.batch_size], self._events[self.batch_size :]
            return batch

    def put_back(self, batch: list[dict[str, Any]]) -> None:
        with self._lock:
            self._events[:0] = batch

    def unsent(self, cause: Exception) -> Unsent:
        """Empty the queue into the error that hands its events back to the caller."""
        with self._lock:
            events, self._events = self._events, []
        return Unsent(f"{len(events)} queued events were not sent ({cause}); keep them and resend", events)


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
        batch_size: int = 100,
        flush_interval: float = 1.0,
    ) -> None:
        self.retries = retries
        self.flush_interval = flush_interval
        self._queue = EventQueue(batch_size)
        self._wake = threading.Event()
        self._closing = False
        self._flusher: threading.Thread | None = None
        self._starting = threading.Lock()
        self._http = httpx.Client(
            base_url=server_url(base_url),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def close(self) -> None:
        """Send every queued event, then close; raises `Unsent` with any the server would not take."""
        self._closing = True
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join()
        try:
            self.flush()
        except (TuneloopError, httpx.TransportError) as exc:
            raise self._queue.unsent(exc) from exc
        finally:
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
        body = interaction_body(
            messages,
            response,
            id=id,
            user=user,
            session=session,
            model=model,
            choices=choices,
            metadata=metadata,
        )
        return self._post("/v1/interactions", body)["id"]

    def feedback(
        self,
        interaction_id: str | None,
        kind: str,
        value: Any = None,
        *,
        background: bool = False,
        **fields: Any,
    ) -> str:
        """Send one feedback event (`id`, `session`, `rater`, `source`, `metadata` as keywords); returns its
        status, or with `background=True` queues it and returns its id at once."""
        item = event(interaction_id, kind, value, **fields)
        if background:
            return self._enqueue(item)
        result = self._post("/v1/feedback", item)
        warn_once(result)
        return result["status"]

    def score(
        self,
        interaction_id: str | None,
        name: str,
        value: bool | float | str,
        *,
        data_type: str | None = None,
        comment: str | None = None,
        background: bool = False,
        **fields: Any,
    ) -> str:
        """Send a named score (the reward policy's `scores` says how it counts); as `feedback`."""
        value_ = score_value(name, value, data_type, comment)
        return self.feedback(interaction_id, "score", value_, background=background, **fields)

    def feedback_batch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send many events at once; each result says accepted, duplicate, pending or rejected (why)."""
        body = [{**e, "id": e.get("id") or f"evt-{uuid.uuid4().hex}"} for e in events]
        return self._post("/v1/feedback", {"events": body})["results"]

    def flush(self) -> None:
        """Send the queued events now, in batches; raises when the server cannot take them (they stay
        queued)."""
        while batch := self._queue.take():
            try:
                log_rejected(self.feedback_batch(batch))
            except (TuneloopError, httpx.TransportError):
                self._queue.put_back(batch)
                raise

    def report_outcome(
        self,
        interaction_id: str,
        *,
        junit: str | bytes | os.PathLike | None = None,
        sarif: str | bytes | os.PathLike | None = None,
    ) -> list[dict[str, Any]]:
        """Post a CI's JUnit report and/or a linter's SARIF file (content, or a path) as outcome events of
        the interaction whose code was applied; a re-post of the same report is a duplicate."""
        return self.feedback_batch(outcome_events(interaction_id, junit, sarif))

    def interaction(self, interaction_id: str) -> dict[str, Any]:
        """One interaction with its feedback."""
        return self._request("GET", f"/v1/interactions/{interaction_id}", None)

    def _enqueue(self, item: dict[str, Any]) -> str:
        if self._closing:
            raise TuneloopError("the client is closed; queue events before close()")
        if self._queue.put(item):
            self._wake.set()
        with self._starting:  # threads that queue their first events together start one flusher
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="tuneloop-client", daemon=True)
                self._flusher.start()
        return item["id"]

    def _flush_loop(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except (TuneloopError, httpx.TransportError):
                log.warning(
                    "tuneloop unreachable; %d queued events kept for the next flush", len(self._queue)
                )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(retry_delay(None, attempt))
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(retry_delay(resp, attempt))
                continue
            if resp.status_code >= 400:
                raise error_of(resp)
            return resp.json()
        raise AssertionError("unreachable")
