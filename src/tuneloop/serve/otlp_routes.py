"""OTLP/HTTP trace ingestion: `POST /v1/traces` records an instrumented app's LLM spans as interactions.

An app already traced with OpenTelemetry (OpenLLMetry, OpenInference, the GenAI conventions) points its
exporter here with its tenant key and needs no code change. Spans go through the capture API's one path,
so redaction, keyed identifiers and idempotency apply.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tuneloop.capture.events import InteractionIn
from tuneloop.capture.otlp import SpanInteraction, SpanRejected, attributes, is_llm_span, span_interaction
from tuneloop.errors import BadRequest, PayloadTooLarge, TuneloopError, UnsupportedMediaType
from tuneloop.serve.http import (
    CAPTURE,
    clip,
    off_loop_if_large,
    parse_json,
    read_body,
    read_json,
    trusted_sender,
    validate,
)
from tuneloop.store.repository import TenantStore

router = APIRouter()
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_ERRORS_SHOWN = 3  # partial_success carries one message: the first few reasons, then a count
MAX_SPANS = 10_000  # per export: a kilobyte of gzip can hold half a million empty spans
# Exporters send one member; each further one copies the rest of the body (zlib's unused_data), so a
# megabyte of empty members held the event loop, every tenant's requests with it, for a second.
MAX_GZIP_MEMBERS = 64


@router.post("/v1/traces")
async def export_traces(request: Request) -> Response:
    """OTLP/HTTP ExportTraceServiceRequest (protobuf or JSON); answers ExportTraceServiceResponse."""
    st = request.app.state.tuneloop
    store = await st.auth.tenant(request, CAPTURE)
    media = _media_type(request)
    body = await _read_request(request, media, st.settings.max_body_bytes)
    # Decoding and mapping walk every span: off the event loop, in this tenant's own threads.
    counts, valid, errors = await st.redactions(store.tenant_id, _spans, st, body)
    await _record(st, store, valid, counts, errors, teaches=trusted_sender(request))
    response = ExportTraceServiceResponse()
    if errors:
        response.partial_success.rejected_spans = len(errors)
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        response.partial_success.error_message = f"{len(errors)} LLM span(s) not recorded: {shown}{more}"
    # OTLP's response has no field for spans accepted or skipped: headers report them for humans and tests.
    headers = {f"X-Tuneloop-Spans-{k.capitalize()}": str(v) for k, v in counts.items()}
    if media == JSON:
        body = json_format.MessageToJson(response, indent=None).encode()
        return Response(body, media_type=JSON, headers=headers)
    return Response(response.SerializeToString(), media_type=PROTOBUF, headers=headers)


def _media_type(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if media == JSON:
        return JSON
    raise UnsupportedMediaType(
        f"send OTLP traces as `Content-Type: {PROTOBUF}` or `{JSON}` (got `{clip(media) or 'none'}`)",
        param="content-type",
    )


async def _read_request(request: Request, media: str, max_bytes: int) -> bytes | Any:
    """The export request's body, bounded: protobuf bytes (decompressed) or parsed OTLP/JSON."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding `{clip(encoding)}` is not supported; send gzip or none",
            param="content-encoding",
        )
    if media == JSON and encoding == "identity":
        return await read_json(request, max_bytes)
    body = await read_body(request, max_bytes)
    if encoding == "gzip":
        body = _gunzip(body, max_bytes)
    if media == JSON:  # gzipped OTLP/JSON, as the Collector's otlphttp exporter sends with `encoding: json`
        request.state.body_bytes = len(body)
        return await off_loop_if_large(request, parse_json, body)
    return body


def _decode(body: bytes | Any) -> ExportTraceServiceRequest:
    """The export request from protobuf bytes or OTLP/JSON, at most MAX_SPANS spans; malformed is a 4xx."""
    if not isinstance(body, bytes):
        return _from_json(body)
    try:
        export = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError) as exc:
        raise BadRequest(f"request body is not an OTLP ExportTraceServiceRequest: {clip(exc)}") from None
    _check_span_count(sum(len(ss.spans) for rs in export.resource_spans for ss in rs.scope_spans))
    return export


def _check_span_count(spans: int) -> None:
    if spans > MAX_SPANS:
        raise PayloadTooLarge(
            f"an export of {spans} spans; the limit is {MAX_SPANS} (exporters send 512 a batch by default)"
        )


def _gunzip(body: bytes, max_bytes: int) -> bytes:
    """Decompress at most `max_bytes`: the limit bounds what is decoded, not just what was sent. A body
    of several gzip members (RFC 1952) is every member's output in turn, bounded by their sum, of at most
    MAX_GZIP_MEMBERS members."""
    out = bytearray()
    rest = body
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error:
            raise BadRequest("request body is not valid gzip") from None
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed request body exceeds the limit of {max_bytes} bytes")
        if not inflater.eof:
            raise BadRequest("request body is truncated gzip")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
    raise BadRequest(f"request body has more than {MAX_GZIP_MEMBERS} gzip members; send one")


def _from_json(data: Any) -> ExportTraceServiceRequest:
    """OTLP/JSON, whose trace and span ids are hex (protobuf's JSON mapping would read them as base64)."""
    if not isinstance(data, dict):
        raise BadRequest("body: expected an OTLP JSON object with `resourceSpans`")
    try:
        every = [
            _list(scope_spans, "spans")
            for resource_spans in _list(data, "resourceSpans", "resource_spans")
            for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans")
        ]
        _check_span_count(sum(map(len, every)))
        for spans in every:
            for span in spans:
                _hex_ids_to_base64(span)
                for link in _list(span, "links"):
                    _hex_ids_to_base64(link)
        # OTLP/JSON receivers must ignore fields they do not know (newer senders add some).
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(f"body is not an OTLP JSON ExportTraceServiceRequest: {clip(exc, 200)}") from None


def _list(parent: Any, *names: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise BadRequest("body: OTLP JSON objects expected where a list item is")
    value = next((parent[n] for n in names if n in parent), [])
    if not isinstance(value, list):
        raise BadRequest(f"{names[0]}: expected a list")
    return value


def _hex_ids_to_base64(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise BadRequest("spans: each span must be a JSON object")
    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise BadRequest(f"{key}: expected a hex id (OTLP/JSON), got {clip(value, 40)!r}") from None


Mapped = list[tuple[InteractionIn, SpanInteraction]]


def _spans(st: Any, body: bytes | Any) -> tuple[dict[str, int], Mapped, list[str]]:
    """The export's LLM spans as validated interactions, the other spans counted as ignored, and one
    reason per span that could not be mapped."""
    export = _decode(body)
    counts = {"accepted": 0, "duplicate": 0, "ignored": 0}
    errors: list[str] = []
    valid: Mapped = []
    for resource_spans in export.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = attributes(span.attributes)
                if not is_llm_span(attrs):
                    counts["ignored"] += 1
                    continue
                try:
                    mapped = span_interaction(span, attrs, resource)
                    where = f"span {mapped.body['id']}: "
                    item = validate(InteractionIn, mapped.body, st.settings.max_text_chars, where=where)
                except (SpanRejected, TuneloopError) as exc:
                    errors.append(clip(str(exc), 300))
                    continue
                valid.append((item, mapped))
    return counts, valid, errors


async def _record(
    st: Any, store: TenantStore, valid: Mapped, counts: dict[str, int], errors: list[str], *, teaches: bool
) -> None:
    """Record each mapped span, counting it by status in `counts`; a span refused adds its reason to
    `errors`. With `teaches`, its system prompts count toward public terms (`Capture.interaction_row`)."""
    if store.tenant.redaction != "off":  # 413 before any span is written
        st.capture.check_interactions_budget([item for item, _ in valid])
    for item, mapped in valid:
        try:
            status = await _record_span(st, store, item, mapped, teaches=teaches)
        except TuneloopError as exc:  # named by the id the span maps to, not its stored (keyed) form
            errors.append(clip(st.capture.as_sent(store, str(exc), [item.id]), 300))
            continue
        counts[status] += 1


async def _record_span(
    st: Any, store: TenantStore, item: InteractionIn, mapped: SpanInteraction, *, teaches: bool
) -> str:
    """Redact off the event loop, write; answers the status."""
    [row] = await st.redactions.many(
        st.capture.interaction_rows, store, [(item, {"teaches": teaches, **mapped.served})]
    )
    result = await st.writes(store.log_interaction, *row)
    return result.status
