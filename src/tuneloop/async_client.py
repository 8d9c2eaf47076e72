"""`AsyncClient`: the capture API's SDK for asyncio applications, with `Client`'s calls and queueing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx

from tuneloop.client import (
    RETRY_STATUSES,
    EventQueue,
    error_of,
    event,
    interaction_body,
    log,
    log_rejected,
    retry_delay,
    score_value,
    server_url,
    warn_once,
)
from tuneloop.errors import TuneloopError


class AsyncClient:
    """`Client` for asyncio applications: the same calls, awaited; queued events flush in a task."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        batch_size: int = 100,
        flush_interval: float = 1.0,
    ) -> None:
        self.retries = retries
        self.flush_interval = flush_interval
        self._queue = EventQueue(batch_size)
        self._wake = asyncio.Event()
        self._closing = False
        self._flusher: asyncio.Task | None = None
        self._http = httpx.AsyncClient(
            base_url=server_url(base_url),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    async def aclose(self) -> None:
        """Send every queued event, then close; raises `Unsent` with any the server would not take."""
        self._closing = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher
        try:
            await self.flush()
        except (TuneloopError, httpx.TransportError) as exc:
            raise self._queue.unsent(exc) from exc
        finally:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def log_interaction(
        self, messages: list[dict[str, str]], response: str, *, id: str | None = None, **fields: Any
    ) -> str:
        """Log an interaction (`user`, `session`, `model`, `choices`, `metadata` as keywords); returns its
        id."""
        body = interaction_body(messages, response, id=id, **fields)
        return (await self._request("POST", "/v1/interactions", body))["id"]

    async def feedback(
        self,
        interaction_id: str | None,
        kind: str,
        value: Any = None,
        *,
        background: bool = False,
        **fields: Any,
    ) -> str:
        """As `Client.feedback`: the status, or with `background=True` the queued event's id."""
        item = event(interaction_id, kind, value, **fields)
        if background:
            return self._enqueue(item)
        result = await self._request("POST", "/v1/feedback", item)
        warn_once(result)
        return result["status"]

    async def score(
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
        """As `Client.score`."""
        value_ = score_value(name, value, data_type, comment)
        return await self.feedback(interaction_id, "score", value_, background=background, **fields)

    async def feedback_batch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """As `Client.feedback_batch`."""
        body = [{**e, "id": e.get("id") or f"evt-{uuid.uuid4().hex}"} for e in events]
        return (await self._request("POST", "/v1/feedback", {"events": body}))["results"]

    async def flush(self) -> None:
        """As `Client.flush`."""
        while batch := self._queue.take():
            try:
                log_rejected(await self.feedback_batch(batch))
            except (TuneloopError, httpx.TransportError):
                self._queue.put_back(batch)
                raise

    async def interaction(self, interaction_id: str) -> dict[str, Any]:
        """One interaction with its feedback."""
        return await self._request("GET", f"/v1/interactions/{interaction_id}", None)

    def _enqueue(self, item: dict[str, Any]) -> str:
        if self._closing:
            raise TuneloopError("the client is closed; queue events before aclose()")
        if self._queue.put(item):
            self._wake.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        return item["id"]

    async def _flush_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except (TuneloopError, httpx.TransportError):
                log.warning(
                    "tuneloop unreachable; %d queued events kept for the next flush", len(self._queue)
                )

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http.request(method, path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(retry_delay(None, attempt))
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(retry_delay(resp, attempt))
                continue
            if resp.status_code >= 400:
                raise error_of(resp)
            return resp.json()
        raise AssertionError("unreachable")
