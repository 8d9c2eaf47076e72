"""The embedded backend on a tiny random Llama: batching, streaming, resident adapters, backpressure."""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tuneloop.errors import BadRequest, NotFound, Overloaded
from tuneloop.model_files import ensure_base_model
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.embedded import EmbeddedBackend


@pytest.fixture(scope="session")
def tiny(tiny_model: Path) -> Path:
    return tiny_model


@pytest.fixture(scope="session")
def adapters(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random LoRA adapters with non-zero B matrices, so each visibly changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for seed, name in enumerate(["a", "b"]):
        torch.manual_seed(seed + 1)
        model = AutoModelForCausalLM.from_pretrained(tiny)
        config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        path = tmp_path_factory.mktemp(f"adapter-{name}")
        get_peft_model(model, config).save_pretrained(path)
        out[name] = path
    return out


def ask(text: str, **kw) -> GenerationRequest:
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kw)


def run(scenario, model_dir: Path, **kw):
    """Run `scenario(backend)` against a started backend, closing it afterwards."""

    async def main():
        async with EmbeddedBackend(model_dir, **kw) as backend:
            return await scenario(backend)

    return asyncio.run(main())


def reference_text(model_dir: Path, adapter: Path | None, prompt: str, max_tokens: int) -> str:
    """Greedy text from a fresh model holding only `adapter` (or none), via transformers' own generate."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.eval().generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False)
    return tokenizer.decode(
        out[0, ids.shape[1] :], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )


def test_generate_returns_text_and_token_counts(tiny: Path) -> None:
    async def scenario(backend):
        return await backend.generate(ask("hello", max_tokens=7))

    completion = run(scenario, tiny)
    assert completion.text and completion.choices[0].finish_reason == "length"
    assert completion.completion_tokens == 7 and completion.prompt_tokens > 5
    assert completion.text == reference_text(tiny, None, "hello", 7)


def test_concatenated_stream_equals_generated_text_at_temperature_zero(tiny: Path) -> None:
    async def scenario(backend):
        full = await backend.generate(ask("tell me a story", max_tokens=20))
        stream = await backend.stream(ask("tell me a story", max_tokens=20))
        deltas = [d async for d in stream]
        return full, deltas, stream.completion

    full, deltas, completion = run(scenario, tiny)
    assert len(deltas) > 3
    assert "".join(deltas) == full.text == completion.text
    assert completion.completion_tokens == 20


def test_stop_string_truncates_and_never_leaks_into_the_stream(tiny: Path) -> None:
    async def scenario(backend):
        full = (await backend.generate(ask("tell me a story", max_tokens=20))).text
        stop = full[len(full) // 2 : len(full) // 2 + 3]
        cut = await backend.generate(ask("tell me a story", max_tokens=20, stop=[stop]))
        stream = await backend.stream(ask("tell me a story", max_tokens=20, stop=[stop]))
        streamed = "".join([d async for d in stream])
        return full, stop, cut, streamed

    full, stop, cut, streamed = run(scenario, tiny)
    assert cut.text == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert streamed == cut.text


def test_a_character_cut_by_max_tokens_is_left_out_not_answered_as_a_replacement_character(
    tiny: Path,
) -> None:
    from transformers import AutoTokenizer

    first_byte = AutoTokenizer.from_pretrained(tiny).convert_tokens_to_ids("Ã")  # 0xC3, é's first byte
    cut = ask("hello", max_tokens=1, logit_bias={first_byte: 100})
    full, deltas, completion = run(whole_and_streamed(cut), tiny)
    assert full.text == "" and full.completion_tokens == 1
    assert deltas == [] and completion.text == ""


def whole_and_streamed(request: GenerationRequest):
    """A scenario for `run`: `request` answered whole, then streamed (its deltas and its completion)."""

    async def scenario(backend):
        full = await backend.generate(request)
        stream = await backend.stream(request)
        return full, [d async for d in stream], stream.completion

    return scenario


def test_concurrent_requests_are_batched_and_match_solo_answers(tiny: Path) -> None:
    prompts = [f"question number {i} " * (i + 1) for i in range(6)]

    async def scenario(backend):
        together = await asyncio.gather(*(backend.generate(ask(p)) for p in prompts))
        alone = [await backend.generate(ask(p)) for p in prompts]
        return together, alone

    together, alone = run(scenario, tiny, max_batch_size=4)
    assert [c.text for c in together] == [c.text for c in alone]


def test_same_seed_gives_same_sampled_text(tiny: Path) -> None:
    async def scenario(backend):
        req = dict(temperature=1.0, top_p=0.9, max_tokens=15)
        first = await backend.generate(ask("hi", seed=7, **req))
        again = await backend.generate(ask("hi", seed=7, **req))
        other = await backend.generate(ask("hi", seed=8, **req))
        choices = await backend.generate(ask("hi", seed=7, n=2, **req))
        return first, again, other, choices

    first, again, other, choices = run(scenario, tiny)
    assert first.text == again.text
    assert first.text != other.text
    assert choices.choices[0].text == first.text and len(choices.choices) == 2


def test_resident_adapters_each_match_a_model_holding_only_that_adapter(
    tiny: Path, adapters: dict[str, Path]
) -> None:
    prompt = "what should I cook tonight?"

    async def scenario(backend):
        before = (await backend.generate(ask(prompt))).text
        await backend.load_adapter("a", adapters["a"])
        await backend.load_adapter("b", adapters["b"])
        assert backend.adapters == ["a", "b"]
        # One mixed batch: base, a and b decode together.
        mixed = await asyncio.gather(
            backend.generate(ask(prompt, adapter="a")),
            backend.generate(ask(prompt)),
            backend.generate(ask(prompt, adapter="b")),
        )
        await backend.unload_adapter("a")
        with pytest.raises(NotFound):
            await backend.generate(ask(prompt, adapter="a"))
        still_b = (await backend.generate(ask(prompt, adapter="b"))).text
        await backend.unload_adapter("b")
        after = (await backend.generate(ask(prompt))).text
        return before, [c.text for c in mixed], still_b, after

    before, (on_a, on_base, on_b), still_b, after = run(scenario, tiny)
    assert on_a == reference_text(tiny, adapters["a"], prompt, 12)
    assert on_b == reference_text(tiny, adapters["b"], prompt, 12) == still_b
    assert before == on_base == after == reference_text(tiny, None, prompt, 12)
    assert len({on_a, on_b, on_base}) == 3


def test_unloading_an_adapter_waits_for_its_running_requests(tiny: Path, adapters: dict[str, Path]) -> None:
    async def scenario(backend):
        await backend.load_adapter("a", adapters["a"])
        stream = await backend.stream(ask("tell me a story", max_tokens=20, adapter="a"))
        first = await stream.__anext__()
        await backend.unload_adapter("a")  # returns once the stream above has finished with it
        rest = "".join([d async for d in stream])
        return first + rest, backend.adapters

    text, remaining = run(scenario, tiny)
    assert text == reference_text(tiny, adapters["a"], "tell me a story", 20)
    assert remaining == []


def test_full_queue_raises_overloaded_at_once(tiny: Path) -> None:
    async def scenario(backend):
        running = await backend.stream(ask("long", max_tokens=1500))
        await running.__anext__()  # admitted: it now holds the only batch slot
        waiting = await backend.stream(ask("next", max_tokens=1))  # fills the queue of one
        start = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            await backend.stream(ask("one too many"))
        elapsed = time.perf_counter() - start
        await running.aclose()
        answer = "".join([d async for d in waiting])
        return elapsed, info.value, answer

    elapsed, error, answer = run(scenario, tiny, max_batch_size=1, max_queue=1)
    assert elapsed < 0.5 and error.retry_after >= 1 and error.status == 503
    assert answer


def test_one_tenant_cannot_fill_the_whole_queue(tiny: Path) -> None:
    async def scenario(backend):
        running = await backend.stream(ask("long", max_tokens=1500, owner="heavy"))
        await running.__anext__()  # admitted: it now holds the only batch slot
        waiting = [await backend.stream(ask("next", max_tokens=1, owner="heavy")) for _ in range(3)]
        with pytest.raises(Overloaded) as refused:  # its share of 4 is 3
            await backend.stream(ask("more", max_tokens=1, owner="heavy"))
        other = await backend.stream(ask("hello", max_tokens=1, owner="quiet"))  # the quarter kept open
        await running.aclose()
        return refused.value, [[d async for d in w] for w in waiting], [d async for d in other]

    refused, waiting, other = run(scenario, tiny, max_batch_size=1, max_queue=4)
    assert refused.status == 503 and "this tenant" in str(refused)
    assert all(waiting) and other


@pytest.mark.parametrize("how", ["aclose", "abandon"])
def test_cancelled_stream_frees_its_slot(tiny: Path, how: str) -> None:
    async def scenario(backend):
        stream = await backend.stream(ask("long", max_tokens=2000))
        await stream.__anext__()
        if how == "aclose":
            await stream.aclose()
        else:  # the consumer just goes away (a dropped HTTP client)
            del stream
            gc.collect()
        start = time.perf_counter()
        answer = await asyncio.wait_for(backend.generate(ask("short", max_tokens=3)), timeout=30)
        return time.perf_counter() - start, answer

    elapsed, answer = run(scenario, tiny, max_batch_size=1, max_queue=4)
    assert answer.completion_tokens == 3
    assert elapsed < 2.0  # not waiting for the 2000-token stream to run out


def test_a_tenant_cannot_hold_every_slot_while_another_waits(tiny: Path) -> None:
    """One tenant's n=4 request, alone, takes all 4 slots; another tenant's short request then takes one of
    them back at once instead of waiting out the long answers, which resume where they stopped."""
    endless = {0: -100.0, 1: -100.0, 2: -100.0}  # SmolLM2's end tokens banned: every choice runs on
    long = ask("write a long story", n=4, max_tokens=300, logit_bias=endless, owner="alpha")

    async def scenario(backend):
        hog = asyncio.create_task(backend.generate(long))
        await asyncio.sleep(0)  # queued
        while backend.queued:  # until all four hold a slot
            await asyncio.sleep(0.01)
        short = await asyncio.wait_for(backend.generate(ask("hi", max_tokens=3, owner="beta")), 30)
        still_running = not hog.done()
        return short, still_running, await hog, await backend.generate(replace(long, n=1))

    short, still_running, hogged, alone = run(scenario, tiny, max_batch_size=4)
    assert short.completion_tokens == 3 and still_running
    # Greedy: the choice taken out and resumed says what the others and a lone answer say.
    assert [c.text for c in hogged.choices] == [alone.text] * 4
    assert hogged.completion_tokens == 4 * 300


def test_invalid_requests_are_rejected_with_the_offending_field(tiny: Path) -> None:
    async def scenario(backend):
        with pytest.raises(NotFound) as unknown:
            await backend.generate(ask("hi", adapter="nope"))
        with pytest.raises(BadRequest) as too_long:
            await backend.generate(ask("word " * 3000))
        with pytest.raises(BadRequest) as bad_n:
            await backend.stream(ask("hi", n=2))
        return unknown.value, too_long.value, bad_n.value

    unknown, too_long, bad_n = run(scenario, tiny)
    assert unknown.param == "model" and too_long.param == "messages" and bad_n.param == "n"


@pytest.mark.slow
def test_real_model_knows_the_capital_of_france(models_dir: Path) -> None:
    async def scenario(backend):
        return await backend.generate(ask("What is the capital of France?", max_tokens=24))

    completion = run(scenario, ensure_base_model(models_dir))
    assert "Paris" in completion.text


def test_resident_adapters_beyond_the_limit_evict_the_least_recently_used(
    tiny: Path, adapters: dict[str, Path]
) -> None:
    async def scenario(backend):
        await backend.load_adapter("t1/v1", adapters["a"])
        await backend.load_adapter("t2/v1", adapters["b"])
        await backend.generate(ask("hi", max_tokens=1, adapter="t1/v1"))  # t2/v1 is now the least recent
        await backend.load_adapter("t3/v1", adapters["a"])
        after_third = backend.adapters
        with pytest.raises(NotFound):
            await backend.generate(ask("hi", max_tokens=1, adapter="t2/v1"))
        await backend.load_adapter("t2/v1", adapters["b"])  # comes back on its next use
        return after_third, backend.adapters, (await backend.generate(ask("hi", adapter="t2/v1"))).text

    after_third, after_reload, text = run(scenario, tiny, max_adapters=2)
    assert after_third == ["t1/v1", "t3/v1"]
    assert after_reload == ["t2/v1", "t3/v1"]
    assert text == reference_text(tiny, adapters["b"], "hi", 12)


def test_long_prompts_are_prefilled_a_budget_at_a_time_so_running_rows_advance_between() -> None:
    """One request of 8 long prompts used to be prefilled whole before another tenant's prompt or any running
    row's next token."""
    from collections import Counter, deque

    from tuneloop.serve.backends.batching import Sequence
    from tuneloop.serve.backends.scheduling import PREFILL_BUDGET, admissible

    def row(tokens: int, owner: str = "a", cancelled: bool = False) -> Sequence:
        seq = Sequence(prompt_ids=[1] * tokens, adapter="", max_tokens=1, emit=print, owner=owner)
        seq.cancelled = cancelled
        return seq

    long = PREFILL_BUDGET // 2 + 1
    pending = deque([row(5, cancelled=True), row(long), row(long), row(long), row(20, owner="b")])
    first = admissible(pending, room=8, served=Counter(), held=Counter())
    # The other tenant's short prompt goes in with the first long one, not after all three.
    assert [(s.owner, len(s.prompt_ids)) for s in first] == [("a", long), ("b", 20)]
    assert len(pending) == 2  # the cancelled one is dropped
    # A tenant with rows running (or just prefilled) waits behind one with none, whatever came first.
    pending = deque([row(long), row(long), row(long, owner="b")])
    assert [s.owner for s in admissible(pending, room=8, served=Counter(a=1), held=Counter(a=1))] == ["b"]
    assert (
        len(admissible(deque([row(PREFILL_BUDGET * 3)]), room=8, served=Counter(), held=Counter())) == 1
    )  # alone, goes in
    assert (
        len(admissible(deque([row(10)] * 20), room=8, served=Counter(), held=Counter())) == 8
    )  # short ones fill the room
    assert admissible(deque([row(10)]), room=0, served=Counter(), held=Counter()) == []


def test_past_its_fair_share_a_tenant_gets_slots_only_when_no_other_tenant_waits() -> None:
    from collections import Counter, deque

    from tuneloop.serve.backends.batching import Sequence
    from tuneloop.serve.backends.scheduling import admissible, preemptible

    def rows(owner: str, count: int, pos: int = 0) -> list[Sequence]:
        out = [
            Sequence(prompt_ids=[1] * 4, adapter="", max_tokens=1, emit=print, owner=owner)
            for _ in range(count)
        ]
        for seq in out:
            seq.pos = pos
        return out

    # 8 slots, two tenants: a share of 4 each. "a" holds 3 and waits with 6 more, "b" waits with 1.
    taken = admissible(deque(rows("a", 6) + rows("b", 1)), room=5, served=Counter(), held=Counter(a=3))
    assert [s.owner for s in taken] == ["a", "b", "a", "a", "a"]  # the room left after b still goes to a
    # "a" holds all 8; "b" waits with 2: two of a's rows go, those that fed the model least.
    running = rows("a", 6, pos=50) + rows("a", 2, pos=10)
    assert preemptible(deque(rows("b", 2)), running, slots=8) == running[6:]
    # At its share no tenant loses a row, nor does a lone tenant.
    assert preemptible(deque(rows("b", 3)), rows("a", 4) + rows("b", 4), slots=8) == []
    assert preemptible(deque(rows("a", 3)), rows("a", 8), slots=8) == []
    assert preemptible(deque(rows("a", 3) + rows("b", 1)), [], slots=1) == []  # nothing running
