"""`developer` messages reach the model as one system message, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.serve.test_backend_openai_upstream import FakeVLLM, run
from tuneloop.serve.backends.base import GenerationRequest, system_roles
from tuneloop.serve.backends.embedded import EmbeddedBackend

USER = {"role": "user", "content": "Say hi."}


def test_developer_becomes_system_and_leading_system_messages_merge() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in French."},
        USER,
        {"role": "developer", "content": "Later note."},
    ]
    assert system_roles(messages) == [
        {"role": "system", "content": "Be brief.\n\nAnswer in French."},
        USER,
        {"role": "system", "content": "Later note."},
    ]


@pytest.mark.parametrize("messages", [[USER], [{"role": "system", "content": "x"}, USER]])
def test_messages_without_developer_are_unchanged(messages: list[dict]) -> None:
    assert system_roles(messages) == messages


def _prompt_tokens(model_dir: Path, conversations: list[list[dict]]) -> list[int]:
    async def main() -> list[int]:
        async with EmbeddedBackend(model_dir) as backend:
            requests = [GenerationRequest(messages=m, max_tokens=1, temperature=0) for m in conversations]
            return [(await backend.generate(r)).prompt_tokens for r in requests]

    return asyncio.run(main())


def test_the_embedded_template_renders_developer_as_its_system_prompt(tiny_model: Path) -> None:
    developer = [{"role": "developer", "content": "Be brief."}, USER]
    system = [{"role": "system", "content": "Be brief."}, USER]
    both = [{"role": "system", "content": "Be"}, {"role": "developer", "content": "brief."}, USER]
    # Rendered raw, `developer` would also bring SmolLM2's default system prompt: many more tokens.
    developer_tokens, system_tokens, both_tokens = _prompt_tokens(tiny_model, [developer, system, both])
    assert developer_tokens == system_tokens
    assert both_tokens <= system_tokens + 2  # one system turn: only the joining blank line is added


def test_the_upstream_is_sent_system_instead_of_developer() -> None:
    upstream = FakeVLLM()

    async def scenario(backend):
        await backend.generate(
            GenerationRequest(messages=[{"role": "developer", "content": "Be brief."}, USER])
        )

    run(scenario, upstream)
    assert upstream.calls[-1][1]["messages"] == [{"role": "system", "content": "Be brief."}, USER]
