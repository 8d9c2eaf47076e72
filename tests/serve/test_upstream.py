"""The `openai` upstream backend for real: gateway A forwards to gateway B (embedded, tiny model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.registry.versions import Registry
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "Say hello to the team."}]


@pytest.fixture(scope="module")
def chain(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """B serves the tiny model; A (backend `openai`) forwards to B with a key of B's tenant."""
    home_b = tmp_path_factory.mktemp("upstream")
    # B takes shorter strings than A, so A can send a request that only the upstream refuses.
    settings_b = Settings(home=home_b, model=str(tiny_model), max_text_chars=1000, max_batch_size=4)
    store_b = Store(settings_b.database_url)
    _, key_b = store_b.create_tenant("relay", redaction="off")
    store_b.close()
    with live_server(settings_b) as url_b:
        home_a = tmp_path_factory.mktemp("gateway")
        # No TUNELOOP_MODEL: A takes the upstream's first listed model, which is B's alias `tuneloop`.
        settings_a = Settings(
            home=home_a, backend="openai", upstream_url=f"{url_b}/v1", upstream_api_key=key_b
        )
        store_a = Store(settings_a.database_url)
        tenant_a, key_a = store_a.create_tenant("acme", redaction="off")
        version = Registry(store_a.for_tenant(tenant_a)).register(
            kind="adapter", base_model="tiny-llama", actor="test", system_prompt="Answer in French."
        )
        with live_server(settings_a) as url_a:
            yield {
                "a": url_a,
                "b": url_b,
                "key_a": key_a,
                "key_b": key_b,
                "version": version.id,
            }
        store_a.close()


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def _http(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_forwarded_completion_matches_the_upstream_and_is_captured_on_both_sides(chain: dict) -> None:
    args = {"model": "tuneloop", "messages": ASK, "temperature": 0, "max_tokens": 8, "seed": 1}
    raw = _client(chain["a"], chain["key_a"]).chat.completions.with_raw_response.create(**args, user="u1")
    completion = raw.parse()
    direct = _client(chain["b"], chain["key_b"]).chat.completions.create(**args)
    assert completion.choices[0].message.content == direct.choices[0].message.content
    assert raw.headers["x-tuneloop-interaction-id"] == completion.id
    assert completion.usage.completion_tokens == direct.usage.completion_tokens > 0
    stored = _http(chain["a"], chain["key_a"]).get(f"/v1/interactions/{completion.id}").json()
    assert stored["response"] == completion.choices[0].message.content
    assert stored["user"] == "u1" and stored["completion_tokens"] == completion.usage.completion_tokens
    # B captured the forwarded call too, under its own id and its own tenant.
    assert _http(chain["b"], chain["key_b"]).get(f"/v1/interactions/{completion.id}").status_code == 404


def test_streamed_chunks_through_the_upstream_equal_the_non_streamed_text(chain: dict) -> None:
    client = _client(chain["a"], chain["key_a"])
    args = {"model": "tuneloop", "messages": ASK, "temperature": 0, "max_tokens": 12, "seed": 7}
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_n_2_through_the_upstream_keeps_both_choices(chain: dict) -> None:
    completion = _client(chain["a"], chain["key_a"]).chat.completions.create(
        model="tuneloop", messages=ASK, n=2, max_tokens=6, seed=3
    )
    assert [c.index for c in completion.choices] == [0, 1]
    stored = _http(chain["a"], chain["key_a"]).get(f"/v1/interactions/{completion.id}").json()
    assert len(stored["choices"]) == 2


def test_pinned_version_sends_its_system_prompt_upstream(chain: dict) -> None:
    args = {"messages": ASK, "temperature": 0, "max_tokens": 8}
    pinned = _client(chain["a"], chain["key_a"]).chat.completions.create(model=chain["version"], **args)
    direct = _client(chain["b"], chain["key_b"]).chat.completions.create(
        model="tuneloop", **{**args, "messages": [{"role": "system", "content": "Answer in French."}, *ASK]}
    )
    assert pinned.choices[0].message.content == direct.choices[0].message.content
    stored = _http(chain["a"], chain["key_a"]).get(f"/v1/interactions/{pinned.id}").json()
    assert stored["adapter_version"] == chain["version"]


def test_a_request_the_upstream_refuses_is_a_400_naming_the_upstream(chain: dict) -> None:
    long_question = [{"role": "user", "content": "why? " * 400}]  # within A's limit, over B's
    with pytest.raises(openai.BadRequestError, match="upstream") as caught:
        _client(chain["a"], chain["key_a"]).chat.completions.create(
            model="tuneloop", messages=long_question, max_tokens=4
        )
    assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        _client(chain["a"], chain["key_a"]).chat.completions.create(
            model="tuneloop", messages=long_question, max_tokens=4, stream=True
        )


def test_bad_parameters_and_unknown_models_keep_their_status_through_the_upstream(chain: dict) -> None:
    client = _client(chain["a"], chain["key_a"])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tuneloop", messages=ASK, max_tokens=4, temperature=5)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=ASK, max_tokens=4)


def test_feedback_on_the_gateways_id_lands_in_the_gateways_store(chain: dict) -> None:
    completion = _client(chain["a"], chain["key_a"]).chat.completions.create(
        model="tuneloop", messages=ASK, max_tokens=4, temperature=0
    )
    http = _http(chain["a"], chain["key_a"])
    event = {"id": f"fb-{completion.id}", "interaction_id": completion.id, "kind": "thumbs", "value": -1}
    assert http.post("/v1/feedback", json=event).status_code == 201
    stored = http.get(f"/v1/interactions/{completion.id}").json()
    assert [(e["kind"], e["value"]) for e in stored["feedback"]] == [("thumbs", -1)]
