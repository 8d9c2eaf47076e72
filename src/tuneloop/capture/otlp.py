"""OpenTelemetry GenAI spans as interactions: which spans are LLM calls, and what each one said.

Reads the attribute shapes instrumentations emit today: the GenAI semantic conventions, indexed
(`gen_ai.prompt.N.role/content`, OpenLLMetry) or as JSON (`gen_ai.input.messages`/`gen_ai.output.messages`),
and OpenInference (`llm.input_messages.N.message.role/content`).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tuneloop.capture.events import EPOCH, FUTURE_SLACK, text_problem

# Any of these marks a span as an LLM call; every other span (HTTP, DB, the app's own) is ignored.
LLM_MARKERS = ("gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.operation.name")
OPENINFERENCE_KIND = "openinference.span.kind"
# A longer model name is none the field can hold; cut, it could keep the first part of personal data.
MODEL_CHARS = 256
# Operations that are not a chat/text exchange: their spans carry gen_ai.* but no messages to learn from.
NOT_CHAT = {"embeddings", "execute_tool", "create_agent", "invoke_agent"}
ROLES = {
    "system": "system",
    "developer": "developer",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
}
_INDEX = re.compile(r"[0-9]{1,4}")
_CONTENT_PART = re.compile(r"contents\.(\d{1,4})\.message_content\.text")


class SpanRejected(ValueError):
    """An LLM span that cannot become an interaction; the message says what is missing."""


@dataclass(frozen=True)
class SpanInteraction:
    """One LLM span as the capture API's interaction body plus what the span measured."""

    body: dict[str, Any]
    served: dict[str, Any]


def attributes(pairs: list[KeyValue] | Any) -> dict[str, Any]:
    """OTLP key/value pairs as a plain dict (the last of repeated keys wins, as the SDKs do)."""
    return {kv.key: _value(kv.value) for kv in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        # As text, so that redaction reads it: hex would carry the bytes of an email or a card unread.
        return value.bytes_value.decode("utf-8", errors="replace")
    return getattr(value, kind) if kind else None


def is_llm_span(attrs: dict[str, Any]) -> bool:
    """True for a span that records a chat or text completion."""
    if str(attrs.get(OPENINFERENCE_KIND, "")).upper() == "LLM":
        return True
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, list) and operation:  # sent as an array: its first value names the operation
        operation = operation[0]
    if isinstance(operation, str) and operation in NOT_CHAT:
        return False
    return any(key in attrs for key in LLM_MARKERS)


def span_interaction(span: Span, attrs: dict[str, Any], resource: dict[str, Any]) -> SpanInteraction:
    """The interaction an LLM span (with its `attrs`) records; SpanRejected without prompt or response."""
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    # All-zero ids are invalid by the OTLP spec: every such span would be one interaction.
    if len(trace_id) != 32 or len(span_id) != 16 or not int(trace_id, 16) or not int(span_id, 16):
        raise SpanRejected(
            "span has no valid trace_id (16 bytes, not all zero) and span_id (8 bytes, not all zero)"
        )
    messages = _system_instructions(attrs) + _messages(attrs, "input")
    outputs = [m["content"] for m in _messages(attrs, "output")]
    if not messages:
        raise SpanRejected(f"span {span_id}: no prompt (gen_ai.prompt.N.* or gen_ai.input.messages)")
    if not outputs:
        raise SpanRejected(f"span {span_id}: no completion (gen_ai.completion.N.* or gen_ai.output.messages)")
    model = _first(attrs, "gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
    system = _first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    service = resource.get("service.name")
    # Kept whole: redaction reads them next, and an address or a card cut at a length is no longer
    # recognised while its first part would be stored. The body's own limits bound them.
    metadata = {
        "source": "otlp",
        "span_name": span.name,
        **({"gen_ai.system": str(system)} if system is not None else {}),
        **({"service.name": str(service)} if service is not None else {}),
    }
    body: dict[str, Any] = {
        # The span identifies the call: a re-export of the same span is a duplicate, not a new interaction.
        "id": f"otel-{trace_id}-{span_id}",
        "session": str(_first(attrs, "session.id", "gen_ai.conversation.id") or trace_id)[:256],
        "messages": messages,
        "response": outputs[0],
        "model": None if model is None or len(str(model)) > MODEL_CHARS else str(model),
        "metadata": metadata,
    }
    if len(outputs) > 1:
        body["choices"] = outputs
    user = _first(attrs, "user.id", "enduser.id")
    if user is not None:
        body["user"] = str(user)[:256]
    _refuse_unstorable(body)
    return SpanInteraction(body, _measured(span, attrs))


def _refuse_unstorable(value: Any) -> None:
    # Protobuf strings are valid UTF-8 but may hold NUL, and text decoded from a JSON attribute
    # (`gen_ai.input.messages`) may hold a lone surrogate: stored, either would fail every later read.
    if isinstance(value, str) and (problem := text_problem(value)) is not None:
        raise SpanRejected(f"a prompt, completion or attribute {problem}")
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        _refuse_unstorable(item)


def _measured(span: Span, attrs: dict[str, Any]) -> dict[str, Any]:
    """Start time, latency and token usage, when the span carries them."""
    served: dict[str, Any] = {}
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    # A clock out of range (as the capture API bounds `created_at`) keeps the arrival time instead.
    with contextlib.suppress(OverflowError, ValueError, OSError):
        began = datetime.fromtimestamp(start / 1e9, UTC)
        if start and EPOCH <= began <= datetime.now(UTC) + FUTURE_SLACK:
            served["created_at"] = began
    if start and end >= start:
        served["latency_ms"] = (end - start) / 1e6
    tokens = {
        "prompt_tokens": _first(
            attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
        ),
        "completion_tokens": _first(
            attrs,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ),
    }
    served.update({k: v for k, v in tokens.items() if type(v) is int and 0 <= v < 2**31})
    return served


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    return next((attrs[k] for k in keys if attrs.get(k) not in (None, "")), None)


def _messages(attrs: dict[str, Any], side: str) -> list[dict[str, str]]:
    """The prompt (`input`) or completion (`output`) messages, from whichever convention the span uses."""
    as_json = attrs.get(f"gen_ai.{side}.messages")
    if as_json is not None:
        return [
            _message(m, f"gen_ai.{side}.messages") for m in _json_list(as_json, f"gen_ai.{side}.messages")
        ]
    legacy = "gen_ai.prompt" if side == "input" else "gen_ai.completion"
    found = _indexed(attrs, legacy, "") or _indexed(attrs, f"llm.{side}_messages", "message.")
    default_role = "user" if side == "input" else "assistant"
    return [
        {
            "role": _role(fields.get("role") or default_role, where),
            "content": _text(fields.get("content"), where),
        }
        for where, fields in found
    ]


def _indexed(attrs: dict[str, Any], prefix: str, inner: str) -> list[tuple[str, dict[str, Any]]]:
    """`prefix.N.{inner}field` attributes grouped by N, in index order."""
    groups: dict[int, dict[str, Any]] = {}
    head = f"{prefix}."
    # Split by hand, not by a regex over the whole key: a sender chooses the keys, and a pattern that
    # searches for where the prefix ends backtracked for minutes on a long key of "a.1." repeats.
    for key, value in attrs.items():
        index, dot, field = key.removeprefix(head).partition(".")
        if key.startswith(head) and dot and field.startswith(inner) and _INDEX.fullmatch(index):
            groups.setdefault(int(index), {})[field.removeprefix(inner)] = value
    found = [(f"{prefix}.{i}", _with_content(groups[i])) for i in sorted(groups)]
    return [(where, fields) for where, fields in found if "content" in fields]


def _with_content(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with `content` made from OpenInference's list content (`contents.K.message_content.text`,
    text parts in K order) when the message has no plain `content`."""
    if "content" in fields:
        return fields
    parts = sorted(
        (int(found[1]), value)
        for key, value in fields.items()
        if (found := _CONTENT_PART.fullmatch(key))
        and fields.get(f"contents.{found[1]}.message_content.type", "text") == "text"
    )
    return {**fields, "content": "".join(str(v) for _, v in parts)} if parts else fields


def _system_instructions(attrs: dict[str, Any]) -> list[dict[str, str]]:
    raw = attrs.get("gen_ai.system_instructions")
    if raw is None:
        return []
    parts = _json_list(raw, "gen_ai.system_instructions")
    return [{"role": "system", "content": _parts_text(parts, "gen_ai.system_instructions")}]


def _json_list(raw: Any, where: str) -> list[Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # nesting deep enough to exhaust the parser's stack
            raise SpanRejected(f"{where}: not valid JSON, or nested too deeply") from None
    if not isinstance(raw, list):
        raise SpanRejected(f"{where}: expected a JSON array of messages")
    return raw


def _message(raw: Any, where: str) -> dict[str, str]:
    """One `{"role", "parts": [...]}` message (or the older `{"role", "content"}`) of the JSON convention."""
    if not isinstance(raw, dict):
        raise SpanRejected(f"{where}: each message must be an object with a role")
    content = raw["content"] if "content" in raw else _parts_text(raw.get("parts"), where)
    return {"role": _role(raw.get("role"), where), "content": _text(content, where)}


def _parts_text(parts: Any, where: str) -> str:
    """The text of a message's parts; tool calls and media carry no text to train on and are skipped."""
    if not isinstance(parts, list):
        raise SpanRejected(f"{where}: a message needs `parts` (a list) or `content`")
    texts = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type", "text") == "text"]
    return "".join(_text(t, where) for t in texts)


def _role(raw: Any, where: str) -> str:
    role = ROLES.get(str(raw).lower())
    if role is None:
        # Not repeated: partial_success reaches the exporter's logs, and a role can hold anything.
        raise SpanRejected(f"{where}: the role is not one of {sorted(set(ROLES))}")
    return role


def _text(raw: Any, where: str) -> str:
    if isinstance(raw, str):
        return raw
    if raw is None:
        raise SpanRejected(f"{where}: message has no content")
    # Structured content (a list of parts as some instrumentations record it) is kept as its JSON.
    return json.dumps(raw, ensure_ascii=False)
