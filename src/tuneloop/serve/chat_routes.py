"""The OpenAI-compatible gateway: `/v1/chat/completions` (with streaming), `/v1/models`, `/v1/embeddings`.

Every completion is captured as an interaction through the same path as the capture API, and its id is
the completion's `id` and the `x-tuneloop-interaction-id` header, so clients can send feedback on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneloop.capture.events import InteractionIn
from tuneloop.errors import BadRequest, Conflict
from tuneloop.registry.composition import version_decoding, with_system_prompt
from tuneloop.registry.versions import Registry
from tuneloop.serve import embeddings_routes
from tuneloop.serve.backends.base import Completion, GenerationRequest
from tuneloop.serve.http import GATEWAY, clip, read_json, validate
from tuneloop.serve.routing import Route
from tuneloop.store.repository import TenantStore

router = APIRouter()
router.include_router(embeddings_routes.router)  # served, like chat, wherever a backend is
log = logging.getLogger("tuneloop")
CAPTURE_ATTEMPTS = 3  # then the interaction goes to the spool (HOME/spool), replayed by the server
_BACKGROUND: set[asyncio.Task] = set()  # captures of dropped streams, referenced until they finish
# Documented OpenAI parameters tuneloop cannot honour, each with the values that ask for nothing.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "moderation": (None,),
    "web_search_options": (None,),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
}
INT64 = 2**63
MAX_STOP_CHARS = 128  # a stream holds back up to this much text while it might still be a stop sequence
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Short = Annotated[str, Field(max_length=256)]
MetaKey = Annotated[str, Field(max_length=64)]
MetaValue = Annotated[str, Field(max_length=512)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: Short | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`; JSON modes reach an upstream as sent, the embedded model refuses them."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool | None = False
    include_obfuscation: bool | None = None


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, as strict as OpenAI: unknown fields and loose types are refused.

    Fields that only steer OpenAI's own service (store, service_tier, ...) are accepted and ignored;
    `metadata` is stored with the interaction, and its `session_id` is the interaction's session
    (signals/sessions.py).
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    model: Short | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
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
    parallel_tool_calls: bool | None = None
    prompt_cache_key: Short | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    safety_identifier: Short | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    store: bool | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    moderation: Any = None
    web_search_options: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None

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
                    f"logit_bias: key {clip(key)!r} is not a token id (a non-negative integer, as a string)",
                    param="logit_bias",
                )
            biases[int(key)] = float(bias)
        return biases


def _parse(body: Any, max_text: int) -> ChatRequest:
    req = validate(ChatRequest, body, max_text)
    for name, neutral in UNSUPPORTED.items():
        if getattr(req, name) not in neutral:
            raise BadRequest(f"{name} is not supported by tuneloop's gateway; leave it out", param=name)
    if req.response_format and (req.response_format.type == "json_schema") != bool(
        req.response_format.json_schema
    ):
        raise BadRequest(
            "response_format: json_schema (with its name and schema) goes with type json_schema only",
            param="response_format",
        )
    if req.stream and (req.n or 1) > 1:
        raise BadRequest("stream with n > 1 is not supported; send n=1 or stream=false", param="n")
    return req


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    """Create a chat completion as OpenAI's API does; the answer's id names the captured interaction."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)
    async with st.limits.admit(tenant.tenant_id):
        return await _complete(st, tenant, request)


async def _complete(st: Any, tenant: TenantStore, request: Request) -> Any:
    req = _parse(await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    if tenant.tenant.redaction != "off":
        # Refused before generating: the capture afterwards must not fail on what the client sent.
        st.capture.redactor.check_budget([m.text() for m in req.messages])
    interaction_id = f"chatcmpl-{uuid.uuid4().hex}"
    # Assigned by the id as stored (the keyed hash), so the raw end-user id goes no further than here.
    route = await st.router.route(tenant, st.capture.identifier(tenant, req.user), req.model, interaction_id)
    adapter = await st.router.ensure_loaded(tenant, route.version)
    # The version's prompt and decoding are what it serves with; the client's explicit settings win.
    version = route.version
    messages = with_system_prompt(
        [{"role": m.role, "content": m.text()} for m in req.messages],
        version.system_prompt if version else None,
    )
    decoding = {**version_decoding(version), **_decoding(req)}
    gen = GenerationRequest(
        messages=messages,
        max_tokens=decoding.get("max_tokens"),
        temperature=decoding.get("temperature", 1.0),
        top_p=decoding.get("top_p", 1.0),
        stop=decoding.get("stop", []),
        seed=decoding.get("seed"),
        repetition_penalty=decoding.get("repetition_penalty", 1.0),
        presence_penalty=decoding.get("presence_penalty", 0.0),
        frequency_penalty=decoding.get("frequency_penalty", 0.0),
        logit_bias=req.token_biases(),
        response_format=_response_format(req),
        n=req.n or 1,
        adapter=adapter,
    )
    model_name = route.version_id or st.backend.model_id
    headers = {
        "x-tuneloop-interaction-id": interaction_id,
        "x-tuneloop-version": route.version_id or "base",
        **({"x-tuneloop-arm": route.arm} if route.arm else {}),
    }
    started = time.perf_counter()
    if req.stream:
        stream = await st.backend.stream(gen)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = _sse(
            st, tenant, req, route, decoding, interaction_id, model_name, stream, include_usage, started
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    completion = await st.backend.generate(gen)
    await asyncio.shield(
        _in_background(_capture(st, tenant, req, route, decoding, interaction_id, completion, started))
    )
    body = {
        "id": interaction_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for c in completion.choices
        ],
        "usage": _usage(completion),
        "system_fingerprint": route.version_id or "base",
    }
    return JSONResponse(body, headers=headers)


def _decoding(req: ChatRequest) -> dict[str, Any]:
    """The decoding settings the client set explicitly (they override the version's defaults)."""
    explicit = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias")
    out = {k: v for k in explicit if (v := getattr(req, k)) is not None}
    if req.stops():
        out["stop"] = req.stops()
    if max_tokens := req.max_completion_tokens or req.max_tokens:
        out["max_tokens"] = max_tokens
    return out


def _response_format(req: ChatRequest) -> dict[str, Any] | None:
    """The client's JSON mode as OpenAI spells it; None for plain text."""
    if req.response_format is None or req.response_format.type == "text":
        return None
    return req.response_format.model_dump(by_alias=True, exclude_none=True)


def _usage(completion: Completion) -> dict[str, int]:
    total = completion.prompt_tokens + completion.completion_tokens
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": total,
    }


async def _capture(
    st: Any,
    tenant: TenantStore,
    req: ChatRequest,
    route: Route,
    decoding: dict[str, Any],
    interaction_id: str,
    completion: Completion,
    started: float,
    **metadata: Any,
) -> None:
    """Store the interaction, retrying briefly, else spool it for later: never fail a finished generation."""
    texts = [c.text for c in completion.choices]
    item = InteractionIn(
        id=interaction_id,
        user=req.user,
        session=(req.metadata or {}).get("session_id"),
        messages=[{"role": m.role, "content": m.text()} for m in req.messages],
        response=texts[0],
        choices=texts,
        model=st.backend.model_id,
        # The client's metadata as sent, with what the gateway observed (a dropped stream) beside it.
        metadata={**(req.metadata or {}), **metadata} or None,
    )
    served = {
        "adapter_version": route.version_id,
        "arm": route.arm,
        "experiment_id": route.experiment_id,
        "decoding": {**decoding, "n": req.n or 1},
        "latency_ms": (time.perf_counter() - started) * 1000,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }
    try:
        # The messages passed the budget before generating; the model's text is bounded by max_tokens.
        row, digest = await anyio.to_thread.run_sync(
            partial(st.capture.interaction_row, tenant, item, budget=False, **served)
        )
    except Exception:
        log.exception("interaction %s could not be redacted, so it was not captured", interaction_id)
        return
    row["created_at"] = datetime.now(UTC)  # the answer's moment, also when written from the spool
    for attempt in range(CAPTURE_ATTEMPTS):
        try:
            await st.calls(tenant.log_interaction, row, digest)
            return
        except Conflict:
            log.error(
                "interaction %s exists already with another payload; not captured again", interaction_id
            )
            return
        except Exception:
            if attempt + 1 < CAPTURE_ATTEMPTS:
                await asyncio.sleep(0.2 * 2**attempt)
    log.warning("store unavailable: interaction %s spooled, written later", interaction_id, exc_info=True)
    try:
        await anyio.to_thread.run_sync(st.spool.append, tenant.tenant, row, digest)
    except Exception:
        log.exception("interaction %s could be neither stored nor spooled; it is lost", interaction_id)


async def _sse(
    st: Any,
    tenant: TenantStore,
    req: ChatRequest,
    route: Route,
    decoding: dict[str, Any],
    interaction_id: str,
    model_name: str,
    stream: Any,
    include_usage: bool,
    started: float,
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> str:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        body = {
            "id": interaction_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": choices,
            **({"usage": usage} if usage else {}),
        }
        return f"data: {json.dumps(body)}\n\n"

    parts: list[str] = []
    finished = False
    capture = (st, tenant, req, route, decoding, interaction_id)
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for delta in stream:
            parts.append(delta)
            yield chunk({"content": delta})
        completion = stream.completion
        yield chunk({}, finish=completion.choices[0].finish_reason)
        if include_usage:
            yield chunk({}, usage=_usage(completion))
        finished = True
        # Stored (or spooled) before the stream ends, so feedback sent after it finds the interaction;
        # shielded, so a client leaving at this moment does not cut the capture short.
        await asyncio.shield(_in_background(_capture(*capture, completion, started)))
        yield "data: [DONE]\n\n"
    finally:
        await stream.aclose()
        if not finished:
            # The client went away mid-stream; what the model said is still captured, in the background
            # (this generator is being cancelled and cannot wait).
            _in_background(_capture(*capture, _partial(parts), started, disconnected=True))


def _in_background(coro: Coroutine[Any, Any, None]) -> asyncio.Task:
    """A task that runs to the end even if its awaiter is cancelled (referenced until then)."""
    task = asyncio.create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


def _partial(parts: list[str]) -> Completion:
    from tuneloop.serve.backends.base import Choice

    return Completion(
        choices=[Choice(text="".join(parts), finish_reason="length")],
        prompt_tokens=0,
        completion_tokens=len(parts),
    )


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    """What this key may name in `model`: the alias `tuneloop`, the base model, and its own versions."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)
    versions = await st.calls(Registry(tenant).list, "adapter")
    owner = tenant.tenant.name
    servable = (v.id for v in versions if v.state not in ("blocked", "rolled_back"))
    ids = dict.fromkeys(["tuneloop", st.backend.model_id, *servable])  # ordered, without repeats
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": owner} for i in ids],
    }
