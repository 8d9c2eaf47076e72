"""What the gateway's completion routes share: OpenAI's sampling parameters, routing a request to a version,
capturing the answer as an interaction, and relaying a stream as server-sent events.

`/v1/chat/completions` (chat_routes.py) and the legacy `/v1/completions` (completions_routes.py) differ only
in how the prompt and the answer are shaped; everything here is the same for both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect

from tuneloop.capture import pending
from tuneloop.capture.events import InteractionIn, storable
from tuneloop.errors import BadRequest
from tuneloop.registry.composition import version_decoding
from tuneloop.serve.backends.base import Choice, Completion, GenerationRequest
from tuneloop.serve.http import field_name
from tuneloop.serve.routing import Route
from tuneloop.store.repository import TenantStore

log = logging.getLogger("tuneloop")
T = TypeVar("T")
CAPTURE_ATTEMPTS = 3  # then the interaction goes to the spool (HOME/spool), replayed by the server
_BACKGROUND: set[asyncio.Task] = set()  # captures of dropped answers, referenced until they finish
INT64 = 2**63
MAX_STOP_CHARS = 128  # a stream holds back up to this much text while it might still be a stop sequence
SESSION_HEADER = "x-tuneloop-session"
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Short = Annotated[str, Field(max_length=256)]
MetaKey = Annotated[str, Field(max_length=64)]
MetaValue = Annotated[str, Field(max_length=512)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool | None = False
    include_obfuscation: bool | None = None


class SamplingParams(BaseModel):
    """The request fields chat and text completions share, as strict as OpenAI's API.

    `metadata` is stored with the interaction, and its `session_id` is the interaction's session
    (signals/sessions.py), as is the `X-Tuneloop-Session` header.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    model: Short | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    stop: Stop | list[Stop] | None = Field(None)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    n: int | None = Field(None, ge=1, le=8)
    user: Short | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = Field(None, max_length=300)
    metadata: dict[MetaKey, MetaValue] | None = Field(None, max_length=16)

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_biases(self) -> dict[int, float]:
        """`logit_bias` keyed by token id; a key that is not a token id is a 400 naming it."""
        biases = {}
        for key, bias in (self.logit_bias or {}).items():
            if not (key.isascii() and key.isdigit() and len(key) <= 9):
                raise BadRequest(
                    f"logit_bias: key {field_name(key)!r} is not a token id "
                    "(a non-negative integer, as a string)",
                    param="logit_bias",
                )
            biases[int(key)] = float(bias)
        return biases

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def decoding(self) -> dict[str, Any]:
        """The decoding settings the client set explicitly (they override the version's defaults)."""
        explicit = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias")
        out = {k: v for k in explicit if (v := getattr(self, k)) is not None}
        if self.stops():
            out["stop"] = self.stops()
        if max_tokens := self.max_new_tokens():
            out["max_tokens"] = max_tokens
        return out

    def check_streaming(self) -> None:
        if self.stream and (self.n or 1) > 1:
            raise BadRequest("stream with n > 1 is not supported; send n=1 or stream=false", param="n")


def session_of(request: Request, req: SamplingParams) -> str | None:
    """The session the client names: the `X-Tuneloop-Session` header or `metadata.session_id` (equal if
    both are sent)."""
    header = request.headers.get(SESSION_HEADER)
    body = (req.metadata or {}).get("session_id")
    if body is not None and not _is_session(body):
        raise BadRequest(
            "metadata.session_id: send a string of 1-256 printable characters", param="metadata.session_id"
        )
    if header is None:
        return body
    if not _is_session(header):
        raise BadRequest(
            f"{SESSION_HEADER}: send a session id of 1-256 printable characters", param=SESSION_HEADER
        )
    if body is not None and body != header:
        raise BadRequest(
            f"{SESSION_HEADER} and metadata.session_id name different sessions; send one of them",
            param=SESSION_HEADER,
        )
    return header


def _is_session(value: object) -> bool:
    """Whether `value` is a session id capture stores (checked before generating, not after)."""
    return isinstance(value, str) and bool(value.strip()) and len(value) <= 256 and value.isprintable()


@dataclass
class Call:
    """One completion request after routing: what serves it, and what its capture records."""

    st: Any
    tenant: TenantStore
    req: SamplingParams
    route: Route
    adapter: str | None
    decoding: dict[str, Any]
    interaction_id: str
    session: str | None
    started: float  # perf_counter at the start, for latency
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def model_name(self) -> str:
        return self.route.version_id or self.st.backend.model_id

    @property
    def headers(self) -> dict[str, str]:
        return {
            "x-tuneloop-interaction-id": self.interaction_id,
            "x-tuneloop-version": self.route.version_id or "base",
            **({"x-tuneloop-arm": self.route.arm} if self.route.arm else {}),
        }

    def generation(self, **shape: Any) -> GenerationRequest:
        """The backend request: the version's decoding under the client's explicit settings, plus `shape`
        (messages or prompt, tools, response_format)."""
        d = self.decoding
        return GenerationRequest(
            max_tokens=d.get("max_tokens"),
            temperature=d.get("temperature", 1.0),
            top_p=d.get("top_p", 1.0),
            stop=d.get("stop", []),
            seed=d.get("seed"),
            repetition_penalty=d.get("repetition_penalty", 1.0),
            presence_penalty=d.get("presence_penalty", 0.0),
            frequency_penalty=d.get("frequency_penalty", 0.0),
            logit_bias=self.req.token_biases(),
            n=self.req.n or 1,
            adapter=self.adapter,
            owner=self.tenant.tenant_id,
            **shape,
        )


async def open_call(
    st: Any, tenant: TenantStore, request: Request, req: SamplingParams, texts: list[str], prefix: str
) -> Call:
    """Check the redaction budget of `texts`, mint the interaction id and route the request to a version."""
    session = session_of(request, req)
    if tenant.tenant.redaction != "off":
        # Refused before generating: the capture afterwards must not fail on what the client sent.
        st.capture.redactor.check_budget(texts)
    interaction_id = f"{prefix}-{uuid.uuid4().hex}"
    # Assigned by the id as stored (the keyed hash), so the raw end-user id goes no further than here.
    route = await st.router.route(tenant, st.capture.identifier(tenant, req.user), req.model, interaction_id)
    adapter = await st.router.ensure_loaded(tenant, route.version)
    decoding = {**version_decoding(route.version), **req.decoding()}
    return Call(st, tenant, req, route, adapter, decoding, interaction_id, session, time.perf_counter())


def usage(completion: Completion) -> dict[str, int]:
    total = completion.prompt_tokens + completion.completion_tokens
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": total,
    }


def captured_text(choice: Choice) -> str:
    """What an answer said, as stored: its text, or its tool calls as JSON when it called tools instead."""
    if choice.text or not (choice.tool_calls or choice.function_call):
        return choice.text
    return captured_calls(choice.tool_calls, choice.function_call)


def captured_calls(tool_calls: list[dict[str, Any]] | None, function_call: dict[str, Any] | None) -> str:
    """Tool calls (or a legacy function call) as a stored message holds them: JSON, without the calls' ids,
    which only pair a call with its result in one request and may be any text a client chose."""
    if function_call and not tool_calls:
        return json.dumps({"function_call": function_call}, ensure_ascii=False)
    return json.dumps({"tool_calls": [_without_id(c) for c in tool_calls or []]}, ensure_ascii=False)


def _without_id(call: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in call.items() if key != "id"}


async def capture(
    call: Call, messages: list[dict[str, str]], completion: Completion, **observed: Any
) -> None:
    """Store the interaction, retrying briefly, else spool it for later: never fail a finished generation.

    `observed` is what the gateway saw beside the client's metadata (a dropped stream, the endpoint).
    """
    st, tenant, req = call.st, call.tenant, call.req
    texts = [storable(captured_text(c)) for c in completion.choices]
    iid = call.interaction_id
    try:
        item = InteractionIn(
            id=iid,
            user=req.user,
            session=call.session,
            messages=messages,
            response=texts[0],
            choices=texts,
            model=st.backend.model_id,
            metadata={**(req.metadata or {}), **observed} or None,
        )
    except ValidationError:  # the request was checked before generating; an answer is never failed after
        log.exception("interaction %s does not validate, so it was not captured", iid)
        return
    served = {
        "adapter_version": call.route.version_id,
        "arm": call.route.arm,
        "experiment_id": call.route.experiment_id,
        "decoding": {**call.decoding, "n": req.n or 1},
        "latency_ms": (time.perf_counter() - call.started) * 1000,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }
    try:
        # The messages passed the budget before generating; the model's text is bounded by max_tokens.
        [(row, digest)] = await st.redactions.many(
            st.capture.interaction_rows, tenant, [(item, {"budget": False, "teaches": True, **served})]
        )
    except Exception:
        log.exception("interaction %s could not be redacted, so it was not captured", iid)
        return
    row["created_at"] = datetime.now(UTC)  # the answer's moment, also when written from the spool
    for attempt in range(CAPTURE_ATTEMPTS):
        try:
            [result] = await st.writes.many(pending.store_interactions, tenant, [(row, digest)])
            if result.status == "rejected":
                log.error("interaction %s exists already with another payload; not captured again", iid)
            return
        except Exception:
            if attempt + 1 < CAPTURE_ATTEMPTS:
                await asyncio.sleep(0.2 * 2**attempt)
    log.warning("store unavailable: interaction %s spooled, written later", iid, exc_info=True)
    try:
        await anyio.to_thread.run_sync(st.spool.append, tenant.tenant, row, digest)
    except Exception:
        log.exception("interaction %s could be neither stored nor spooled; it is lost", iid)


def in_background(coro: Coroutine[Any, Any, None]) -> asyncio.Task:
    """A task that runs to the end even if its awaiter is cancelled (referenced until then)."""
    task = asyncio.create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


async def answered(
    call: Call,
    request: Request,
    messages: list[dict[str, str]],
    generation: Awaitable[Completion],
    **observed: Any,
) -> Completion:
    """The completion `generation` makes, captured (`finish`). A client that hangs up first stops it, so the
    model's slots go to other requests at once, and gets ClientDisconnect; captured as a dropped stream."""
    try:
        completion = await unless_hung_up(request, generation)
    except ClientDisconnect:
        dropped(call, messages, [], **observed)
        raise
    await finish(call, messages, completion, **observed)
    return completion


async def unless_hung_up(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; cancelled, and ClientDisconnect raised, when the client hangs up first."""
    task = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(_hangup(request))
    try:
        await asyncio.wait({task, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        task.cancel()  # no-op once done; else the backend gives the sequences' slots back
    if not task.done():
        raise ClientDisconnect
    return task.result()


async def _hangup(request: Request) -> None:
    # Read after the whole body: the server's next message is the disconnect (Starlette does not cancel a
    # handler whose client went away, so a non-streamed answer would otherwise be generated to the end).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def finish(call: Call, messages: list[dict[str, str]], completion: Completion, **observed: Any) -> None:
    """Capture a finished answer before the response goes out, so feedback sent after it finds the
    interaction; shielded, so a client leaving at this moment does not cut the capture short."""
    await asyncio.shield(in_background(capture(call, messages, completion, **observed)))


def _partial(parts: list[str]) -> Completion:
    return Completion(
        choices=[Choice(text="".join(parts), finish_reason="length")],
        prompt_tokens=0,
        completion_tokens=len(parts),
    )


# chunk(text delta, finish reason, usage, the finished completion) -> one SSE event's JSON body
Chunk = Callable[..., dict[str, Any]]


async def sse(
    call: Call,
    messages: list[dict[str, str]],
    stream: Any,
    chunk: Chunk,
    *,
    first: dict[str, Any] | None = None,
    **observed: Any,
) -> AsyncIterator[str]:
    """Relay a backend stream as server-sent events and capture what it said, finished or dropped."""
    include_usage = bool(call.req.stream_options and call.req.stream_options.include_usage)
    parts: list[str] = []
    finished = False
    try:
        if first is not None:
            yield _event(first)
        async for delta in stream:
            parts.append(delta)
            yield _event(chunk(delta=delta))
        completion = stream.completion
        yield _event(chunk(finish=completion.choices[0], delta=""))
        if include_usage:
            yield _event(chunk(usage=usage(completion)))
        finished = True
        await finish(call, messages, completion, **observed)
        yield "data: [DONE]\n\n"
    finally:
        await stream.aclose()
        if not finished:
            dropped(call, messages, parts, **observed)


def dropped(call: Call, messages: list[dict[str, str]], parts: list[str], **observed: Any) -> None:
    """Capture, in the background, what a client that went away mid-answer was sent (`parts`): its request
    is being cancelled and cannot wait."""
    log.info("the client of %s went away mid-answer; generation stopped", call.interaction_id)
    in_background(capture(call, messages, _partial(parts), disconnected=True, **observed))


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"
