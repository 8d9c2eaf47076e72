"""A version's repetition penalty: the embedded backend applies it as transformers does; vLLM is sent it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.serve.test_backend_openai_upstream import FakeVLLM, run
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.embedded import EmbeddedBackend

ASK = [{"role": "user", "content": "Repeat the word hello ten times."}]


def _greedy(model_dir: Path, penalties: list[float]) -> list[str]:
    async def main() -> list[str]:
        async with EmbeddedBackend(model_dir) as backend:
            requests = [
                GenerationRequest(messages=ASK, max_tokens=16, temperature=0, repetition_penalty=p)
                for p in penalties
            ]
            return [(await backend.generate(r)).text for r in requests]

    return asyncio.run(main())


def _reference(model_dir: Path, penalty: float) -> str:
    """Greedy text from transformers' generate with its RepetitionPenaltyLogitsProcessor."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = tokenizer.apply_chat_template(ASK, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, max_new_tokens=16, do_sample=False, repetition_penalty=penalty)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
def test_repetition_penalty_matches_transformers_and_stops_the_loop(base_model: Path) -> None:
    plain, penalized = _greedy(base_model, [1.0, 1.5])
    assert plain.lower().count("hello") >= 4  # the model left alone repeats itself
    assert penalized != plain and penalized.lower().count("hello") < plain.lower().count("hello")
    assert penalized == _reference(base_model, 1.5)


def test_the_upstream_backend_sends_a_penalty_only_when_one_is_set() -> None:
    upstream = FakeVLLM()

    async def scenario(backend):
        for penalty in (1.0, 1.2):
            await backend.generate(GenerationRequest(messages=ASK, repetition_penalty=penalty))

    run(scenario, upstream)
    plain, penalized = (body for path, body in upstream.calls if path == "/chat/completions")
    # vLLM's extension: a plain OpenAI upstream never sees the field unless a version asks for it.
    assert "repetition_penalty" not in plain and penalized["repetition_penalty"] == 1.2
