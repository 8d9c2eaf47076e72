"""Tools on the gateway with the real openai SDK: forwarded to an upstream that calls them (tool_calls
returned, streamed and captured; `tool` answers accepted in the history), refused by the embedded model
unless `tool_choice` is "none"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.live import live_server
from tests.serve.openai_standin import gateway_over_standin
from tuneloop import Settings
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "What is the weather in Lisbon?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class GetWeather(BaseModel):
    city: str


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with gateway_over_standin(tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def _sdk(gw: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw['url']}/v1", api_key=gw["key"], max_retries=0)


def _stored(gw: dict, iid: str) -> dict:
    headers = {"Authorization": f"Bearer {gw['key']}"}
    return httpx.get(f"{gw['url']}/v1/interactions/{iid}", headers=headers).json()


def test_tool_calls_come_back_from_the_upstream_and_are_captured(upstream: dict) -> None:
    done = _sdk(upstream).chat.completions.create(
        model="tuneloop", messages=ASK, tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False
    )
    sent = upstream["received"][-1]
    assert (
        sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    )
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lisbon"}
    stored = json.loads(_stored(upstream, done.id)["response"])
    assert stored["tool_calls"][0]["function"]["name"] == "get_weather"


def test_the_sdks_parse_reads_a_pydantic_tools_arguments(upstream: dict) -> None:
    done = _sdk(upstream).chat.completions.parse(
        model="tuneloop", messages=ASK, tools=[openai.pydantic_function_tool(GetWeather)]
    )
    assert done.choices[0].message.tool_calls[0].function.parsed_arguments == GetWeather(city="Lisbon")


def test_a_tool_answer_in_the_history_is_forwarded_and_captured(upstream: dict) -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": "18 °C, sunny"},
    ]
    done = _sdk(upstream).chat.completions.create(
        model="tuneloop", messages=history, tools=[WEATHER], tool_choice="none"
    )
    assert done.choices[0].message.content == "Lisbon in spring."
    sent = upstream["received"][-1]["messages"]
    assert sent[1]["tool_calls"] == [call] and sent[2]["tool_call_id"] == "call_9"
    stored = _stored(upstream, done.id)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool"]
    # A call's id only pairs it with its result within the request, and may be any text: it is not stored.
    without_id = {k: v for k, v in call.items() if k != "id"}
    assert json.loads(stored[1]["content"]) == {"tool_calls": [without_id]}
    assert stored[2]["content"] == "18 °C, sunny"


def test_personal_data_in_tool_calls_and_their_results_is_redacted(upstream: dict) -> None:
    arguments = json.dumps({"email": "jane\u0040example.com", "ssn": "078051120"}, separators=(",", ":"))
    call = {
        "id": "call_jane.doe@example.com_4155550134",
        "type": "function",
        "function": {"name": "lookup_customer", "arguments": arguments},
    }
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"name":"Jane Doe","ssn":"078051120"}'},
    ]
    redacting = {**upstream, "key": upstream["redacting_key"]}
    done = _sdk(redacting).chat.completions.create(model="tuneloop", messages=history, tools=[WEATHER])
    stored = json.dumps(_stored(redacting, done.id)["messages"])
    for personal in ("jane", "Jane", "example.com", "078051120", "4155550134"):
        assert personal not in stored
    assert "<EMAIL_ADDRESS>" in stored and "<US_SSN>" in stored and "<PERSON>" in stored


def test_a_streamed_tool_call_arrives_whole_in_the_last_chunk(upstream: dict) -> None:
    chunks = list(
        _sdk(upstream).chat.completions.create(model="tuneloop", messages=ASK, tools=[WEATHER], stream=True)
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].id == "call_1"
    assert json.loads(calls[0].function.arguments) == {"city": "Lisbon"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert "get_weather" in _stored(upstream, chunks[0].id)["response"]


def test_legacy_functions_are_forwarded_and_their_call_returned(upstream: dict) -> None:
    done = _sdk(upstream).chat.completions.create(
        model="tuneloop", messages=ASK, functions=[WEATHER["function"]], function_call="auto"
    )
    assert done.choices[0].finish_reason == "function_call"
    assert done.choices[0].message.function_call.name == "get_weather"
    assert upstream["received"][-1]["functions"] == [WEATHER["function"]]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER], "functions": [WEATHER["function"]]}, "functions"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": None}]}, "messages.0"),
    ],
)
def test_malformed_tools_are_a_400_naming_the_field(upstream: dict, extra: dict, param: str) -> None:
    headers = {"Authorization": f"Bearer {upstream['key']}"}
    body = {"model": "tuneloop", "messages": ASK, **extra}
    response = httpx.post(f"{upstream['url']}/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_the_embedded_model_refuses_tools_unless_tool_choice_is_none(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    with live_server(settings) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model="tuneloop", messages=ASK, tools=[WEATHER])
        done = sdk.chat.completions.create(
            model="tuneloop", messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=2
        )
    store.close()
    assert refused.value.param == "tools" and 'tool_choice: "none"' in refused.value.message
    assert done.choices[0].finish_reason == "length" and done.choices[0].message.tool_calls is None
