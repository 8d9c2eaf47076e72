"""The gate's model runner generating through llama.cpp when the base model has a GGUF file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tuneloop.evaluate.generation import Arm, Evaluator
from tuneloop.model_files import BASE_MODEL_NAME, gguf_of
from tuneloop.registry.composition import Decoding
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.llamacpp import LlamaCppBackend

PROMPTS = ["How do vaccines work?", "Write a haiku about autumn.", "What is a hash table?"]
SYSTEM = "You are a terse assistant."


def served(base_model: Path, adapter: Path | None, max_tokens: int) -> list[str]:
    """What the gateway's llama.cpp backend answers, greedily, with the arm's system prompt."""

    async def main() -> list[str]:
        async with LlamaCppBackend(base_model, gguf_of(BASE_MODEL_NAME)) as backend:
            if adapter is not None:
                await backend.load_adapter("a", adapter)
            answers = []
            for prompt in PROMPTS:
                messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
                req = GenerationRequest(messages, max_tokens, 0.0, adapter="a" if adapter else None)
                answers.append((await backend.generate(req)).text.strip())
            return answers

    return asyncio.run(main())


def test_an_arm_on_a_gguf_model_answers_as_the_llamacpp_gateway_serves_it(
    base_model: Path, real_adapter: Path
) -> None:
    """One prompt at a time on both sides: rows decoded together sum floats in another order in llama.cpp,
    which can flip a near-tie of this random adapter."""
    gguf = gguf_of(BASE_MODEL_NAME)
    evaluator = Evaluator(batch_size=1)
    capped = Decoding(max_tokens=12)
    evaluator.add_arm(Arm("candidate", base_model, real_adapter, SYSTEM, capped, gguf))
    evaluator.add_arm(Arm("production", base_model, None, SYSTEM, capped, gguf))
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    candidate = evaluator.generate("candidate", chats, max_new_tokens=40)
    production = evaluator.generate("production", chats, max_new_tokens=40)
    assert candidate == served(base_model, real_adapter, 12)
    assert production == served(base_model, None, 12)
    assert candidate != production


def test_scoring_split_into_passes_under_the_logits_budget_gives_the_same_figures(
    tiny_model: Path, tmp_path: Path, monkeypatch
) -> None:
    """Log-probabilities and KL are per answer: bounding a pass's logits changes memory, never the result."""
    from tests.random_lora import random_lora
    from tuneloop.evaluate import generation

    adapter = random_lora(tiny_model, tmp_path / "adapter")
    items = [
        ([{"role": "user", "content": p}], answer)
        for p, answer in zip(PROMPTS, ["Antigens.", "Leaves fall, red and gold, " * 3, "A map."], strict=True)
    ]

    def scored() -> tuple[list[float], list[float]]:
        evaluator = Evaluator(batch_size=16)
        evaluator.add_arm(Arm("candidate", tiny_model, adapter, SYSTEM, Decoding(), None))
        return evaluator.logprobs("candidate", items), evaluator.kl_from_base("candidate", items)

    whole = scored()
    monkeypatch.setattr(generation, "LOGITS_BUDGET", 1)  # every answer in a pass of its own
    split = scored()
    assert split[0] == pytest.approx(whole[0], abs=1e-4)
    assert split[1] == pytest.approx(whole[1], abs=1e-5)
    assert all(kl > 0 for kl in whole[1])


def test_margins_with_the_prompt_run_once_equal_the_two_answers_scored_apart(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A pair's packed row (prompt once, then both answers) gives the margins two separate passes give, for
    answers that share their first words and answers of different lengths, on an adapter and on the base."""
    from tests.random_lora import random_lora

    adapter = random_lora(tiny_model, tmp_path / "adapter")
    pairs = [
        ([{"role": "user", "content": p}], chosen, rejected)
        for p, chosen, rejected in zip(
            PROMPTS,
            ["Antigens trigger it.", "Leaves fall, red and gold, " * 3, "A map."],
            ["Antigens do not.", "No.", "A map of the world, drawn by hand, " * 2],
            strict=True,
        )
    ]
    for adapter_path in (adapter, None):
        packed, apart = Evaluator(batch_size=4), Evaluator(batch_size=4)
        for evaluator in (packed, apart):
            evaluator.add_arm(Arm("candidate", tiny_model, adapter_path, SYSTEM, Decoding(), None))
        margins = packed.margins("candidate", pairs)
        chosen = apart.logprobs("candidate", [(p, c) for p, c, _ in pairs])
        rejected = apart.logprobs("candidate", [(p, r) for p, _, r in pairs])
        assert margins == pytest.approx([c - r for c, r in zip(chosen, rejected, strict=True)], abs=1e-3)
        # Scored once, each answer's log-probability is what `logprobs` answers from then on.
        assert packed.logprobs("candidate", [(p, c) for p, c, _ in pairs]) == pytest.approx(chosen, abs=1e-3)
