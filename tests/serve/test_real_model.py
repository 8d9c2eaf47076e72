"""The gateway on the real embedded SmolLM2-135M-Instruct gives a sensible answer to a simple question."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.store.repository import Store


@pytest.mark.slow
def test_smollm2_through_the_gateway_knows_the_capital_of_france(base_model: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, model=str(base_model), max_batch_size=2)
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme", redaction="off")
    store.close()
    with live_server(settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        completion = client.chat.completions.create(
            model="tuneloop",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=16,
        )
    answer = completion.choices[0].message.content
    assert "Paris" in answer, answer
    assert completion.model == base_model.name
