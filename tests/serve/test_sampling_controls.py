"""OpenAI's presence/frequency penalties and logit_bias are applied when sampling; metadata is captured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.live import live_server
from tests.serve.test_backend_openai_upstream import FakeVLLM, run
from tuneloop import Settings
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.batching import Sequence, penalize_presence_and_frequency
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "Say hello."}]


def _seq(tokens: list[int], presence: float, frequency: float) -> Sequence:
    return Sequence(
        prompt_ids=[4, 4, 4],
        adapter="__base__",
        max_tokens=8,
        presence_penalty=presence,
        frequency_penalty=frequency,
        emit=lambda _: None,
        tokens=tokens,
    )


def test_penalties_subtract_per_generated_occurrence_as_openai_defines_them() -> None:
    row = torch.zeros(6)
    penalized = penalize_presence_and_frequency(row, _seq([1, 1, 2], presence=0.5, frequency=0.25))
    # Token 1 twice: 2 x 0.25 + 0.5; token 2 once: 0.25 + 0.5; the prompt's token 4 is not counted.
    assert penalized.tolist() == [0, -1.0, -0.75, 0, 0, 0]


@pytest.fixture(scope="module")
def gateway(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from transformers import AutoTokenizer

    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with live_server(settings) as url:
        yield {"url": url, "key": key, "tokenizer": tokenizer}
    store.close()


def _client(gw: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw['url']}/v1", api_key=gw["key"], max_retries=0)


def test_a_logit_bias_of_100_makes_the_model_say_that_token(gateway: dict) -> None:
    [token] = gateway["tokenizer"].encode(" banana", add_special_tokens=False)[:1]
    completion = _client(gateway).chat.completions.create(
        model="tuneloop", messages=ASK, max_tokens=4, temperature=0, logit_bias={str(token): 100}
    )
    expected = gateway["tokenizer"].decode([token] * 4)
    assert completion.choices[0].message.content == expected


@pytest.mark.parametrize("sampling", [{"temperature": 1e-300}, {"temperature": 1, "top_p": 5e-324}])
def test_vanishing_temperature_or_top_p_decodes_greedily_instead_of_failing(
    gateway: dict, sampling: dict
) -> None:
    ask = {"model": "tuneloop", "messages": ASK, "max_tokens": 4}
    greedy = _client(gateway).chat.completions.create(**ask, temperature=0)
    tiny = _client(gateway).chat.completions.create(**ask, **sampling)
    assert tiny.choices[0].message.content == greedy.choices[0].message.content


def test_a_logit_bias_of_minus_100_bans_the_token_greedy_would_pick(gateway: dict) -> None:
    client = _client(gateway)
    args = {"model": "tuneloop", "messages": ASK, "max_tokens": 1, "temperature": 0}
    plain = client.chat.completions.create(**args).choices[0].message.content
    [first] = gateway["tokenizer"].encode(plain, add_special_tokens=False)[:1]
    banned = client.chat.completions.create(**args, logit_bias={str(first): -100})
    assert banned.choices[0].message.content != plain


def test_negative_penalties_make_greedy_decoding_repeat_itself(gateway: dict) -> None:
    # The random-weight model never repeats on its own; negative penalties reward what it already said.
    client = _client(gateway)
    args = {"model": "tuneloop", "messages": ASK, "max_tokens": 16, "temperature": 0}
    plain = client.chat.completions.create(**args).choices[0].message.content
    rewarded = client.chat.completions.create(**args, frequency_penalty=-2, presence_penalty=-2)
    encode = gateway["tokenizer"].encode
    plain_tokens = encode(plain, add_special_tokens=False)
    rewarded_tokens = encode(rewarded.choices[0].message.content, add_special_tokens=False)
    assert len(set(plain_tokens)) == len(plain_tokens)
    assert len(set(rewarded_tokens)) < len(rewarded_tokens) / 2


@pytest.mark.parametrize(
    ("bias", "needle"),
    [({"banana": 5}, "not a token id"), ({"-3": 5}, "not a token id"), ({"99999999": 5}, "vocabulary")],
)
def test_a_logit_bias_naming_no_token_is_a_400(gateway: dict, bias: dict, needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _client(gateway).chat.completions.create(model="tuneloop", messages=ASK, logit_bias=bias)
    assert refused.value.param == "logit_bias" and needle in refused.value.message


def test_metadata_is_stored_with_the_interaction(gateway: dict) -> None:
    completion = _client(gateway).chat.completions.create(
        model="tuneloop",
        messages=ASK,
        max_tokens=2,
        presence_penalty=0.5,
        metadata={"session_id": "s-1", "feature": "search"},
    )
    headers = {"Authorization": f"Bearer {gateway['key']}"}
    stored = httpx.get(f"{gateway['url']}/v1/interactions/{completion.id}", headers=headers).json()
    assert stored["metadata"] == {"session_id": "s-1", "feature": "search"}
    assert stored["session"] == "s-1" and stored["decoding"]["presence_penalty"] == 0.5


def test_the_upstream_is_sent_penalties_and_biases_only_when_set() -> None:
    upstream = FakeVLLM()

    async def scenario(backend):
        await backend.generate(GenerationRequest(messages=ASK))
        await backend.generate(
            GenerationRequest(messages=ASK, presence_penalty=1, frequency_penalty=-1, logit_bias={7: -100})
        )

    run(scenario, upstream)
    plain, steered = (body for path, body in upstream.calls if path == "/chat/completions")
    assert not {"presence_penalty", "frequency_penalty", "logit_bias"} & set(plain)
    assert steered["presence_penalty"] == 1 and steered["frequency_penalty"] == -1
    assert steered["logit_bias"] == {"7": -100}
