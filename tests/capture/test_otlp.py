"""Span → interaction mapping for each GenAI attribute convention, on real OTLP protobuf spans."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tuneloop.capture.otlp import SpanRejected, attributes, is_llm_span, span_interaction

TRACE, SPAN = bytes(range(16)), bytes(range(8))


def _span(attrs: dict[str, Any], start: int = 1_700_000_000_000_000_000, end: int = 0) -> Span:
    pairs = [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]
    return Span(
        trace_id=TRACE,
        span_id=SPAN,
        name="chat",
        attributes=pairs,
        start_time_unix_nano=start,
        end_time_unix_nano=end or start + 1_500_000,
    )


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=value)


def _mapped(attrs: dict[str, Any], **kw: Any) -> Any:
    span = _span(attrs, **kw)
    return span_interaction(span, attributes(span.attributes), {})


def test_indexed_prompt_and_completions_map_roles_and_choices() -> None:
    mapped = _mapped(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.prompt.0.role": "human",
            "gen_ai.prompt.0.content": "hi",
            "gen_ai.completion.0.content": "hello",
            "gen_ai.completion.1.content": "hey",
            "gen_ai.usage.input_tokens": 3,
        }
    )
    assert mapped.body["messages"] == [{"role": "user", "content": "hi"}]
    assert (mapped.body["response"], mapped.body["choices"]) == ("hello", ["hello", "hey"])
    assert mapped.body["id"] == f"otel-{TRACE.hex()}-{SPAN.hex()}"
    assert mapped.body["session"] == TRACE.hex()
    assert mapped.served["latency_ms"] == 1.5
    assert mapped.served["prompt_tokens"] == 3


def test_openinference_list_content_joins_its_text_parts() -> None:
    mapped = _mapped(
        {
            "openinference.span.kind": "LLM",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.contents.0.message_content.type": "text",
            "llm.input_messages.0.message.contents.0.message_content.text": "What is ",
            "llm.input_messages.0.message.contents.1.message_content.type": "image",
            "llm.input_messages.0.message.contents.1.message_content.image.image.url": "https://x/y.png",
            "llm.input_messages.0.message.contents.2.message_content.text": "in the picture?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "A cat.",
        }
    )
    assert mapped.body["messages"] == [{"role": "user", "content": "What is in the picture?"}]
    assert mapped.body["response"] == "A cat."


def test_json_messages_join_text_parts_and_prepend_system_instructions() -> None:
    parts = [
        {"type": "text", "content": "Hi "},
        {"type": "tool_call", "name": "f"},
        {"type": "text", "content": "there"},
    ]
    mapped = _mapped(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": parts}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "Hello."}]),
            "user.id": "u-7",
        }
    )
    assert mapped.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    assert (mapped.body["response"], mapped.body["user"]) == ("Hello.", "u-7")


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"gen_ai.system": "openai"}, "no prompt"),
        ({"gen_ai.system": "openai", "gen_ai.prompt.0.content": "q"}, "no completion"),
        ({"gen_ai.system": "openai", "gen_ai.input.messages": "{oops"}, "not valid JSON"),
        ({"gen_ai.system": "openai", "gen_ai.input.messages": '{"role": "user"}'}, "JSON array"),
        ({"gen_ai.system": "openai", "gen_ai.input.messages": "[" * 5000 + "]" * 5000}, "nested too deeply"),
        (
            {"gen_ai.system": "x", "gen_ai.prompt.0.role": "wizard", "gen_ai.prompt.0.content": "q"},
            "the role is not one of",
        ),
        (
            {
                "gen_ai.system": "x",
                "gen_ai.input.messages": '[{"role": "user", "content": "a\\ud800"}]',
                "gen_ai.completion.0.content": "a",
            },
            "lone UTF-16 surrogate",
        ),
    ],
)
def test_spans_missing_what_an_interaction_needs_are_rejected(attrs: dict, reason: str) -> None:
    with pytest.raises(SpanRejected, match=reason):
        _mapped(attrs)


def test_only_chat_and_text_spans_count_as_llm_spans() -> None:
    assert is_llm_span({"gen_ai.system": "openai"})
    assert is_llm_span({"openinference.span.kind": "llm"})
    assert not is_llm_span({"gen_ai.system": "openai", "gen_ai.operation.name": "embeddings"})
    assert not is_llm_span({"http.method": "GET"})


def test_an_operation_name_sent_as_an_array_or_list_is_read_not_a_crash() -> None:
    chat = AnyValue(string_value="chat")
    for odd in (
        AnyValue(array_value=ArrayValue(values=[chat])),
        AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="name", value=chat)])),
    ):
        pairs = [KeyValue(key="gen_ai.system", value=chat), KeyValue(key="gen_ai.operation.name", value=odd)]
        assert is_llm_span(attributes(pairs))


def test_a_start_time_out_of_range_keeps_the_arrival_time() -> None:
    far_future = 4_000_000_000 * 10**9  # year 2096
    mapped = _mapped(
        {"gen_ai.system": "o", "gen_ai.prompt.0.content": "q", "gen_ai.completion.0.content": "a"},
        start=far_future,
    )
    assert "created_at" not in mapped.served
    assert mapped.served["latency_ms"] == 1.5


def test_a_long_key_of_index_like_parts_is_read_in_one_pass_not_backtracked() -> None:
    """A sender chooses attribute keys: one of 256 KB of "a.1." repeats took a pattern that searched for
    where the prefix ends minutes (holding the GIL, so every tenant's requests waited); now it is ignored."""
    import time

    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.prompt.0.content": "hi",
        "gen_ai.completion.0.content": "hello",
        "a.1." * 65_536 + "\nz": "x",
        "gen_ai.prompt." + "1." * 65_536: "y",
    }
    started = time.perf_counter()
    mapped = _mapped(attrs)
    assert time.perf_counter() - started < 10  # the old pattern: about 3 minutes
    assert mapped.body["messages"] == [{"role": "user", "content": "hi"}]
    assert mapped.body["response"] == "hello"
