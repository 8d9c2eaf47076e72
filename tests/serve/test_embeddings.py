"""`/v1/embeddings`: the embedded MiniLM in OpenAI's shape, over real HTTP with the real openai client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.live import live_server
from tests.serve.test_backend_openai_upstream import run
from tuneloop import Settings
from tuneloop.errors import BadRequest
from tuneloop.signals.embeddings import embed
from tuneloop.store.repository import Store

TEXTS = ["The deploy failed at midnight.", "Bonjour tout le monde"]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    with live_server(settings) as url:
        yield {"url": url, "key": key}
    store.close()


def _client(server: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key=server["key"], max_retries=0)


def _post(server: dict, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or server['key']}"}
    return httpx.post(f"{server['url']}/v1/embeddings", json=body, headers=headers, timeout=60)


def test_the_sdk_gets_minilm_vectors_for_any_model_name(server: dict) -> None:
    # The SDK asks for base64 by default and decodes it; OpenAI's model names are answered by MiniLM.
    result = _client(server).embeddings.create(model="text-embedding-3-small", input=TEXTS)
    assert result.model == "all-MiniLM-L6-v2" and [d.index for d in result.data] == [0, 1]
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert got.shape == (2, 384)
    np.testing.assert_allclose(got, embed(TEXTS), atol=1e-5)
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(TEXTS)


def test_float_and_base64_encodings_carry_the_same_vector(server: dict) -> None:
    client = _client(server)
    as_float = client.embeddings.create(model="m", input=TEXTS[0], encoding_format="float")
    as_base64 = client.embeddings.create(model="m", input=TEXTS[0], encoding_format="base64")
    assert len(as_float.data) == 1
    # Asked for explicitly, base64 comes back undecoded: little-endian float32, as OpenAI sends it.
    decoded = np.frombuffer(base64.b64decode(as_base64.data[0].embedding), dtype="<f4")
    np.testing.assert_allclose(as_float.data[0].embedding, decoded, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": ["ok", ""]}, "input.1"),
        ({"model": "m", "input": ["ok", "\u200b\ufeff "]}, "input.1"),  # zero-width only: nothing to embed
        ({"model": "m", "input": [1, 2, 3]}, "input"),
        ({"model": "m", "input": [[1, 2], [3]]}, "input"),
        ({"model": "m", "input": "x", "dimensions": 1536}, "dimensions"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "input": "x", "extra": 1}, "extra"),
        ({"model": "m", "input": ["x"] * 2049}, "input"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(server: dict, body: dict, param: str) -> None:
    response = _post(server, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_an_unknown_key_is_refused(server: dict) -> None:
    assert _post(server, {"model": "m", "input": "x"}, key="tl-nope").status_code == 401


def test_the_upstream_backend_forwards_embeddings_as_they_are() -> None:
    sent = []

    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "chat-model"}]})
        sent.append(request.read())
        answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]}
        return httpx.Response(200, json={**answer, "model": "e5", "usage": {"prompt_tokens": 1}})

    async def scenario(backend):
        return await backend.embeddings({"model": "e5", "input": "x"})

    assert run(scenario, upstream)["data"][0]["embedding"] == [0.5]
    assert b'"model":"e5"' in sent[0].replace(b" ", b"")


def test_an_upstream_without_embeddings_is_a_400_naming_the_model() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "chat-model"}]})
        return httpx.Response(404, json={"detail": "Not Found"})

    async def scenario(backend):
        with pytest.raises(BadRequest) as refused:
            await backend.embeddings({"input": "x"})
        return refused.value

    error = run(scenario, upstream)
    assert error.param == "model" and "'chat-model'" in error.message
