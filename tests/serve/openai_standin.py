"""An OpenAI-compatible upstream stand-in (chat with tools and JSON schemas, legacy completions, streaming).

It answers deterministically from what it is sent and records every body, so tests can check what the gateway
forwarded. Served with `tests.live.serve_app`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.live import live_server, serve_app
from tuneloop import Settings
from tuneloop.store.repository import Store

MODEL = "standin-model"
TEXT = "Lisbon in spring."
USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def example(schema: dict[str, Any]) -> Any:
    """A value that fits a (simple) JSON schema: what a constrained decoder would produce."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {k: example(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}))]
    return {"integer": 3, "number": 1.5, "boolean": True}.get(kind, "Lisbon")


def _tool_calls(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Call the named tool, else the first one, unless tool_choice says none."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    spec = next((t["function"] for t in tools if t["function"]["name"] == named), tools[0]["function"])
    arguments = json.dumps(example(spec.get("parameters") or {}))
    return [{"id": "call_1", "type": "function", "function": {"name": spec["name"], "arguments": arguments}}]


def _function_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The legacy `functions` answer: call the first function unless function_call says none."""
    functions = body.get("functions") or []
    if not functions or body.get("function_call") == "none":
        return None
    spec = functions[0]
    return {"name": spec["name"], "arguments": json.dumps(example(spec.get("parameters") or {}))}


def _answer(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
    calls = _tool_calls(body)
    if calls:
        return None, calls
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(example(fmt["json_schema"].get("schema") or {})), None
    if fmt.get("type") == "json_object":
        return json.dumps({"city": "Lisbon"}), None
    said = (body.get("messages") or [{}])[-1].get("content")
    if isinstance(said, str) and said.startswith("say: "):  # an answer a test chooses, backslash-escaped
        return said.removeprefix("say: ").encode().decode("unicode_escape"), None
    return TEXT, None


def _sse(events: list[dict[str, Any]]) -> StreamingResponse:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(lines), media_type="text/event-stream")


def standin(received: list[dict[str, Any]]) -> FastAPI:
    """The stand-in app; every request body it gets is appended to `received`."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        received.append(body)
        content, calls = _answer(body)
        reason = "tool_calls" if calls else "stop"
        if body.get("stream"):
            head = {"id": "up", "object": "chat.completion.chunk", "model": MODEL}
            if calls:  # split name and arguments over chunks, as real servers do
                call = calls[0]
                args = call["function"]["arguments"]
                first = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
                deltas = [
                    {"tool_calls": [first]},
                    {"tool_calls": [{"index": 0, "function": {"arguments": args}}]},
                ]
            else:
                deltas = [{"content": content[:6]}, {"content": content[6:]}]
            events = [{**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
            events.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
            events.append({**head, "choices": [], "usage": USAGE})
            return _sse(events)
        message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
        if function_call := _function_call(body):
            message = {"role": "assistant", "content": None, "function_call": function_call}
            reason = "function_call"
        choices = [{"index": i, "message": message, "finish_reason": reason} for i in range(body.get("n", 1))]
        return {"id": "up", "object": "chat.completion", "model": MODEL, "choices": choices, "usage": USAGE}

    @app.post("/v1/completions")
    async def complete(request: Request) -> Any:
        body = await request.json()
        received.append(body)
        if body.get("stream"):
            head = {"id": "up", "object": "text_completion", "model": MODEL}
            pieces = [TEXT[:6], TEXT[6:]]
            events = [{**head, "choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in pieces]
            events.append({**head, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
            events.append({**head, "choices": [], "usage": USAGE})
            return _sse(events)
        choices = [{"index": i, "text": TEXT, "finish_reason": "stop"} for i in range(body.get("n", 1))]
        return {"id": "up", "object": "text_completion", "model": MODEL, "choices": choices, "usage": USAGE}

    return app


@contextmanager
def gateway_over_standin(home: Path) -> Iterator[dict[str, Any]]:
    """A live tuneloop gateway in `home` before a stand-in upstream; tenant `a` (redaction off). Yields its
    url, key and the bodies the stand-in received, and the key of tenant `r`, which redacts."""
    received: list[dict[str, Any]] = []
    with serve_app(standin(received)) as up:
        settings = Settings(home=home, backend="openai", upstream_url=f"{up}/v1")
        store = Store(settings.database_url)
        _, key = store.create_tenant("a", redaction="off")
        _, redacting = store.create_tenant("r", redaction="redact")
        with live_server(settings) as url:
            yield {"url": url, "key": key, "received": received, "redacting_key": redacting}
        store.close()


def stored_interaction(gw: dict[str, Any], iid: str) -> dict[str, Any]:
    """The interaction `iid` as the gateway of `gateway_over_standin` captured it."""
    auth = {"Authorization": f"Bearer {gw['key']}"}
    response = httpx.get(f"{gw['url']}/v1/interactions/{iid}", headers=auth)
    assert response.status_code == 200, response.text
    return response.json()
