"""LlamaIndex's `OpenAILike` pointed at tuneloop's gateway over real HTTP, to an upstream stand-in: chat,
streaming chat and completion answer, and every call is captured as an interaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from tests.serve.openai_standin import TEXT, gateway_over_standin, stored_interaction


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with gateway_over_standin(tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def _llm(gw: dict, *, chat: bool = True) -> OpenAILike:
    return OpenAILike(
        model="tuneloop",
        api_base=f"{gw['url']}/v1",
        api_key=gw["key"],
        is_chat_model=chat,
        context_window=8192,
        max_retries=0,
    )


def test_openai_like_chat_answers_and_is_captured(gateway: dict) -> None:
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Offsite?")]
    answer = _llm(gateway).chat(messages)
    assert answer.message.content == TEXT
    stored = stored_interaction(gateway, answer.raw.id)
    assert stored["response"] == TEXT and [m["role"] for m in stored["messages"]] == ["system", "user"]

    chunks = list(_llm(gateway).stream_chat(messages))
    assert "".join(c.delta or "" for c in chunks) == TEXT
    assert stored_interaction(gateway, chunks[-1].raw.id)["response"] == TEXT


def test_openai_like_completion_is_captured(gateway: dict) -> None:
    answer = _llm(gateway, chat=False).complete("The team offsite is in")
    assert answer.text
    assert stored_interaction(gateway, answer.raw.id)["response"] == answer.text
