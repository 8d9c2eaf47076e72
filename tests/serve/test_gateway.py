from __future__ import annotations

import asyncio
import time
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
def gateway(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("home")
    # The per-tenant cap above the backend's queue, so a burst from one tenant reaches the backend's 503.
    settings = Settings(home=home, model=str(tiny_model), max_queue=4, max_batch_size=4)
    store = Store(settings.database_url)
    tenant_a, key_a = store.create_tenant("a", redaction="off")
    _, key_b = store.create_tenant("b", redaction="off")
    version = Registry(store.for_tenant(tenant_a)).register(
        kind="adapter", base_model=str(tiny_model), actor="test", system_prompt="You are terse."
    )
    with live_server(settings) as url:
        yield {"url": url, "a": key_a, "b": key_b, "version": version.id, "store": store}
    store.close()


def _client(gw: dict, key: str = "a") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw['url']}/v1", api_key=gw[key], max_retries=0)


def test_completion_is_captured_and_feedback_lands_on_it(gateway: dict) -> None:
    raw = _client(gateway).chat.completions.with_raw_response.create(
        model="tuneloop", messages=ASK, temperature=0, max_tokens=8, user="u1"
    )
    completion = raw.parse()
    assert raw.headers["x-tuneloop-interaction-id"] == completion.id
    assert completion.usage.completion_tokens > 0 and completion.choices[0].message.content
    http = httpx.Client(base_url=gateway["url"], headers={"Authorization": f"Bearer {gateway['a']}"})
    assert (
        http.post(
            "/v1/feedback",
            json={"id": f"fb-{completion.id}", "interaction_id": completion.id, "kind": "thumbs", "value": 1},
        ).status_code
        == 201
    )
    stored = http.get(f"/v1/interactions/{completion.id}").json()
    assert stored["response"] == completion.choices[0].message.content
    assert stored["user"] == "u1" and stored["decoding"]["temperature"] == 0
    assert [e["kind"] for e in stored["feedback"]] == ["thumbs"]


def test_streamed_chunks_concatenate_to_the_non_streamed_text(gateway: dict) -> None:
    client = _client(gateway)
    args = {"model": "tuneloop", "messages": ASK, "temperature": 0, "max_tokens": 12, "seed": 7}
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_n_2_keeps_both_choices_so_a_preference_can_pick_one(gateway: dict) -> None:
    completion = _client(gateway).chat.completions.create(
        model="tuneloop", messages=ASK, n=2, max_tokens=6, seed=3
    )
    assert len(completion.choices) == 2
    http = httpx.Client(base_url=gateway["url"], headers={"Authorization": f"Bearer {gateway['a']}"})
    resp = http.post(
        "/v1/feedback",
        json={
            "id": f"pref-{completion.id}",
            "interaction_id": completion.id,
            "kind": "preference",
            "value": {"chosen": 1, "rejected": 0},
        },
    )
    assert resp.status_code == 201
    assert len(http.get(f"/v1/interactions/{completion.id}").json()["choices"]) == 2


def test_pinned_version_serves_with_its_system_prompt_and_is_recorded(gateway: dict) -> None:
    raw = _client(gateway).chat.completions.with_raw_response.create(
        model=gateway["version"], messages=ASK, max_tokens=4, temperature=0
    )
    assert raw.headers["x-tuneloop-version"] == gateway["version"]
    http = httpx.Client(base_url=gateway["url"], headers={"Authorization": f"Bearer {gateway['a']}"})
    assert http.get(f"/v1/interactions/{raw.parse().id}").json()["adapter_version"] == gateway["version"]


def test_another_tenants_version_is_not_reachable(gateway: dict) -> None:
    with pytest.raises(openai.NotFoundError, match="not found"):
        _client(gateway, "b").chat.completions.create(model=gateway["version"], messages=ASK, max_tokens=4)
    ids = [m.id for m in _client(gateway, "b").models.list()]
    assert gateway["version"] not in ids and "tuneloop" in ids
    with pytest.raises(openai.NotFoundError, match="not found"):
        _client(gateway, "b").models.retrieve(gateway["version"])


def test_the_sdk_retrieves_each_listed_model(gateway: dict) -> None:
    client = _client(gateway, "a")
    for listed in client.models.list():
        assert client.models.retrieve(listed.id) == listed


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"temperature": 5}, openai.BadRequestError),
        ({"n": 0}, openai.BadRequestError),
        ({"stream": True, "n": 2}, openai.BadRequestError),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            openai.BadRequestError,
        ),
        ({"model": "no-such-model"}, openai.NotFoundError),
    ],
)
def test_bad_requests_get_openai_errors(gateway: dict, kwargs: dict, error: type) -> None:
    args = {"model": "tuneloop", "messages": ASK, "max_tokens": 4, **kwargs}
    with pytest.raises(error) as caught:
        _client(gateway).chat.completions.create(**args)
    assert caught.value.body["message"]


def test_unknown_key_gets_401(gateway: dict) -> None:
    client = openai.OpenAI(base_url=f"{gateway['url']}/v1", api_key="tl-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tuneloop", messages=ASK, max_tokens=4)


def test_overload_answers_503_with_retry_after_and_never_hangs(gateway: dict) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=gateway["url"], timeout=120, headers={"Authorization": f"Bearer {gateway['a']}"}
        ) as http:
            body = {"model": "tuneloop", "messages": ASK, "max_tokens": 64, "temperature": 0}
            responses = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body) for _ in range(24))
            )
        assert all("retry-after" in r.headers for r in responses if r.status_code == 503)
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}


def test_client_that_disconnects_mid_stream_frees_its_slot(gateway: dict) -> None:
    client = _client(gateway)
    # Streams that would run for thousands of tokens, abandoned after one chunk: more of them than the
    # queue holds, so slots that were not freed would turn every later request into a 503.
    for _ in range(6):
        stream = client.chat.completions.create(model="tuneloop", messages=ASK, max_tokens=4000, stream=True)
        next(iter(stream))
        stream.close()
        time.sleep(0.2)
    deadline = time.monotonic() + 15
    while True:
        try:
            completion = client.chat.completions.create(model="tuneloop", messages=ASK, max_tokens=4)
            break
        except openai.InternalServerError:
            assert time.monotonic() < deadline, "abandoned streams still hold their slots"
            time.sleep(0.5)
    assert completion.choices[0].message.content is not None


def test_model_production_is_served_by_production_while_a_canary_splits_users(
    tiny_model: Path, tmp_path: Path
) -> None:
    """An evaluation of production (a held-out set, a dashboard probe) must not land in a canary's arm."""
    from tuneloop.rollout.controller import start_canary
    from tuneloop.rollout.policy import RolloutPolicy
    from tuneloop.signals.policy import RewardPolicy

    settings = Settings(home=tmp_path, model=str(tiny_model))
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("a", redaction="off")
    tenant = store.for_tenant(tenant_row)
    registry = Registry(tenant)
    candidate = registry.register(kind="adapter", base_model=str(tiny_model), actor="t", system_prompt="Hi.")
    registry.move(candidate.id, "gated", actor="t", reason="t")
    start_canary(tenant, candidate.id, RolloutPolicy(ramp=[0.5]), reward_policy=RewardPolicy(), actor="t")
    try:
        with live_server(settings) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

            def served(model: str) -> set[str | None]:
                return {
                    client.chat.completions.with_raw_response.create(
                        model=model, messages=ASK, max_tokens=2, user=f"user-{i}"
                    ).headers.get("x-tuneloop-version")
                    for i in range(16)
                }

            assert candidate.id in served("tuneloop")  # the canary's share of the same users
            assert served("production") == {"base"}  # the base model, production here
            assert "production" in [m.id for m in client.models.list()]
    finally:
        store.close()
