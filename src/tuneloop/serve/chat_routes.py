"""The OpenAI-compatible gateway: `/v1/chat/completions` (with streaming and tools), `/v1/models`, and the
routers of `/v1/completions` and `/v1/embeddings`.

Every completion is captured as an interaction through the same path as the capture API, and its id is
the completion's `id` and the `x-tuneloop-interaction-id` header, so clients can send feedback on it.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneloop.capture.events import not_found
from tuneloop.errors import BadRequest, NotFound
from tuneloop.registry.composition import with_system_prompt
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.prompting import add_sources
from tuneloop.serve import completions_routes, embeddings_routes
from tuneloop.serve.backends.base import Choice
from tuneloop.serve.gateway import (
    Call,
    SamplingParams,
    Short,
    answered,
    captured_calls,
    open_call,
    sse,
    usage,
)
from tuneloop.serve.http import GATEWAY, read_json, validate
from tuneloop.serve.routing import PRODUCTION
from tuneloop.store.repository import TenantStore

router = APIRouter()
# Served, like chat, wherever a backend is.
router.include_router(embeddings_routes.router)
router.include_router(completions_routes.router)
# Documented OpenAI parameters tuneloop cannot honour, each with the values that ask for nothing.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "moderation": (None,),
    "web_search_options": (None,),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
}
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_TOOLS = 128


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    """A call the model made: the function's name and its arguments as a JSON string."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: FunctionName
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of the history; an assistant's tool calls and the `tool` answers to them included."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: Short | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    function_call: FunctionCall | None = None

    @model_validator(mode="after")
    def _fits_role(self) -> ChatMessage:
        calls = self.tool_calls or self.function_call
        if calls and self.role != "assistant":
            raise ValueError("tool_calls and function_call belong to assistant messages")
        if self.content is None and not calls:
            raise ValueError("content is required (an assistant message may carry tool_calls instead)")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool_call_id goes with role tool, which needs it (the id of the call answered)")
        if self.role == "function" and self.name is None:
            raise ValueError("a function message needs the function's name")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def as_sent(self) -> dict[str, Any]:
        """The message as a model receives it: text content, and the tool fields where present."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.function_call:
            out["function_call"] = self.function_call.model_dump()
        out.update({k: v for k in ("name", "tool_call_id") if (v := getattr(self, k)) is not None})
        return out

    def as_captured(self) -> dict[str, str]:
        """The message as an interaction stores it: a tool call is its JSON, a tool's answer its text."""
        role = "tool" if self.role == "function" else self.role
        if self.content is None:
            calls = [c.model_dump() for c in self.tool_calls or []]
            function_call = self.function_call.model_dump() if self.function_call else None
            return {"role": role, "content": captured_calls(calls, function_call)}
        return {"role": role, "content": self.text()}


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: FunctionName


class NamedTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: NamedFunction


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


class ChatRequest(SamplingParams):
    """OpenAI's chat completion request, as strict as OpenAI: unknown fields and loose types are refused.

    Fields that only steer OpenAI's own service (store, service_tier, ...) are accepted and ignored;
    tools reach an upstream as sent.
    """

    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    parallel_tool_calls: bool | None = None
    prompt_cache_key: Short | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    safety_identifier: Short | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    store: bool | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    functions: list[FunctionSpec] | None = Field(None, max_length=MAX_TOOLS)
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    moderation: Any = None
    web_search_options: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def tool_fields(self) -> dict[str, Any]:
        """The tool fields as OpenAI spells them, for the backend (empty when the client sent none)."""
        names = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
        return self.model_dump(include=set(names), exclude_none=True)


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
    if (req.tools is not None or req.tool_choice is not None) and (req.functions or req.function_call):
        raise BadRequest("send tools or the legacy functions, not both", param="functions")
    if isinstance(req.tool_choice, NamedTool) and req.tool_choice.function.name not in {
        t.function.name for t in req.tools or []
    }:
        raise BadRequest("tool_choice names a function that is not in tools", param="tool_choice")
    req.check_streaming()
    return req


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    """Create a chat completion as OpenAI's API does; the answer's id names the captured interaction."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)
    return await _complete(st, tenant, request)


async def _complete(st: Any, tenant: TenantStore, request: Request) -> Any:
    req = _parse(await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    captured = [m.as_captured() for m in req.messages]
    call = await open_call(st, tenant, request, req, [m["content"] for m in captured], "chatcmpl")
    # The version's prompt is what it serves with; the client's own system message is kept after it.
    version = call.route.version
    messages = _with_version_prompt([m.as_sent() for m in req.messages], version)
    messages = await add_sources(st, tenant, messages, call.interaction_id, call.decoding.get("sources"))
    messages = await st.router.examples.apply(call, messages)
    gen = call.generation(messages=messages, response_format=_response_format(req), tools=req.tool_fields())
    if req.stream:
        stream = await st.backend.stream(gen)
        first = _chunk(call, delta={"role": "assistant", "content": ""})
        events = sse(call, captured, stream, partial(_chunk, call), first=first)
        return StreamingResponse(events, media_type="text/event-stream", headers=call.headers)
    completion = await answered(call, request, captured, st.router.best_of_n.generate(call, gen, captured))
    body = {
        "id": call.interaction_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model_name,
        "choices": [
            {"index": c.index, "message": _message(c), "finish_reason": c.finish_reason, "logprobs": None}
            for c in completion.choices
        ],
        "usage": usage(completion),
        "system_fingerprint": call.route.version_id or "base",
    }
    return JSONResponse(body, headers=call.headers)


def _with_version_prompt(messages: list[dict[str, Any]], version: Any) -> list[dict[str, Any]]:
    """`with_system_prompt` on the first message, keeping the tool fields of every message."""
    if version is None or not version.system_prompt:
        return messages
    head = with_system_prompt(messages[:1], version.system_prompt)
    return [*head[:-1], {**messages[0], **head[-1]}, *messages[1:]]


def _message(choice: Choice) -> dict[str, Any]:
    """The assistant's message; OpenAI sends `content: null` beside tool calls that come without text."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.text}
    if choice.tool_calls or choice.function_call:
        message["content"] = choice.text or None
        if choice.tool_calls:
            message["tool_calls"] = choice.tool_calls
        else:
            message["function_call"] = choice.function_call
    return message


def _chunk(
    call: Call,
    delta: dict[str, Any] | str = "",
    finish: Choice | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk`: a text delta, the end (with any tool calls, whole), or the usage."""
    if isinstance(delta, str):
        delta = {"content": delta} if delta else {}
    if finish is not None and finish.tool_calls:
        delta = {"tool_calls": [{"index": i, **c} for i, c in enumerate(finish.tool_calls)]}
    reason = finish.finish_reason if finish is not None else None
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
    return {
        "id": call.interaction_id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model_name,
        "choices": choices,
        **({"usage": usage} if usage else {}),
    }


def _response_format(req: ChatRequest) -> dict[str, Any] | None:
    """The client's JSON mode as OpenAI spells it; None for plain text."""
    if req.response_format is None or req.response_format.type == "text":
        return None
    return req.response_format.model_dump(by_alias=True, exclude_none=True)


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    """What this key may name in `model`: the alias `tuneloop`, `production` (never an experiment's arm),
    the base model, and its own versions."""
    return {"object": "list", "data": await _models(request)}


@router.get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> dict:
    """One of `list_models`' entries (the OpenAI SDK's `models.retrieve`); 404 for any other id."""
    found = next((m for m in await _models(request) if m["id"] == model_id), None)
    if found is None:
        raise NotFound(f"{not_found('model', model_id)}; GET /v1/models lists them", param="model")
    return found


async def _models(request: Request) -> list[dict[str, Any]]:
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)
    versions = await st.calls(Registry(tenant).list, "adapter")
    owner = tenant.tenant.name
    servable = (v.id for v in versions if v.state not in ("blocked", "rolled_back"))
    ids = dict.fromkeys(["tuneloop", PRODUCTION, st.backend.model_id, *servable])  # ordered, no repeats
    return [{"id": i, "object": "model", "created": 0, "owned_by": owner} for i in ids]
