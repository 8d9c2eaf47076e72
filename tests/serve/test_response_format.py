"""`response_format`: JSON modes reach an upstream as sent (the SDK's `.parse()` works); the embedded model
constrains its own decoding to them (lm-format-enforcer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from tests.live import live_server, serve_app
from tuneloop import Settings
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "Which city hosts the team offsite?"}]


class Offsite(BaseModel):
    city: str
    days: int


def _json_upstream(received: list[dict]) -> FastAPI:
    """An OpenAI-compatible stand-in that answers every completion with JSON fitting `Offsite`."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "json-model", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        received.append(await request.json())
        content = json.dumps({"city": "Lisbon", "days": 3})
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "json-model",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }

    return app


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    received: list[dict] = []
    with serve_app(_json_upstream(received)) as upstream:
        settings = Settings(
            home=tmp_path_factory.mktemp("home"), backend="openai", upstream_url=f"{upstream}/v1"
        )
        store = Store(settings.database_url)
        _, key = store.create_tenant("a", redaction="off")
        with live_server(settings) as url:
            yield {"url": url, "key": key, "received": received}
        store.close()


def test_the_sdks_parse_gets_its_pydantic_model_through_an_upstream(gateway: dict) -> None:
    client = openai.OpenAI(base_url=f"{gateway['url']}/v1", api_key=gateway["key"], max_retries=0)
    completion = client.chat.completions.parse(model="tuneloop", messages=ASK, response_format=Offsite)
    assert completion.choices[0].message.parsed == Offsite(city="Lisbon", days=3)
    sent = gateway["received"][-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Offsite"
    assert sent["json_schema"]["schema"]["required"] == ["city", "days"]
    headers = {"Authorization": f"Bearer {gateway['key']}"}
    stored = httpx.get(f"{gateway['url']}/v1/interactions/{completion.id}", headers=headers).json()
    assert json.loads(stored["response"]) == {"city": "Lisbon", "days": 3}


def test_json_object_mode_is_forwarded_and_text_mode_is_not(gateway: dict) -> None:
    client = openai.OpenAI(base_url=f"{gateway['url']}/v1", api_key=gateway["key"], max_retries=0)
    client.chat.completions.create(model="tuneloop", messages=ASK, response_format={"type": "json_object"})
    assert gateway["received"][-1]["response_format"] == {"type": "json_object"}
    client.chat.completions.create(model="tuneloop", messages=ASK, response_format={"type": "text"})
    assert "response_format" not in gateway["received"][-1]


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema"},
        {"type": "json_object", "json_schema": {"name": "x", "schema": {}}},
        {"type": "xml"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "extra": 1}},
    ],
)
def test_a_malformed_response_format_is_a_400(gateway: dict, response_format: dict) -> None:
    headers = {"Authorization": f"Bearer {gateway['key']}"}
    body = {"model": "tuneloop", "messages": ASK, "response_format": response_format}
    response = httpx.post(f"{gateway['url']}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["param"].startswith("response_format")


def test_the_embedded_model_constrains_its_answer_to_the_schema(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "n": {"type": "integer"}},
        "required": ["answer", "n"],
    }
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    with live_server(settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        fmt = {"type": "json_schema", "json_schema": {"name": "yes_no", "schema": schema}}
        # Random weights: only the constraint can make this parse.
        done = client.chat.completions.create(
            model="tuneloop", messages=ASK, response_format=fmt, max_tokens=60, temperature=0
        )
        with pytest.raises(openai.BadRequestError) as refused:
            bad = {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "$ref": 5}},
            }
            client.chat.completions.create(model="tuneloop", messages=ASK, response_format=bad, max_tokens=5)
    store.close()
    answer = json.loads(done.choices[0].message.content)
    assert answer["answer"] in ("yes", "no") and isinstance(answer["n"], int)
    assert refused.value.param.startswith("response_format")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^(a|b)*a(a|b){18}$"},  # froze the server for every tenant
        {"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"$ref": "/etc/passwd"}}},
        # Two string branches: the enforcer follows both, token by token (a date | date-time union took
        # 20 s a token and held up every tenant's generation).
        {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]},
        {
            "$defs": {"day": {"type": "string", "format": "date"}},
            "type": "object",
            "properties": {"x": {"oneOf": [{"$ref": "#/$defs/day"}, {"enum": ["today", "never"]}]}},
        },
    ],
)
def test_a_schema_the_embedded_model_cannot_enforce_safely_is_a_400_and_the_server_answers_on(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, schema: dict
) -> None:
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    store.close()
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = {"model": "tuneloop", "messages": ASK, "response_format": fmt, "max_tokens": 5}
    with live_server(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        refused = http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "response_format.json_schema.schema"
        # A field named like a keyword is a name, not a regular expression.
        named = {"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]}
        fmt["json_schema"]["schema"] = named
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        optional = {"anyOf": [{"type": "string"}, {"type": "null"}]}  # one string branch: fine
        fmt["json_schema"]["schema"] = {"type": "object", "properties": {"note": optional}}
        assert http.post("/v1/chat/completions", json=body).status_code == 200


def test_a_schema_past_the_embedded_models_bounds_is_a_400_naming_the_bound_and_a_normal_one_is_served(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    def keyed(count: int) -> list[dict]:
        return [{"type": "object", "properties": {f"k{i}": {"type": "integer"}}} for i in range(count)]

    refused = {  # what the message names -> a schema past it
        # 5,000 branches held every tenant's generation for 35 s.
        "characters long as JSON; the embedded model's JSON mode takes at most 100,000": {
            "anyOf": keyed(5000)
        },
        "open at once, nested unions and $refs counted; the embedded model's JSON mode takes at most 32": {
            "anyOf": keyed(33)
        },
        "1,001 properties in all": {"type": "object", "properties": {f"p{i}": {} for i in range(1001)}},
        # Constraints the enforcer cannot honour: it answered "" or a value outside them, finish_reason stop.
        "does not take `const`": {"const": {"a": [1, {"b": None}]}},
        "`minItems` 10 is above `maxItems` 1": {"type": "array", "minItems": 10, "maxItems": 1},
        # It writes any number whatever its bounds: "5" for an integer between 1.5 and 1.7.
        "does not take `minimum`": {"type": "integer", "minimum": 1.5, "maximum": 1.7},
        "does not take `exclusiveMinimum`": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 5},
        "`minLength`/`maxLength` cannot be negative": {"type": "string", "maxLength": -1},
        "no value of `enum` is of the schema's `type`": {"type": "string", "enum": [1, 2]},
        "no value of `enum` is of the schema's `type`: nothing": {"type": "boolean", "enum": []},
        "an empty `enum`": {"enum": []},
        "a property whose schema is `false`": {"type": "object", "properties": {"a": False}},
        # Each `[` doubled the parses a cycle of unions keeps open: 12 tokens held every tenant for 56 s.
        "refers back to itself ($ref in a cycle)": {
            "$defs": {"A": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/A"}}] * 2}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/A"}},
        },
    }
    normal = {
        "type": "object",
        "properties": {
            "city": {"enum": ["Lisbon", "Porto"]},
            "days": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    store.close()

    def body(schema: dict) -> dict:
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        return {
            "model": "tuneloop",
            "messages": ASK,
            "response_format": fmt,
            "max_tokens": 40,
            "temperature": 0,
        }

    with live_server(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        answers = {words: http.post("/v1/chat/completions", json=body(s)) for words, s in refused.items()}
        served = http.post("/v1/chat/completions", json=body(normal))
    for words, answer in answers.items():
        error = answer.json()["error"]
        assert answer.status_code == 400 and words in error["message"], (words, error)
        assert error["param"] == "response_format.json_schema.schema"
    assert served.status_code == 200, served.text
    assert json.loads(served.json()["choices"][0]["message"]["content"])["city"] in ("Lisbon", "Porto")
