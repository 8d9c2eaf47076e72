"""Legacy `/v1/completions` with the real openai SDK: on the embedded tiny model and through an upstream,
streamed or not, captured as interactions that feedback can target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.live import live_server
from tests.serve.openai_standin import TEXT, gateway_over_standin
from tuneloop import Settings
from tuneloop.registry.versions import Registry
from tuneloop.store.repository import Store

PROMPT = "The capital of Portugal is"


@pytest.fixture(scope="module")
def embedded(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), model=str(tiny_model), max_batch_size=4)
    store = Store(settings.database_url)
    tenant, key = store.create_tenant("a", redaction="off")
    version = Registry(store.for_tenant(tenant)).register(
        kind="adapter", base_model=str(tiny_model), actor="test", decoding={"max_tokens": 3}
    )
    with live_server(settings) as url:
        yield {"url": url, "key": key, "version": version.id}
    store.close()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with gateway_over_standin(tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def _sdk(gw: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw['url']}/v1", api_key=gw["key"], max_retries=0)


def _http(gw: dict) -> httpx.Client:
    return httpx.Client(base_url=gw["url"], headers={"Authorization": f"Bearer {gw['key']}"}, timeout=60)


def test_a_text_completion_on_the_embedded_model_is_captured_and_takes_feedback(embedded: dict) -> None:
    raw = _sdk(embedded).completions.with_raw_response.create(
        model="tuneloop", prompt=PROMPT, max_tokens=4, temperature=0, user="u-1"
    )
    done = raw.parse()
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    assert raw.headers["x-tuneloop-interaction-id"] == done.id
    assert done.usage.completion_tokens == 4 and done.choices[0].finish_reason == "length"
    http = _http(embedded)
    event = {"id": f"fb-{done.id}", "interaction_id": done.id, "kind": "thumbs", "value": -1}
    assert http.post("/v1/feedback", json=event).status_code == 201
    stored = http.get(f"/v1/interactions/{done.id}").json()
    assert stored["messages"] == [{"role": "user", "content": PROMPT}]
    assert stored["response"] == done.choices[0].text and stored["metadata"] == {"endpoint": "completions"}
    assert [e["kind"] for e in stored["feedback"]] == ["thumbs"]


def test_a_pinned_version_serves_its_decoding_and_echo_repeats_the_prompt(embedded: dict) -> None:
    done = _sdk(embedded).completions.create(model=embedded["version"], prompt=[PROMPT], echo=True)
    assert done.model == embedded["version"] and done.usage.completion_tokens == 3
    assert done.choices[0].text.startswith(PROMPT)
    stored = _http(embedded).get(f"/v1/interactions/{done.id}").json()
    assert stored["adapter_version"] == embedded["version"] and stored["decoding"]["max_tokens"] == 3


def test_a_completion_without_max_tokens_stops_at_openais_default_of_16(embedded: dict) -> None:
    done = _sdk(embedded).completions.create(model="tuneloop", prompt=PROMPT, temperature=0)
    assert done.usage.completion_tokens <= 16


def test_streamed_text_equals_the_whole_completion(embedded: dict) -> None:
    sdk = _sdk(embedded)
    args = {"model": "tuneloop", "prompt": PROMPT, "max_tokens": 5, "temperature": 0, "seed": 3}
    whole = sdk.completions.create(**args).choices[0].text
    chunks = list(sdk.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens == 5
    stored = _http(embedded).get(f"/v1/interactions/{chunks[0].id}").json()
    assert stored["response"] == whole


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a", "suffix": "z"}, "suffix"),
        ({"prompt": "a", "best_of": 3}, "best_of"),
        ({"prompt": "a", "logprobs": 2}, "logprobs"),
        ({"prompt": "a", "logprobs": 0}, "logprobs"),  # 0 still asks for the chosen tokens' logprobs
        ({"prompt": "a", "echo": True, "stream": True}, "echo"),
        ({"prompt": "a", "messages": []}, "messages"),
        ({}, "prompt"),
    ],
)
def test_what_a_text_completion_cannot_do_is_a_400_naming_the_field(
    embedded: dict, body: dict, param: str
) -> None:
    response = _http(embedded).post("/v1/completions", json={"model": "tuneloop", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_text_completion_is_forwarded_to_the_upstreams_completions(upstream: dict) -> None:
    sdk = _sdk(upstream)
    done = sdk.completions.create(model="tuneloop", prompt=PROMPT, max_tokens=9, stop=["\n"])
    sent = upstream["received"][-1]
    assert sent["prompt"] == PROMPT and "messages" not in sent and sent["stop"] == ["\n"]
    assert done.choices[0].text == TEXT
    chunks = list(sdk.completions.create(model="tuneloop", prompt=PROMPT, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT
    for iid in (done.id, chunks[0].id):
        assert _http(upstream).get(f"/v1/interactions/{iid}").json()["response"] == TEXT
