"""A prompt longer than the model's context gets OpenAI's `context_length_exceeded` error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.live import live_server
from tests.serve.test_backend_openai_upstream import run
from tuneloop import Settings
from tuneloop.errors import BadRequest
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.store.repository import Store


@pytest.fixture(scope="module")
def client(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    with live_server(settings) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    store.close()


def test_a_prompt_past_the_context_is_refused_with_openais_code(client: openai.OpenAI) -> None:
    long = " ".join(["word"] * 3000)  # the tiny model reads 2048 positions
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tuneloop", messages=[{"role": "user", "content": long}])
    assert refused.value.code == "context_length_exceeded" and refused.value.param == "messages"
    assert "maximum context length is 2047 tokens" in refused.value.message


def test_a_prompt_within_the_context_is_still_answered(client: openai.OpenAI) -> None:
    short = " ".join(["word"] * 1500)
    completion = client.chat.completions.create(
        model="tuneloop", messages=[{"role": "user", "content": short}], max_tokens=2
    )
    assert completion.usage.prompt_tokens > 1500


def test_the_upstreams_context_error_is_passed_through() -> None:
    vllm_words = (
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
        "(4990 in the messages, 10 in the completion). Please reduce the length of the messages."
    )

    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        # vLLM sends no code with this error.
        return httpx.Response(400, json={"error": {"message": vllm_words, "type": "BadRequestError"}})

    async def scenario(backend):
        with pytest.raises(BadRequest) as refused:
            await backend.generate(GenerationRequest(messages=[{"role": "user", "content": "long"}]))
        return refused.value

    error = run(scenario, upstream)
    assert (error.code, error.param) == ("context_length_exceeded", "messages")
    assert vllm_words in error.message
