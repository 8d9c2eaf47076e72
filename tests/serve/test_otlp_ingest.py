"""OTLP ingestion: an app instrumented with the real OpenTelemetry SDK exports GenAI spans to a live server
with the real OTLP/HTTP exporter, and each LLM span becomes an interaction of the key's tenant."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.live import live_server
from tuneloop import Settings
from tuneloop.serve.otlp_routes import MAX_SPANS
from tuneloop.store.repository import Store

EMAIL = "jane.doe@example.com"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, backend="none", max_body_bytes=200_000, max_text_chars=5000)
    store = Store(settings.database_url)
    _, key_a = store.create_tenant("a")
    _, key_b = store.create_tenant("b")
    store.close()
    with live_server(settings) as url:
        yield url, key_a, key_b, home / "tuneloop.db"


def _exporter(url: str, key: str) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {key}"})


def _run_app(exporter: OTLPSpanExporter) -> tuple[TracerProvider, list[ReadableSpan]]:
    """The "app": a traced request with one chat call (OpenLLMetry's attributes) and a database span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test-app")
    with tracer.start_as_current_span("handle_request"):
        with tracer.start_as_current_span("db.query"):
            pass
        with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.prompt.0.role": "system",
                    "gen_ai.prompt.0.content": "You are a support agent.",
                    "gen_ai.prompt.1.role": "user",
                    "gen_ai.prompt.1.content": f"Reset my password, I am {EMAIL}",
                    "gen_ai.completion.0.role": "assistant",
                    "gen_ai.completion.0.content": "Open Settings, then Security.",
                    "gen_ai.usage.input_tokens": 21,
                    "gen_ai.usage.output_tokens": 7,
                    "user.id": EMAIL,
                }
            )
            time.sleep(0.02)
    provider.force_flush()
    return provider, list(memory.get_finished_spans())


def _llm_span(spans: list[ReadableSpan]) -> ReadableSpan:
    return next(s for s in spans if s.name == "openai.chat")


def _interaction_id(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}"


def _get(url: str, key: str, iid: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/interactions/{iid}", headers={"Authorization": f"Bearer {key}"})


def test_instrumented_app_spans_become_redacted_interactions(api: tuple) -> None:
    url, key_a, _, db_file = api
    _, spans = _run_app(_exporter(url, key_a))
    span = _llm_span(spans)
    resp = _get(url, key_a, _interaction_id(span))
    assert resp.status_code == 200, resp.text
    stored = resp.json()
    assert [m["role"] for m in stored["messages"]] == ["system", "user"]
    assert stored["messages"][0]["content"] == "You are a support agent."
    assert "<EMAIL_ADDRESS>" in stored["messages"][1]["content"]
    assert stored["response"] == "Open Settings, then Security."
    assert stored["model"] == "gpt-4o-mini-2024-07-18"
    assert (stored["prompt_tokens"], stored["completion_tokens"]) == (21, 7)
    assert stored["latency_ms"] == pytest.approx((span.end_time - span.start_time) / 1e6)
    assert stored["latency_ms"] >= 20
    assert stored["metadata"]["service.name"] == "support-bot"
    # The trace is the session, stored as a keyed hash like every end-user identifier.
    assert stored["session"] and stored["session"] != f"{span.get_span_context().trace_id:032x}"
    assert stored["user"].startswith("anon-")
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("tuneloop.db*"))
    assert EMAIL.encode() not in raw


def test_export_lands_in_either_store(tmp_path: Path, db_url: str) -> None:
    settings = Settings(home=tmp_path / "home", db_url=db_url, backend="none")
    store = Store(settings.database_url)
    _, key = store.create_tenant("pg-or-sqlite")
    store.close()
    with live_server(settings) as url:
        exporter = _exporter(url, key)
        _, spans = _run_app(exporter)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        stored = _get(url, key, _interaction_id(_llm_span(spans))).json()
    assert stored["response"] == "Open Settings, then Security."
    assert "<EMAIL_ADDRESS>" in stored["messages"][1]["content"]


def test_reexporting_the_same_spans_is_a_duplicate(api: tuple) -> None:
    url, key_a, *_ = api
    exporter = _exporter(url, key_a)
    _, spans = _run_app(exporter)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    request = _protobuf_of(spans)
    resp = httpx.post(f"{url}/v1/traces", content=request, headers={**PROTOBUF, **_auth(key_a)})
    assert resp.status_code == 200
    assert resp.headers["x-tuneloop-spans-duplicate"] == "1"
    assert resp.headers["x-tuneloop-spans-accepted"] == "0"
    assert resp.headers["x-tuneloop-spans-ignored"] == "2"
    assert not ExportTraceServiceResponse.FromString(resp.content).HasField("partial_success")


def test_a_span_exported_again_with_other_content_is_named_by_its_own_ids(api: tuple) -> None:
    url, key_a, *_ = api
    _, spans = _run_app(_exporter(url, key_a))
    llm = _llm_span(spans)
    first = httpx.post(f"{url}/v1/traces", content=_protobuf_of([llm]), headers={**PROTOBUF, **_auth(key_a)})
    changed = ExportTraceServiceRequest.FromString(_protobuf_of([llm]))
    attribute = next(
        a
        for a in changed.resource_spans[0].scope_spans[0].spans[0].attributes
        if a.key == "gen_ai.prompt.1.content"
    )
    attribute.value.string_value = "Reset my password, please."

    again = httpx.post(
        f"{url}/v1/traces", content=changed.SerializeToString(), headers={**PROTOBUF, **_auth(key_a)}
    )

    assert first.status_code == again.status_code == 200
    message = ExportTraceServiceResponse.FromString(again.content).partial_success.error_message
    assert "different payload" in message and _interaction_id(llm) in message and "ref-" not in message


def test_another_tenant_sees_nothing(api: tuple) -> None:
    url, key_a, key_b, _ = api
    _, spans = _run_app(_exporter(url, key_a))
    assert _get(url, key_b, _interaction_id(_llm_span(spans))).status_code == 404


def test_exporter_configured_by_environment_headers(api: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    url, key_a, *_ = api
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{key_a}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    _, spans = _run_app(OTLPSpanExporter(endpoint=f"{url}/v1/traces"))
    assert _get(url, key_a, _interaction_id(_llm_span(spans))).status_code == 200


def test_unrecordable_llm_spans_are_reported_as_partial_success(api: tuple) -> None:
    url, key_a, *_ = api
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("app").start_as_current_span("chat") as span:
        span.set_attributes({"gen_ai.system": "openai", "gen_ai.prompt.0.content": "hi"})  # no completion
    resp = httpx.post(
        f"{url}/v1/traces",
        content=_protobuf_of(memory.get_finished_spans()),
        headers={**PROTOBUF, **_auth(key_a)},
    )
    assert resp.status_code == 200
    partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
    assert partial.rejected_spans == 1
    assert "no completion" in partial.error_message


def test_nul_in_a_protobuf_span_is_rejected_not_stored(api: tuple) -> None:
    url, key_a, *_ = api
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("app").start_as_current_span("chat") as span:
        span.set_attributes(
            {
                "gen_ai.system": "openai",
                "gen_ai.prompt.0.content": "a\x00b",
                "gen_ai.completion.0.content": "ok",
            }
        )
    resp = httpx.post(
        f"{url}/v1/traces",
        content=_protobuf_of(memory.get_finished_spans()),
        headers={**PROTOBUF, **_auth(key_a)},
    )
    assert resp.status_code == 200
    assert "NUL" in ExportTraceServiceResponse.FromString(resp.content).partial_success.error_message


def test_openinference_llm_span_is_recorded(api: tuple) -> None:
    url, key_a, *_ = api
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("app").start_as_current_span("ChatOpenAI") as span:
        span.set_attributes(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o",
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "Where is my order?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "It ships tomorrow.",
                "llm.token_count.prompt": 5,
                "session.id": "chat-42",
            }
        )
    assert _exporter(url, key_a).export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    stored = _get(url, key_a, _interaction_id(memory.get_finished_spans()[0])).json()
    assert stored["messages"] == [{"role": "user", "content": "Where is my order?"}]
    assert (stored["response"], stored["model"], stored["prompt_tokens"]) == (
        "It ships tomorrow.",
        "gpt-4o",
        5,
    )


def test_spans_over_the_text_limit_are_rejected_and_the_rest_recorded(api: tuple) -> None:
    url, key_a, *_ = api
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    for content in ("x" * 6000, "short question"):
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.system": "openai",
                    "gen_ai.prompt.0.content": content,
                    "gen_ai.completion.0.content": "ok",
                }
            )
    resp = httpx.post(
        f"{url}/v1/traces",
        content=_protobuf_of(memory.get_finished_spans()),
        headers={**PROTOBUF, **_auth(key_a)},
    )
    assert resp.status_code == 200
    partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
    assert partial.rejected_spans == 1
    assert "longer than 5000 characters" in partial.error_message
    assert resp.headers["x-tuneloop-spans-accepted"] == "1"


def test_exports_without_llm_spans_are_counted_as_ignored(api: tuple) -> None:
    url, key_a, *_ = api
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("app").start_as_current_span("GET /orders"):
        pass
    with provider.get_tracer("app").start_as_current_span("embeddings") as span:
        span.set_attributes({"gen_ai.system": "openai", "gen_ai.operation.name": "embeddings"})
    resp = httpx.post(
        f"{url}/v1/traces",
        content=_protobuf_of(memory.get_finished_spans()),
        headers={**PROTOBUF, **_auth(key_a)},
    )
    assert resp.status_code == 200
    assert resp.headers["x-tuneloop-spans-ignored"] == "2"
    assert resp.headers["x-tuneloop-spans-accepted"] == "0"


def test_json_export_with_new_message_attributes(api: tuple) -> None:
    url, key_a, *_ = api
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    messages = [{"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}]
    output = [{"role": "assistant", "parts": [{"type": "text", "content": "4"}], "finish_reason": "stop"}]
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": json.dumps(messages),
        "gen_ai.output.messages": json.dumps(output),
    }
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000250000000",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    resp = httpx.post(f"{url}/v1/traces", json=body, headers=_auth(key_a))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    stored = _get(url, key_a, f"otel-{trace_id}-{span_id}").json()
    assert stored["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert (stored["response"], stored["model"], stored["latency_ms"]) == ("4", "gpt-4o", 250.0)
    assert stored["created_at"].startswith("2023-11-14T22:13:20")


def test_long_names_and_bytes_values_are_redacted_whole_not_cut_or_stored_as_hex(api: tuple) -> None:
    url, key_a, *_ = api
    trace_id, span_id = "7c8efff798038103d269b633813fc60c", "fee19b7ec3c1b174"
    padding = "x" * 240
    prompt = f"my card 4111 1111 1111 1111, mail {EMAIL}".encode()
    attrs = [
        {"key": "gen_ai.system", "value": {"stringValue": f"{padding} card 4111 1111 1111 1111"}},
        {"key": "gen_ai.prompt.0.content", "value": {"bytesValue": base64.b64encode(prompt).decode()}},
        {"key": "gen_ai.completion.0.content", "value": {"stringValue": "ok"}},
    ]
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": f"{padding} mail {EMAIL}",
        "attributes": attrs,
        "startTimeUnixNano": "1700000000000000000",
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": f"{padding} {EMAIL}"}}]}
    body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    resp = httpx.post(f"{url}/v1/traces", json=body, headers=_auth(key_a))
    assert resp.status_code == 200 and resp.headers["x-tuneloop-spans-accepted"] == "1", resp.text
    stored = _get(url, key_a, f"otel-{trace_id}-{span_id}").json()
    text = json.dumps(stored)
    assert stored["messages"][0]["content"] == "my card <CREDIT_CARD>, mail <EMAIL_ADDRESS>"
    for part in ("jane.doe", "example", "4111", prompt.hex()[:16]):
        assert part not in text


def test_odd_attribute_values_are_refused_per_span_not_a_500_or_an_unreadable_row(api: tuple) -> None:
    url, key_a, *_ = api
    spans = [
        {  # an operation name sent as an array: still an LLM span, recorded
            "traceId": "6b8efff798038103d269b633813fc60c",
            "spanId": "fee19b7ec3c1b174",
            "attributes": [
                {
                    "key": "gen_ai.operation.name",
                    "value": {"arrayValue": {"values": [{"stringValue": "chat"}]}},
                },
                {"key": "gen_ai.prompt.0.content", "value": {"stringValue": "hi"}},
                {"key": "gen_ai.completion.0.content", "value": {"stringValue": "hello"}},
            ],
        },
        {  # a lone surrogate escaped inside a JSON attribute: valid OTLP, but no store can encode it
            "traceId": "7b8efff798038103d269b633813fc60c",
            "spanId": "aee19b7ec3c1b174",
            "attributes": [
                {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                {
                    "key": "gen_ai.input.messages",
                    "value": {"stringValue": '[{"role": "user", "content": "a\\ud800"}]'},
                },
                {"key": "gen_ai.completion.0.content", "value": {"stringValue": "ok"}},
            ],
        },
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    resp = httpx.post(f"{url}/v1/traces", json=body, headers=_auth(key_a))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tuneloop-spans-accepted"] == "1"
    assert "lone UTF-16 surrogate" in resp.json()["partialSuccess"]["errorMessage"]
    assert _get(url, key_a, f"otel-{spans[0]['traceId']}-{spans[0]['spanId']}").status_code == 200
    assert _get(url, key_a, f"otel-{spans[1]['traceId']}-{spans[1]['spanId']}").status_code == 404


def test_a_span_with_all_zero_ids_is_refused_as_the_spec_calls_them_invalid(api: tuple) -> None:
    url, key_a, *_ = api
    attrs = [
        {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
        {"key": "gen_ai.prompt.0.content", "value": {"stringValue": "hi"}},
        {"key": "gen_ai.completion.0.content", "value": {"stringValue": "hello"}},
    ]
    spans = [
        {"traceId": "0" * 32, "spanId": "fee19b7ec3c1b175", "attributes": attrs},
        {"traceId": "6b8efff798038103d269b633813fc60d", "spanId": "0" * 16, "attributes": attrs},
    ]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}

    resp = httpx.post(f"{url}/v1/traces", json=body, headers=_auth(key_a))

    assert resp.status_code == 200 and resp.headers["x-tuneloop-spans-accepted"] == "0", resp.text
    assert resp.json()["partialSuccess"]["rejectedSpans"] == "2"
    assert "not all zero" in resp.json()["partialSuccess"]["errorMessage"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (PROTOBUF, b"\xff\xff\xff not protobuf", 400),
        ({"Content-Type": "text/plain"}, b"hello", 415),
        ({"Content-Type": "application/json"}, b"{not json", 400),
        ({"Content-Type": "application/json"}, b'{"resourceSpans": "x"}', 400),
        ({"Content-Type": "application/json"}, b'{"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}', 400),
        (
            {"Content-Type": "application/json"},
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            400,
        ),
        (
            {"Content-Type": "application/json"},
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            400,
        ),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, b"not gzip", 400),
        ({**PROTOBUF, "Content-Encoding": "br"}, b"", 415),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, gzip.compress(b"\x00" * 300_000), 413),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, gzip.compress(b"", mtime=0) * 65, 400),
        (PROTOBUF, b"\x0a" * 300_000, 413),
    ],
)
def test_bad_bodies_get_4xx(api: tuple, headers: dict, body: bytes, status: int) -> None:
    url, key_a, *_ = api
    resp = httpx.post(f"{url}/v1/traces", content=body, headers={**headers, **_auth(key_a)})
    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert len(resp.text) < 800, "the error echoes too much of the input"


def _empty_spans(n: int) -> bytes:
    export = ExportTraceServiceRequest()
    scope = export.resource_spans.add().scope_spans.add()
    for _ in range(n):
        scope.spans.add()
    return export.SerializeToString()


@pytest.mark.parametrize("json_body", [False, True])
def test_an_export_of_more_spans_than_exporters_send_is_a_413(api: tuple, json_body: bool) -> None:
    # A kilobyte of gzip can hold half a million empty spans, each of them mapped in turn.
    url, key_a, *_ = api
    n = MAX_SPANS + 1
    if json_body:
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{}] * n}]}]}).encode()
        headers = {"Content-Type": "application/json"}
    else:
        body, headers = gzip.compress(_empty_spans(n)), {**PROTOBUF, "Content-Encoding": "gzip"}
    resp = httpx.post(f"{url}/v1/traces", content=body, headers={**headers, **_auth(key_a)})
    assert resp.status_code == 413, resp.text
    assert f"the limit is {MAX_SPANS}" in resp.json()["error"]["message"]


def test_missing_key_is_401(api: tuple) -> None:
    resp = httpx.post(f"{api[0]}/v1/traces", content=b"", headers=PROTOBUF)
    assert resp.status_code == 401


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _protobuf_of(spans: list[ReadableSpan] | tuple[ReadableSpan, ...]) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request: ExportTraceServiceRequest = encode_spans(spans)
    return request.SerializeToString()


def _chat_spans(*prompts: str) -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    for prompt in prompts:
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.system": "openai",
                    "gen_ai.prompt.0.content": prompt,
                    "gen_ai.completion.0.content": "ok",
                }
            )
    return memory.get_finished_spans()


def test_a_gzip_body_of_several_members_records_the_spans_of_every_member(api: tuple) -> None:
    # RFC 1952: a gzip body may be several members, decompressed one after another. Protobuf messages
    # concatenate into one, so each member here holds one span; none may be dropped unseen.
    url, key_a, *_ = api
    spans = _chat_spans("first member", "second member")
    body = b"".join(gzip.compress(_protobuf_of([s])) for s in spans)
    resp = httpx.post(
        f"{url}/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "gzip", **_auth(key_a)}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tuneloop-spans-accepted"] == "2"
    for span in spans:
        assert _get(url, key_a, _interaction_id(span)).status_code == 200


def test_a_gzip_body_of_several_members_is_bounded_by_their_sum(api: tuple) -> None:
    url, key_a, *_ = api
    body = gzip.compress(b"") + gzip.compress(b"\x00" * 150_000) + gzip.compress(b"\x00" * 150_000)
    resp = httpx.post(
        f"{url}/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "gzip", **_auth(key_a)}
    )
    assert resp.status_code == 413, resp.text


def test_spans_with_more_text_to_redact_than_one_request_may_send_get_413(tmp_path: Path) -> None:
    # The capture API refuses a request over TUNELOOP_MAX_REDACT_CHARS; many spans in one export are one
    # request too, so each under the limit must not add up to more analysis than the limit allows.
    settings = Settings(home=tmp_path / "home", backend="none", max_redact_chars=1000)
    store = Store(settings.database_url)
    _, key = store.create_tenant("a")
    store.close()
    spans = _chat_spans("a question of six hundred characters " * 16, "another question " * 36)
    with live_server(settings) as url:
        resp = httpx.post(f"{url}/v1/traces", content=_protobuf_of(spans), headers={**PROTOBUF, **_auth(key)})
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["code"] == "redaction_budget"
        assert all(_get(url, key, _interaction_id(s)).status_code == 404 for s in spans)
        one = httpx.post(
            f"{url}/v1/traces", content=_protobuf_of(spans[:1]), headers={**PROTOBUF, **_auth(key)}
        )
        assert one.headers["x-tuneloop-spans-accepted"] == "1"


def test_gzipped_otlp_json_is_read_as_the_collector_sends_it(api: tuple) -> None:
    from google.protobuf import json_format

    url, key_a, *_ = api
    spans = _chat_spans("json through gzip")
    export = json_format.MessageToDict(ExportTraceServiceRequest.FromString(_protobuf_of(spans)))
    for span in export["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP/JSON writes ids in hex
        for field in ("traceId", "spanId"):
            span[field] = base64.b64decode(span[field]).hex()
    body = gzip.compress(json.dumps(export).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **_auth(key_a)}
    resp = httpx.post(f"{url}/v1/traces", content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert _get(url, key_a, _interaction_id(spans[0])).status_code == 200
    bomb = httpx.post(f"{url}/v1/traces", content=gzip.compress(b" " * 300_000), headers=headers)
    assert bomb.status_code == 413
