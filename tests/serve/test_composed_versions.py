"""The gateway serves a version as composed: its system prompt and its decoding defaults, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.model_files import load_tokenizer
from tuneloop.registry.composition import Decoding, compose, with_system_prompt
from tuneloop.registry.versions import Registry
from tuneloop.rollout.controller import start_canary
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "How do I reset my password?"}]
PRODUCTION_PROMPT = "You are the support desk of Acme. Answer in French."
CANARY_PROMPT = "You are the support desk of Acme. Answer in one short sentence."


@pytest.fixture(scope="module")
def gateway(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model))
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("acme", redaction="off")
    tenant = store.for_tenant(tenant_row)
    registry = Registry(tenant)
    production = compose(
        registry,
        parent=None,
        base_model=str(tiny_model),
        actor="test",
        reason="setup",
        system_prompt=PRODUCTION_PROMPT,
        decoding=Decoding(temperature=0, max_tokens=3),
    )
    registry.move(production.id, "gated", actor="test", reason="setup")
    registry.move(production.id, "production", actor="test", reason="setup")
    # The canary keeps production's temperature 0 and caps answers shorter, with a repetition penalty.
    canary = compose(
        registry,
        parent=production,
        base_model=str(tiny_model),
        actor="test",
        reason="setup",
        system_prompt=CANARY_PROMPT,
        decoding=Decoding(max_tokens=2, repetition_penalty=1.3),
    )
    registry.move(canary.id, "gated", actor="test", reason="setup")
    start_canary(tenant, canary.id, RolloutPolicy(ramp=[0.5]), reward_policy=RewardPolicy(), actor="test")
    with live_server(settings) as url:
        yield {
            "url": url,
            "key": key,
            "production": production.id,
            "canary": canary.id,
            "tokenizer": load_tokenizer(tiny_model),
        }
    store.close()


def _ask(gw: dict, user: str, messages: list[dict] = ASK, **kwargs: object) -> tuple[dict, dict]:
    """One completion over HTTP, and the interaction tuneloop stored for it."""
    client = openai.OpenAI(base_url=f"{gw['url']}/v1", api_key=gw["key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tuneloop", messages=messages, user=user, **kwargs
    )
    http = httpx.Client(base_url=gw["url"], headers={"Authorization": f"Bearer {gw['key']}"})
    answer = raw.parse()
    stored = http.get(f"/v1/interactions/{answer.id}").json()
    assert stored["adapter_version"] == raw.headers["x-tuneloop-version"]
    return answer.model_dump(), stored


def _prompt_tokens(gw: dict, messages: list[dict], system_prompt: str) -> int:
    """How many tokens the model reads for `messages` served with `system_prompt`."""
    tokenizer = gw["tokenizer"]
    text = tokenizer.apply_chat_template(
        with_system_prompt(messages, system_prompt), add_generation_prompt=True, tokenize=False
    )
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _user_on(gw: dict, version: str) -> str:
    """An end-user id the experiment assigns to `version` (assignment is a deterministic hash)."""
    for i in range(200):
        _, stored = _ask(gw, f"user-{i}", max_tokens=1)
        if stored["adapter_version"] == version:
            return f"user-{i}"
    raise AssertionError(f"no user reached {version}")


@pytest.mark.parametrize(
    ("arm", "prompt", "cap"), [("production", PRODUCTION_PROMPT, 3), ("canary", CANARY_PROMPT, 2)]
)
def test_each_arm_serves_with_its_versions_prompt_and_decoding(
    gateway: dict, arm: str, prompt: str, cap: int
) -> None:
    user = _user_on(gateway, gateway[arm])
    first, stored = _ask(gateway, user)
    again, _ = _ask(gateway, user)
    # The model read the version's system prompt ahead of the client's messages ...
    assert first["usage"]["prompt_tokens"] == _prompt_tokens(gateway, ASK, prompt)
    # ... and answered under the version's cap, greedily (temperature 0), so the same answer twice.
    assert first["usage"]["completion_tokens"] <= cap
    assert first["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]
    assert stored["decoding"]["temperature"] == 0 and stored["decoding"]["max_tokens"] == cap
    # What is stored is what the client sent: training data does not absorb a version's prompt.
    assert stored["messages"] == ASK


def test_a_clients_explicit_settings_override_the_versions_defaults(gateway: dict) -> None:
    user = _user_on(gateway, gateway["production"])
    answer, stored = _ask(gateway, user, max_tokens=6, temperature=1.0, seed=5)
    assert stored["decoding"]["max_tokens"] == 6 and stored["decoding"]["temperature"] == 1.0
    assert answer["usage"]["completion_tokens"] <= 6


def test_a_clients_own_system_message_follows_the_versions_prompt(gateway: dict) -> None:
    user = _user_on(gateway, gateway["production"])
    messages = [{"role": "system", "content": "The user is on the Pro plan."}, *ASK]
    answer, stored = _ask(gateway, user, messages=messages)
    merged = with_system_prompt(messages, PRODUCTION_PROMPT)
    assert merged[0]["content"] == f"{PRODUCTION_PROMPT}\n\nThe user is on the Pro plan."
    assert answer["usage"]["prompt_tokens"] == _prompt_tokens(gateway, messages, PRODUCTION_PROMPT)
    assert stored["messages"] == messages
