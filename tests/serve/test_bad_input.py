"""Bad input, every one a clear 4xx: a table of hostile bodies, headers, paths and methods, all endpoints.

The server is a real uvicorn process over the SQLite and the PostgreSQL store; the gateway forwards to a
canned upstream, so valid chat requests complete and invalid ones must be refused before generation.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.live import serve_app
from tuneloop import Settings
from tuneloop.errors import BadRequest
from tuneloop.serve import app as app_module
from tuneloop.serve.app import create_app
from tuneloop.serve.backends.openai_upstream import OpenAIUpstreamBackend
from tuneloop.serve.http import parse_json
from tuneloop.store.repository import Store

MAX_BODY = 200_000
ECHO_LIMIT = 400  # no error message may echo more of the client's input than this


def _upstream(request: httpx.Request) -> httpx.Response:
    """A canned OpenAI-compatible upstream: every completion says "ok"."""
    body = json.loads(request.content)
    choices = [
        {"index": i, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        for i in range(body.get("n", 1))
    ]
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    return httpx.Response(
        200, json={"id": "up", "object": "chat.completion", "choices": choices, "usage": usage}
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("home")
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("postgres").create_database(f"bad_input_{home.name[-6:]}".lower())
    settings = Settings(
        home=home,
        db_url=db_url,
        backend="none",
        max_body_bytes=MAX_BODY,
        max_text_chars=5000,
        max_batch_events=50,
    )
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    admin = store.add_key(None)
    store.close()
    backend = OpenAIUpstreamBackend(
        "http://upstream/v1", model="up", manage_adapters=False, transport=httpx.MockTransport(_upstream)
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app_module, "make_backend", lambda _: backend)
        app = create_app(settings)
    auth = {"Authorization": f"Bearer {key}"}
    with serve_app(app) as url, httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        for iid, choices in (("known-1", ["a", "b"]), ("known-2", ["c"])):
            body = {"id": iid, "messages": [{"role": "user", "content": "q"}], "response": choices[0]}
            assert http.post("/v1/interactions", json={**body, "choices": choices}).status_code == 201
        yield {"url": url, "http": http, "key": key, "admin": admin}


# -- the table ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One request and what must come back: `status`, and an error message that contains `names`."""

    id: str
    path: str
    body: bytes | None = None
    method: str = "POST"
    status: int = 400
    names: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


INTERACTION = {
    "messages": [{"role": "user", "content": "q"}],
    "response": "a",
    "choices": ["a", "b"],
    "user": "u-1",
    "session": "s-1",
    "model": "m",
    "metadata": {"k": "v", "n": 1.5, "nested": {"deep": "x"}},
}
FEEDBACK = {
    "id": "e-1",
    "interaction_id": "known-1",
    "kind": "comment",
    "value": "fine",
    "rater": "r",
    "source": "user",
    "created_at": "2025-01-01T00:00:00Z",
    "metadata": {"k": "v", "n": 1.5},
}
PREFERENCE = {
    "id": "e-2",
    "interaction_id": "known-1",
    "kind": "preference",
    "value": {"chosen_interaction": "known-1", "rejected_interaction": "known-2"},
}
REGENERATED = {
    "id": "e-3",
    "interaction_id": "known-1",
    "kind": "regenerated",
    "value": {"replaced_by": "known-2"},
}
OUTCOME = {
    "id": "e-4",
    "interaction_id": "known-1",
    "kind": "outcome",
    "value": {"name": "tests", "value": 1.5},
}
CHAT = {
    "model": "tuneloop",
    "messages": [{"role": "user", "content": "hi", "name": "n"}],
    "stop": ["x"],
    "user": "u-1",
    "metadata": {"k": "v"},
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 7,
    "max_tokens": 4,
    "n": 1,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "logit_bias": {"50256": -100},
}
COMPLETION = {k: v for k, v in CHAT.items() if k != "messages"} | {"prompt": "hi", "echo": False}
CHAT_PARTS = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
RAW = "\x00raw\x00"  # a placeholder string replaced by raw JSON text after encoding


def _encode(body: Any, raw: str | None = None) -> bytes:
    # json.dumps writes lone surrogates and NUL as \\uXXXX escapes, NaN/Infinity as bare constants.
    text = json.dumps(body)
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw)
    return text.encode()


def _put(base: Any, path: str, value: Any) -> Any:
    """A copy of `base` with `value` at the dotted `path` (list indices as numbers)."""
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    target = out
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = value
    return out


# Every JSON endpoint, as (name, path, valid body, how to address a field in it).
def _batch(event: dict) -> dict:
    # A deep copy: a case that breaks a field of events.1 must leave events.0's own nested values whole.
    return {"events": [{**copy.deepcopy(event), "id": "b-ok"}, event]}


ENDPOINTS = {
    "interaction": ("/v1/interactions", INTERACTION, ""),
    "feedback": ("/v1/feedback", FEEDBACK, ""),
    "batch": ("/v1/feedback", _batch(FEEDBACK), "events.1."),
    "chat": ("/v1/chat/completions", CHAT, ""),
    "completions": ("/v1/completions", COMPLETION, ""),
}
STRING_FIELDS = {
    "interaction": [
        "id",
        "user",
        "session",
        "messages.0.content",
        "messages.0.role",
        "response",
        "choices.1",
        "model",
        "metadata.k",
        "metadata.nested.deep",
    ],
    "feedback": ["id", "interaction_id", "kind", "value", "rater", "source", "created_at", "metadata.k"],
    "batch": ["id", "interaction_id", "kind", "value", "rater", "source", "created_at", "metadata.k"],
    "chat": [
        "model",
        "messages.0.content",
        "messages.0.role",
        "messages.0.name",
        "stop.0",
        "user",
        "metadata.k",
    ],
    "completions": ["model", "prompt", "stop.0", "user", "metadata.k"],
}
NUMBER_FIELDS = {
    "interaction": ["metadata.n"],
    "feedback": ["metadata.n"],
    "batch": ["metadata.n"],
    "chat": [
        "temperature",
        "top_p",
        "seed",
        "max_tokens",
        "n",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias.50256",
    ],
    "completions": [
        "temperature",
        "top_p",
        "seed",
        "max_tokens",
        "n",
        "presence_penalty",
        "logit_bias.50256",
    ],
}
# Dicts whose keys the client chooses.
KEY_FIELDS = {
    "interaction": ["", "metadata", "metadata.nested", "messages.0"],
    "feedback": ["", "metadata"],
    "batch": ["", "events.1", "events.1.metadata"],
    "chat": ["", "metadata", "messages.0", "logit_bias"],
    "completions": ["", "metadata", "logit_bias"],
}
POISON = {
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "\udfff",
    "short-with-surrogate": "a\udbffb",
    "reversed-pair": "\ude00\ud83d",
    "nul": "\x00",
    "nul-in-text": "ab\x00cd",
}
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "1e999": "1e999", "-1e999": "-1e999"}


def _string_cases() -> Iterator[Case]:
    for name, (path, base, prefix) in ENDPOINTS.items():
        for fld in STRING_FIELDS[name]:
            for label, poison in POISON.items():
                body = _put(base, prefix + fld, poison)
                yield Case(f"{name}-{fld}-{label}", path, _encode(body), names=prefix + fld)
        for where in KEY_FIELDS[name]:
            for label, poison in POISON.items():
                body = _put(base, f"{where}.{poison}", "v") if where else {**base, poison: "v"}
                yield Case(f"{name}-key-of-{where or 'body'}-{label}", path, _encode(body), names="(the key)")


def _number_cases() -> Iterator[Case]:
    for name, (path, base, prefix) in ENDPOINTS.items():
        fields = NUMBER_FIELDS[name]
        for fld in fields:
            for label, raw in NON_FINITE.items():
                body = _encode(_put(base, prefix + fld, RAW), raw)
                yield Case(f"{name}-{fld}-{label}", path, body, names=prefix + fld)
    for kind, fld in (("rating", "value"), ("thumbs", "value"), ("dwell_ms", "value")):
        for label, raw in NON_FINITE.items():
            event = {**FEEDBACK, "kind": kind, "value": RAW}
            yield Case(f"feedback-{kind}-{label}", "/v1/feedback", _encode(event, raw), names=fld)
            # Both events of the batch carry the bad number; the error names the first.
            yield Case(
                f"batch-{kind}-{label}", "/v1/feedback", _encode(_batch(event), raw), names=f"events.0.{fld}"
            )
    for label, raw in NON_FINITE.items():
        yield Case(
            f"outcome-{label}",
            "/v1/feedback",
            _encode(_put(OUTCOME, "value.value", RAW), raw),
            names="value.value",
        )
    # Past 18 whole digits, as the README says: a float too, finite as JSON and Python read it.
    for label, raw in {"1e300": "1e300", "-1e308": "-1e308", "1e18": "1e18", "1.0e18": "1.0e18"}.items():
        yield Case(
            f"outcome-past-18-digits-{label}",
            "/v1/feedback",
            _encode(_put(OUTCOME, "value.value", RAW), raw),
            names="value.value",
        )


def _depth_cases() -> Iterator[Case]:
    for depth in (65, 256, 5000, 90_000):
        nested = "[" * depth + "]" * depth
        for name, (path, base, _) in ENDPOINTS.items():
            field_name = "metadata" if name != "batch" else "events.1.metadata"
            yield Case(
                f"{name}-metadata-depth-{depth}",
                path,
                _encode(_put(base, field_name, RAW), nested),
                names="deeper than 64",
            )
            yield Case(f"{name}-body-depth-{depth}", path, nested.encode(), names="deeper than 64")
        if depth > 5000:
            continue  # as objects, that depth is over the body limit
        obj = '{"a":' * depth + "1" + "}" * depth
        yield Case(
            f"feedback-value-objects-depth-{depth}",
            "/v1/feedback",
            _encode({**FEEDBACK, "kind": "outcome", "value": RAW}, obj),
            names="deeper than 64",
        )


def _duplicate_cases() -> Iterator[Case]:
    dup = '"__dup__"'
    for name, (path, base, prefix) in ENDPOINTS.items():
        first = next(iter(base))
        top = _encode({**base, "__dup__": base[first]}).replace(dup.encode(), json.dumps(first).encode())
        yield Case(f"{name}-duplicate-top-level-key", path, top, names=first)
        target = (
            f"{prefix}metadata" if "metadata" in (base if not prefix else base["events"][1]) else "messages.0"
        )
        nested = _encode(_put(base, f"{target}.__dup__", "again"))
        key = "k"
        yield Case(
            f"{name}-duplicate-nested-key", path, nested.replace(dup.encode(), f'"{key}"'.encode()), names=key
        )
    role = _encode(_put(CHAT, "messages.0.__dup__", "assistant")).replace(dup.encode(), b'"role"')
    yield Case("chat-duplicate-message-role", "/v1/chat/completions", role, names="role")


def _content_type_cases() -> Iterator[Case]:
    types = {
        "none": None,
        "text-plain": "text/plain",
        "form": "application/x-www-form-urlencoded",
        "multipart": "multipart/form-data; boundary=x",
        "latin-1": "application/json; charset=latin-1",
        "jsonp": "application/jsonp",
        "text-json": "text/json",
    }
    for name, (path, base, _) in ENDPOINTS.items():
        for label, value in types.items():
            headers = {"content-type": value} if value else {}
            yield Case(
                f"{name}-content-type-{label}",
                path,
                _encode(base),
                status=415,
                names="Content-Type",
                headers=headers,
            )
        for encoding in ("gzip", "br"):  # a compressed body is refused for its encoding, not as bad UTF-8
            yield Case(
                f"{name}-content-encoding-{encoding}",
                path,
                gzip.compress(_encode(base)) if encoding == "gzip" else _encode(base),
                status=415,
                names="Content-Encoding",
                headers={"content-type": "application/json", "content-encoding": encoding},
            )


def _chat_cases() -> Iterator[Case]:
    path = "/v1/chat/completions"
    bad: dict[str, tuple[str, Any, str]] = {
        "seed-2**63": ("seed", 2**63, "seed"),
        "seed-2**64": ("seed", 2**64, "seed"),
        "seed-below-int64": ("seed", -(2**63) - 1, "seed"),
        "seed-huge": ("seed", 10**300, "seed"),
        "seed-float": ("seed", 7.0, "seed"),
        "seed-string": ("seed", "7", "seed"),
        "stop-100k": ("stop", "x" * 100_000, "stop"),
        "stop-list-100k": ("stop", ["x" * 100_000], "stop.0"),
        "stop-129": ("stop", "x" * 129, "stop"),
        "stop-empty": ("stop", "", "stop"),
        "stop-five": ("stop", ["a", "b", "c", "d", "e"], "stop"),
        "stop-number": ("stop", 5, "stop"),
        "stop-list-of-numbers": ("stop", [5], "stop"),
        "n-true": ("n", True, "n"),
        "n-string": ("n", "2", "n"),
        "n-float": ("n", 2.0, "n"),
        "n-zero": ("n", 0, "n"),
        "n-nine": ("n", 9, "n"),
        "max-tokens-string": ("max_tokens", "10", "max_tokens"),
        "max-tokens-float": ("max_tokens", 10.5, "max_tokens"),
        "max-tokens-bool": ("max_tokens", True, "max_tokens"),
        "max-tokens-zero": ("max_tokens", 0, "max_tokens"),
        "max-tokens-huge": ("max_tokens", 2**70, "max_tokens"),
        "max-completion-tokens-string": ("max_completion_tokens", "10", "max_completion_tokens"),
        "temperature-string": ("temperature", "0.5", "temperature"),
        "temperature-bool": ("temperature", True, "temperature"),
        "temperature-3": ("temperature", 3, "temperature"),
        "temperature-negative": ("temperature", -0.1, "temperature"),
        "top-p-zero": ("top_p", 0, "top_p"),
        "top-p-string": ("top_p", "1", "top_p"),
        "stream-string": ("stream", "true", "stream"),
        "stream-int": ("stream", 1, "stream"),
        "stream-options-string": ("stream_options", "yes", "stream_options"),
        "stream-options-unknown": ("stream_options", {"include_usage": True, "x": 1}, "stream_options.x"),
        "user-number": ("user", 42, "user"),
        "user-long": ("user", "u" * 300, "user"),
        "model-number": ("model", 1, "model"),
        "model-long": ("model", "m" * 5000, "model"),
        "messages-empty": ("messages", [], "messages"),
        "messages-object": ("messages", {"role": "user", "content": "hi"}, "messages"),
        "messages-string": ("messages", "hi", "messages"),
        "role-tool-without-call-id": ("messages", [{"role": "tool", "content": "x"}], "tool_call_id"),
        "role-unknown": ("messages", [{"role": "robot", "content": "x"}], "messages.0.role"),
        "role-missing": ("messages", [{"content": "x"}], "messages.0.role"),
        "content-number": ("messages", [{"role": "user", "content": 5}], "messages.0.content"),
        "content-image": (
            "messages",
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages.0.content",
        ),
        "content-part-extra": (
            "messages",
            [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}],
            "messages.0.content",
        ),
        "frequency-penalty-3": ("frequency_penalty", 3, "frequency_penalty"),
        "presence-penalty-string": ("presence_penalty", "0", "presence_penalty"),
        "logit-bias-200": ("logit_bias", {"1": 200}, "logit_bias.1"),
        "logit-bias-list": ("logit_bias", [1], "logit_bias"),
        "metadata-number": ("metadata", {"k": 1}, "metadata.k"),
        "metadata-17": ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata"),
        "store-string": ("store", "yes", "store"),
        "service-tier-bad": ("service_tier", "gold", "service_tier"),
        "tools-bad-name": (
            "tools",
            [{"type": "function", "function": {"name": "f g"}}],
            "tools.0.function.name",
        ),
        "tools-not-function": ("tools", [{"type": "retrieval"}], "tools.0.type"),
        "tool-choice-sometimes": ("tool_choice", "sometimes", "tool_choice"),
        "functions-number-name": ("functions", [{"name": 5}], "functions.0.name"),
        "tool-calls-on-user": (
            "messages",
            [
                {
                    "role": "user",
                    "content": "x",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ],
                }
            ],
            "tool_calls",
        ),
        "modalities-audio": ("modalities", ["text", "audio"], "modalities"),
        "audio": ("audio", {"voice": "alloy", "format": "wav"}, "audio"),
        "prediction": ("prediction", {"type": "content", "content": "x"}, "prediction"),
        "web-search": ("web_search_options", {}, "web_search_options"),
        "logprobs": ("logprobs", True, "logprobs"),
        "top-logprobs": ("top_logprobs", 3, "top_logprobs"),
        "response-format-no-schema": ("response_format", {"type": "json_schema"}, "response_format"),
        "stream-with-n-2": ("n", 2, "n"),
    }
    for label, (fld, value, names) in bad.items():
        body = _put(CHAT, fld, value)
        if label == "stream-with-n-2":
            body["stream"] = True
        yield Case(f"chat-{label}", path, _encode(body), names=names)
    for unknown in ("foo", "Temperature", "max_token", "stream_option", "x" * 10_000, "tenant_id", "adapter"):
        label = unknown if len(unknown) < 30 else "long-name"
        yield Case(f"chat-unknown-field-{label}", path, _encode({**CHAT, unknown: 1}), names=unknown[:100])
    too_long = {"content-type": "application/json", "x-tuneloop-session": "s" * 300}
    yield Case("chat-session-header-long", path, _encode(CHAT), names="x-tuneloop-session", headers=too_long)
    other = {"content-type": "application/json", "x-tuneloop-session": "s-2"}
    body = _encode(_put(CHAT, "metadata.session_id", "s-1"))
    yield Case("chat-session-header-and-body-differ", path, body, names="x-tuneloop-session", headers=other)
    yield Case("chat-body-array", path, b"[]", names="body")
    yield Case("chat-body-null", path, b"null", names="body")


def _capture_cases() -> Iterator[Case]:
    yield Case(
        "preference-same-interaction",
        "/v1/feedback",
        _encode(_put(PREFERENCE, "value.rejected_interaction", "known-1")),
        names="must differ",
    )
    yield Case(
        "regenerated-replaced-by-itself",
        "/v1/feedback",
        _encode(_put(REGENERATED, "value.replaced_by", "known-1")),
        names="value.replaced_by",
    )
    yield Case(
        "preference-same-index",
        "/v1/feedback",
        _encode({**PREFERENCE, "value": {"chosen": 1, "rejected": 1}}),
        names="must differ",
    )
    yield Case(
        "feedback-interaction-and-session",
        "/v1/feedback",
        _encode({**FEEDBACK, "session": "s-1"}),
        names="interaction_id",
    )
    yield Case(
        "feedback-neither-interaction-nor-session",
        "/v1/feedback",
        _encode({k: v for k, v in FEEDBACK.items() if k != "interaction_id"}),
        names="interaction_id",
    )
    yield Case(
        "feedback-session-number",
        "/v1/feedback",
        _encode({**{k: v for k, v in FEEDBACK.items() if k != "interaction_id"}, "session": 5}),
        names="session",
    )
    for label, value in {
        "score-string": "good",
        "score-numeric-text": {"name": "q", "data_type": "numeric", "value": "high"},
        "score-boolean-half": {"name": "q", "data_type": "boolean", "value": 0.5},
        "score-unknown-type": {"name": "q", "data_type": "ordinal", "value": 1},
        "score-long-name": {"name": "q" * 65, "data_type": "numeric", "value": 1},
        "score-extra-field": {"name": "q", "data_type": "numeric", "value": 1, "trace": "t"},
    }.items():
        body = _encode({**FEEDBACK, "kind": "score", "value": value})
        yield Case(f"feedback-{label}", "/v1/feedback", body, names="value")
    yield Case(
        "interaction-unknown-field",
        "/v1/interactions",
        _encode({**INTERACTION, "tenant_id": "x"}),
        names="tenant_id",
    )
    yield Case(
        "interaction-long-unknown-field",
        "/v1/interactions",
        _encode({**INTERACTION, "y" * 50_000: 1}),
        names="y" * 100,
    )
    yield Case(
        "batch-long-unknown-field",
        "/v1/feedback",
        _encode({**_batch(FEEDBACK), "z" * 50_000: 1}),
        names="z" * 40,
    )
    yield Case(
        "interaction-huge-int",
        "/v1/interactions",
        _encode(_put(INTERACTION, "metadata.n", RAW), "9" * 5000),
        names="not valid JSON",
    )
    for label, when in {
        "year-1": "0001-01-01T00:00:00+01:00",
        "year-9999": "9999-12-31T23:59:59-14:00",
        "next-year": "2999-01-01T00:00:00Z",
        "naive-year-1": "0001-01-01T00:00:00",
    }.items():
        body = _encode({**FEEDBACK, "created_at": when})
        yield Case(f"feedback-created-at-{label}", "/v1/feedback", body, names="created_at")
    yield Case(
        "feedback-created-at-number",
        "/v1/feedback",
        _encode({**FEEDBACK, "created_at": 1e300}),
        names="created_at",
    )
    yield Case("body-invalid-utf8", "/v1/interactions", b'{"response": "\xff"}', names="UTF-8")
    yield Case(
        "body-utf8-encoded-surrogate", "/v1/interactions", b'{"response": "\xed\xa0\x80"}', names="UTF-8"
    )
    huge = _encode({**INTERACTION, "metadata": {"n": 0}}).replace(b'"n": 0', b'"n": ' + b"9" * 5000)
    yield Case("body-5000-digit-integer", "/v1/interactions", huge, names="at most 4300")
    yield Case("body-trailing-garbage", "/v1/interactions", _encode(INTERACTION) + b"}", names="JSON")
    yield Case("body-raw-control-char", "/v1/interactions", b'{"response": "a\x01b"}', names="JSON")
    yield Case("body-too-large", "/v1/interactions", b" " * (MAX_BODY + 1), status=413, names=str(MAX_BODY))


def _cursor(text: str) -> str:
    """An `after` cursor as the server encodes one, of `text`."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_cases() -> Iterator[Case]:
    for label, iid in {
        "100kb": "x" * 60_000,
        "nul": "%00",
        "encoded-surrogate": "%ED%A0%80",
        "latin1-byte": "%FF",
        "newline": "a%0Ab",
        "unicode": "%C3%A9",
        "dots": "a..b",
    }.items():
        yield Case(
            f"get-interaction-{label}", f"/v1/interactions/{iid}", method="GET", status=404, names="not found"
        )
    for label, query in {
        "id-nul": "interaction_id=%00",
        "id-long": "interaction_id=" + "x" * 5000,
        "id-surrogate": "interaction_id=%ED%A0%80",
        "since-garbage": "since=yesterday",
        "since-year-0": "since=0000-01-01T00:00:00Z",
        "since-nul": "since=%00",
        "limit-negative": "limit=-1",
        "limit-huge": "limit=" + "9" * 50,
        "limit-text": "limit=all",
        "limit-float": "limit=1.5",
        "after-garbage": "after=yesterday",
        "after-nul": "after=%00",
        "after-padding-inside": "after=YQ=YQ",
        "after-no-id": "after=" + _cursor("2024-01-01T00:00:00+00:00 "),
        "after-nul-id": "after=" + _cursor("2024-01-01T00:00:00+00:00 e\x00"),
        "after-bad-time": "after=" + _cursor("yesterday e1"),
        "after-year-0": "after=" + _cursor("0001-01-01T00:00:00+01:00 e1"),
        "after-latin1": "after=" + base64.urlsafe_b64encode(b"2024-01-01 \xff").decode(),
    }.items():
        name = query.partition("=")[0]
        yield Case(f"list-feedback-{label}", f"/v1/feedback?{query}", method="GET", names=name)


CASES = [
    *_string_cases(),
    *_number_cases(),
    *_depth_cases(),
    *_duplicate_cases(),
    *_content_type_cases(),
    *_chat_cases(),
    *_capture_cases(),
    *_read_cases(),
]


def test_the_table_covers_every_endpoint_with_hundreds_of_cases() -> None:
    assert len(CASES) >= 300
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.path.split("?")[0].rsplit("/", 1)[0] for c in CASES} >= {"/v1", "/v1/interactions"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_4xx_that_names_what_to_fix(server: dict, case: Case) -> None:
    http = server["http"]
    resp = http.request(case.method, case.path, content=case.body, headers=case.headers)
    assert resp.status_code == case.status, resp.text[:500]
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert case.names in error["message"], error["message"][:500]
    assert len(resp.text) < ECHO_LIMIT + 300, "the error echoes too much of the input"


# -- the valid twins: the table's bases are accepted, so each case fails for its one bad part -------------


@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_the_valid_bodies_the_table_starts_from_are_accepted(server: dict, name: str) -> None:
    path, base, _ = ENDPOINTS[name]
    resp = server["http"].post(path, json=base)
    assert resp.status_code < 300, resp.text
    if name == "batch":
        assert {r["status"] for r in resp.json()["results"]} <= {"accepted", "duplicate"}


@pytest.mark.parametrize(
    "body",
    [
        PREFERENCE,
        REGENERATED,
        OUTCOME,
        {**CHAT, **CHAT_PARTS},
        {**CHAT, "stop": "x" * 128, "seed": 2**63 - 1},
    ],
    ids=["preference", "regenerated", "outcome", "chat-parts", "chat-limits"],
)
def test_valid_neighbours_of_bad_cases_are_accepted(server: dict, body: dict) -> None:
    path = "/v1/chat/completions" if "messages" in body and "response" not in body else "/v1/feedback"
    assert server["http"].post(path, json=body).status_code < 300


@pytest.mark.parametrize(
    "header", ["application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF8"]
)
def test_json_content_type_may_carry_a_utf8_charset(server: dict, header: str) -> None:
    resp = server["http"].post(
        "/v1/interactions", content=_encode(INTERACTION), headers={"content-type": header}
    )
    assert resp.status_code == 201, resp.text


def test_a_leading_byte_order_mark_is_ignored(server: dict) -> None:
    body = b"\xef\xbb\xbf" + _encode({**INTERACTION, "id": "bom-1"})
    resp = server["http"].post("/v1/interactions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 201, resp.text


def test_nesting_up_to_the_limit_is_accepted(server: dict) -> None:
    deep: Any = "x"
    for _ in range(62):  # with the body and metadata: 64 levels
        deep = {"a": deep}
    resp = server["http"].post("/v1/interactions", json={**INTERACTION, "metadata": deep})
    assert resp.status_code == 201, resp.text


def test_a_string_left_open_on_escaped_quotes_is_refused_at_once() -> None:
    """Each quote of an unterminated `"\\"\\"…` once began a scan to the body's end: a megabyte held the
    server (and every tenant) for about an hour."""
    refused: list[str] = []

    def parse() -> None:
        try:
            parse_json(('{"response": "' + '\\"' * 500_000).encode())
        except BadRequest as exc:
            refused.append(str(exc))

    worker = threading.Thread(target=parse, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive() and "not valid JSON" in refused[0]


def test_valid_surrogate_pairs_and_escapes_are_kept(server: dict) -> None:
    body = {**INTERACTION, "id": "emoji-1", "response": "ok 😀 \\u0000 é", "choices": None}
    resp = server["http"].post("/v1/interactions", json=body)
    assert resp.status_code == 201, resp.text
    assert server["http"].get("/v1/interactions/emoji-1").json()["response"] == "ok 😀 \\u0000 é"


def test_what_the_real_openai_client_sends_is_accepted(server: dict) -> None:
    client = openai.OpenAI(base_url=f"{server['url']}/v1", api_key=server["key"], max_retries=0)
    messages = [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]
    done = client.chat.completions.create(model="tuneloop", messages=messages)
    assert done.choices[0].message.content == "ok"
    loaded = client.chat.completions.create(
        model="tuneloop",
        messages=messages,
        n=2,
        temperature=0,
        top_p=1,
        max_completion_tokens=5,
        stop=["\n"],
        seed=1,
        user="u",
        store=False,
        metadata={"a": "b"},
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0,
        response_format={"type": "text"},
        tool_choice="none",
        parallel_tool_calls=True,
        service_tier="auto",
        stream_options=None,
        modalities=["text"],
    )
    assert len(loaded.choices) == 2
    with pytest.raises(openai.BadRequestError, match="seed"):
        client.chat.completions.create(model="tuneloop", messages=messages, seed=2**63)
    with pytest.raises(openai.BadRequestError, match="unknown field"):
        client.chat.completions.create(model="tuneloop", messages=messages, extra_body={"best_of": 2})


def test_batch_rejects_self_referential_items_alone(server: dict) -> None:
    events = [
        {**FEEDBACK, "id": "self-ok"},
        _put({**PREFERENCE, "id": "self-pref"}, "value.rejected_interaction", "known-1"),
        _put({**REGENERATED, "id": "self-regen"}, "value.replaced_by", "known-1"),
    ]
    resp = server["http"].post("/v1/feedback", json={"events": events})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
    assert "must differ" in results[1]["error"] and "value.replaced_by" in results[2]["error"]


def test_reads_stay_healthy_and_never_show_the_internal_tenant_id(server: dict) -> None:
    http = server["http"]
    listed = http.get("/v1/feedback")
    assert listed.status_code == 200 and listed.json()["data"]
    one = http.get("/v1/interactions/known-1")
    assert one.status_code == 200 and one.json()["feedback"]
    for row in [one.json(), *one.json()["feedback"], *listed.json()["data"]]:
        assert "tenant_id" not in row


def test_invented_methods_do_not_mint_metric_series(server: dict) -> None:
    http = server["http"]
    # Methods HTTP knows but no route takes reach the app; made-up ones end at the HTTP parser (400).
    for i, method in enumerate(["PROPFIND", "MKCOL", "PURGE", "REPORT", "SEARCH", "LOCK", "BREW", "X1"]):
        assert http.request(method, "/v1/feedback").status_code < 500
        assert http.request(method, f"/nowhere/{i}").status_code < 500
    text = http.get("/metrics", headers={"Authorization": f"Bearer {server['admin']}"}).text
    methods = {line.split('method="')[1].split('"')[0] for line in text.splitlines() if 'method="' in line}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in methods
    routes = {line.split('route="')[1].split('"')[0] for line in text.splitlines() if 'route="' in line}
    assert not any("nowhere" in r for r in routes)


def test_login_refuses_an_oversize_body_before_reading_it_all(server: dict) -> None:
    url = server["url"]
    form = {"content-type": "application/x-www-form-urlencoded"}
    resp = httpx.post(f"{url}/dashboard/login", content=b"key=" + b"k" * 1_000_000, headers=form)
    assert resp.status_code == 413 and "limit" in resp.json()["error"]["message"]
    chunks = (b"k" * 65_536 for _ in range(32))  # no Content-Length: the cap holds while streaming
    resp = httpx.post(f"{url}/dashboard/login", content=chunks, headers=form)
    assert resp.status_code == 413
    ok = httpx.post(f"{url}/dashboard/login", data={"key": server["key"]}, follow_redirects=False)
    assert ok.status_code == 303


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/interactions", '{"messages": [{"role": "user", "content": "q"}], "response": "a", "%s": 1}'),
        ("/v1/interactions", '{"messages": [], "response": "a", "%s": 1, "%s": 2}'),
        ("/v1/feedback", '{"kind": "thumbs", "value": 1, "metadata": {"%s": "\\u0000"}}'),
        ("/v1/feedback", '{"events": [], "%s": 1}'),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "q"}], "logit_bias": {"%s": 1}}'),
    ],
)
def test_a_key_holding_personal_data_is_refused_without_repeating_it(
    server: dict, path: str, raw: str
) -> None:
    key = "jane.doe@example.com"
    body = raw.replace("%s", key).encode()
    resp = server["http"].post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "<key>" in resp.text, resp.text
    assert "jane" not in resp.text


def test_a_404_does_not_repeat_a_name_that_is_no_id(server: dict) -> None:
    """An email address typed where an id goes is not written back into the error (clients log errors)."""
    for resp in (
        server["http"].get("/v1/interactions/john.smith@example.com"),
        server["http"].get("/v1/models/bob@example.com"),
    ):
        assert resp.status_code == 404 and "not found" in resp.text, resp.text
        assert "@example.com" not in resp.text


def test_a_404_echoes_little_of_a_long_path(server: dict) -> None:
    resp = server["http"].get("/v1/interactions/" + "q" * 60_000)
    assert resp.status_code == 404 and len(resp.text) < 400
    resp = server["http"].get("/v1/" + "q" * 60_000)
    assert resp.status_code == 404 and len(resp.text) < 400


@pytest.mark.parametrize(
    "since",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00", "1969-01-01T00:00Z"],
)
def test_extreme_but_valid_since_values_answer_200(server: dict, since: str) -> None:
    assert server["http"].get("/v1/feedback", params={"since": since}).status_code == 200
