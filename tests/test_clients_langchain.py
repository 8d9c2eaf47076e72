"""LangChain's OpenAI clients pointed at tuneloop over real HTTP: ChatOpenAI (plain, tools, and
`with_structured_output`) through the gateway to an upstream stand-in, and OpenAIEmbeddings on tuneloop's
embedded `/v1/embeddings`. Every chat call is captured as an interaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from tests.live import live_server
from tests.serve.openai_standin import TEXT, gateway_over_standin, stored_interaction
from tuneloop import Settings
from tuneloop.store.repository import Store


class Offsite(BaseModel):
    """Where and how long the team offsite is."""

    city: str
    days: int


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with gateway_over_standin(tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def _chat(gw: dict) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{gw['url']}/v1", api_key=gw["key"], model="tuneloop", max_retries=0)


def test_chat_openai_answers_and_each_call_is_captured(gateway: dict) -> None:
    answer = _chat(gateway).invoke([("system", "Be brief."), ("user", "Where is the offsite?")])
    assert answer.content == TEXT
    stored = stored_interaction(gateway, answer.response_metadata["id"])
    assert stored["response"] == TEXT and [m["role"] for m in stored["messages"]] == ["system", "user"]


def test_with_structured_output_parses_the_pydantic_model(gateway: dict) -> None:
    structured = _chat(gateway).with_structured_output(Offsite, include_raw=True)
    result = structured.invoke("Plan the team offsite.")
    assert result["parsed"] == Offsite(city="Lisbon", days=3)
    assert gateway["received"][-1]["response_format"]["json_schema"]["name"] == "Offsite"
    assert stored_interaction(gateway, result["raw"].response_metadata["id"])["response"]


def test_bound_tools_come_back_as_langchain_tool_calls(gateway: dict) -> None:
    message = _chat(gateway).bind_tools([Offsite]).invoke("Book the offsite.")
    assert message.tool_calls[0]["name"] == "Offsite"
    assert message.tool_calls[0]["args"] == {"city": "Lisbon", "days": 3}
    assert "Offsite" in stored_interaction(gateway, message.response_metadata["id"])["response"]


def test_openai_embeddings_read_tuneloops_embedded_model(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("a", redaction="off")
    with live_server(settings) as url:
        # tuneloop embeds text, not tiktoken ids: LangChain must send the strings as they are.
        embeddings = OpenAIEmbeddings(
            base_url=f"{url}/v1",
            api_key=key,
            model="text-embedding-3-small",
            check_embedding_ctx_length=False,
        )
        docs = embeddings.embed_documents(["reset my password", "change my password", "weather in Lisbon"])
        query = embeddings.embed_query("I forgot my password")
    store.close()
    assert len(docs) == 3 and len(query) == 384

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(query, docs[0]) > cosine(query, docs[2]) and cosine(query, docs[1]) > cosine(query, docs[2])
