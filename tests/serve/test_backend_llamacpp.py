"""The llama.cpp backend on the real embedded model: adapters converted to GGUF LoRA, slots, engine choice."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.random_lora import random_lora
from tests.serve.test_backend_embedded import whole_and_streamed
from tests.serve.test_idle_cores import write_stat
from tuneloop.config import Settings
from tuneloop.errors import BadRequest
from tuneloop.model_files import BASE_MODEL_NAME, gguf_of, load_tokenizer
from tuneloop.serve.app import make_backend
from tuneloop.serve.backends import llamacpp
from tuneloop.serve.backends.base import BASE, GenerationRequest
from tuneloop.serve.backends.batching import Sequence, run_to_end
from tuneloop.serve.backends.cores import IdleCores
from tuneloop.serve.backends.embedded import EmbeddedBackend
from tuneloop.serve.backends.llamacpp import PREFILL_CHUNK, LlamaCppBackend, LlamaCppBatch

PROMPTS = ["How do vaccines work?", "Write a haiku about autumn.", "What is a hash table?"]
SYSTEM = "You are the support assistant of a small bank. Answer in two sentences."


def ask(text: str, **kw) -> GenerationRequest:
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kw)


def run(scenario, base_model: Path, **kw):
    async def main():
        async with LlamaCppBackend(base_model, gguf_of(BASE_MODEL_NAME), **kw) as backend:
            return await scenario(backend)

    return asyncio.run(main())


def test_served_adapter_matches_the_trained_adapter_within_quantisation_tolerance(
    base_model: Path, real_adapter: Path
) -> None:
    """Teacher-forced over an answer, llama.cpp with the converted adapter picks the same next token as
    transformers with the PEFT adapter at >= 95 % of positions, its logits correlating >= 0.995. Both run the
    same Q4_1 weights (transformers dequantized); llama.cpp quantises activations to 8 bits, so greedy texts
    may part after a few dozen tokens. Without llama.cpp's rotary permutation it reaches about 0.82 / 0.97."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(model, real_adapter).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], tokenize=False, add_generation_prompt=True
    )
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)[0].tolist()
        expected = model(torch.tensor([ids])).logits[0].numpy()[len(prompt) - 1 : -1]
    config = json.loads((base_model / "config.json").read_text())
    batch = LlamaCppBatch(gguf_of(BASE_MODEL_NAME), tokenizer, {2}, config, slots=1, threads=2)
    try:
        batch.load_adapter("a", real_adapter)
        rows = batch.forward([(token, pos, 0, True) for pos, token in enumerate(ids)], {0: "a"})
    finally:
        batch.close()
    served = np.stack(rows)[len(prompt) - 1 : -1]
    agreement = float(np.mean(served.argmax(-1) == expected.argmax(-1)))
    correlation = float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(served, expected, strict=True)]))
    assert agreement >= 0.95 and correlation >= 0.995, (agreement, correlation)


def test_base_and_adapter_requests_at_once_each_get_what_they_get_alone(
    base_model: Path, real_adapter: Path
) -> None:
    """The base's row and the adapter's decode in one call, the bank routing each row; the base's answer is
    exactly its own. Each side runs on a fresh backend: a prompt served from a slot's cache may sum floats
    in another order."""

    async def each_alone(backend):
        await backend.load_adapter("a", real_adapter)
        return [(await backend.generate(ask(PROMPTS[0], adapter=a))).text for a in (None, "a")]

    async def at_once(backend):
        await backend.load_adapter("a", real_adapter)
        done = await asyncio.gather(*[backend.generate(ask(PROMPTS[0], adapter=a)) for a in (None, "a")])
        return [c.text for c in done]

    alone, together = run(each_alone, base_model), run(at_once, base_model)
    assert together[0] == alone[0]
    assert together[1] != alone[0] and alone[1] != alone[0]  # the adapter changes the answer


def test_more_requests_than_slots_all_finish_and_a_dropped_stream_frees_its_slot(base_model: Path) -> None:
    async def scenario(backend):
        stream = await backend.stream(ask(PROMPTS[0], max_tokens=200))
        await anext(stream)
        await stream.aclose()
        done = await asyncio.gather(*[backend.generate(ask(p, max_tokens=8)) for p in PROMPTS * 2])
        return [c.choices[0].finish_reason for c in done]

    assert run(scenario, base_model, max_batch_size=2) == ["length"] * 6


def test_a_tenant_holding_every_slot_gives_one_up_to_another_and_its_answers_stay_the_same(
    base_model: Path,
) -> None:
    endless = {0: -100.0, 1: -100.0, 2: -100.0}  # SmolLM2's end tokens banned: every choice runs on
    long = ask(PROMPTS[0], n=2, max_tokens=60, logit_bias=endless, owner="alpha")

    async def scenario(backend):
        hog = asyncio.create_task(backend.generate(long))
        await asyncio.sleep(0)  # queued
        while backend.queued:  # until both hold a slot
            await asyncio.sleep(0.01)
        short = await backend.generate(ask(PROMPTS[1], max_tokens=3, owner="beta"))
        still_running = not hog.done()
        return short, still_running, await hog

    short, still_running, hogged = run(scenario, base_model, max_batch_size=2)
    assert short.completion_tokens == 3 and still_running
    # Greedy: the choice taken out prefills its prompt and answer so far again, and goes on as the other.
    assert hogged.choices[0].text == hogged.choices[1].text and hogged.completion_tokens == 2 * 60


def test_streamed_deltas_add_up_to_the_answer_and_a_stop_string_ends_it(base_model: Path) -> None:
    async def scenario(backend):
        # Greedy answers agree only when computed alike: the same thread count (pinned below, not following
        # the idle cores) and the prompt's start read from a slot's cache each time, as the warm-up leaves it.
        await backend.generate(ask(PROMPTS[0], max_tokens=1))
        whole = await backend.generate(ask(PROMPTS[0], max_tokens=24))
        stream = await backend.stream(ask(PROMPTS[0], max_tokens=24))
        deltas = [d async for d in stream]
        stop = whole.text.split()[3]
        stopped = await backend.generate(ask(PROMPTS[0], max_tokens=24, stop=[stop]))
        return whole.text, "".join(deltas), stop, stopped

    whole, streamed, stop, stopped = run(scenario, base_model, threads=2)
    assert streamed == whole
    assert stopped.text == whole[: whole.index(stop)] and stopped.choices[0].finish_reason == "stop"


def test_a_character_cut_by_max_tokens_is_left_out_not_answered_as_a_replacement_character(
    base_model: Path,
) -> None:
    first_byte = load_tokenizer(base_model).convert_tokens_to_ids("Ã")  # 0xC3, é's first byte
    cut = ask(PROMPTS[0], max_tokens=1, logit_bias={first_byte: 100})
    full, deltas, completion = run(whole_and_streamed(cut), base_model)
    assert full.text == "" and full.completion_tokens == 1
    assert deltas == [] and completion.text == ""


def test_a_prompt_past_a_slots_context_is_refused_in_openais_words(base_model: Path) -> None:
    async def scenario(backend):
        with pytest.raises(BadRequest) as err:
            await backend.generate(ask("word " * 3000))
        return err.value

    error = run(scenario, base_model)
    assert error.code == "context_length_exceeded" and "maximum context length is 2047" in str(error)


def test_an_adapter_llamacpp_cannot_apply_is_refused(base_model: Path, tmp_path: Path) -> None:
    head = random_lora(base_model, tmp_path / "head", ["lm_head"])

    async def scenario(backend):
        with pytest.raises(BadRequest, match="lm_head"):
            await backend.load_adapter("head", head)
        return backend.adapters

    assert run(scenario, base_model) == []


def test_an_adapter_for_another_model_is_refused_and_the_loaded_ones_keep_serving(
    base_model: Path, tiny_model: Path, real_adapter: Path, tmp_path: Path
) -> None:
    foreign = random_lora(tiny_model, tmp_path / "foreign")

    async def scenario(backend):
        await backend.load_adapter("a", real_adapter)
        before = (await backend.generate(ask(PROMPTS[2], adapter="a"))).text
        with pytest.raises(BadRequest, match="does not fit the base model"):
            await backend.load_adapter("foreign", foreign)
        return before, (await backend.generate(ask(PROMPTS[1], adapter="a"))).text, backend.adapters

    before, after, adapters = run(scenario, base_model)
    assert adapters == ["a"] and before and after


def test_an_adapter_missing_half_of_a_pair_is_refused_naming_it(
    base_model: Path, real_adapter: Path, tmp_path: Path
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from tuneloop.serve.backends.gguf_lora import lora_tensors

    half = tmp_path / "half"
    shutil.copytree(real_adapter, half)
    weights = load_file(str(half / "adapter_model.safetensors"))
    del weights[next(k for k in weights if "layers.3." in k and "q_proj.lora_A" in k)]
    save_file(weights, str(half / "adapter_model.safetensors"))
    config = json.loads((base_model / "config.json").read_text())
    with pytest.raises(BadRequest, match="layer 3's q_proj needs one A and one B"):
        lora_tensors(half, config)


def test_auto_engine_is_llamacpp_for_a_model_with_a_gguf_file_and_transformers_otherwise(
    tiny_model: Path, tmp_path: Path
) -> None:
    def backend(**kw) -> EmbeddedBackend:
        return make_backend(Settings(home=tmp_path, **kw))

    assert type(backend()) is LlamaCppBackend
    assert type(backend(engine="transformers")) is EmbeddedBackend
    assert type(backend(model=str(tiny_model))) is EmbeddedBackend
    with pytest.raises(BadRequest, match=r"holds no \.gguf file"):
        backend(model=str(tiny_model), engine="llamacpp")


def test_unloading_an_adapter_returns_requests_for_it_to_the_base(
    base_model: Path, real_adapter: Path
) -> None:
    async def scenario(backend):
        await backend.load_adapter("a", real_adapter)
        await backend.generate(ask(PROMPTS[2], adapter="a"))
        await backend.unload_adapter("a")
        return (await backend.generate(ask(PROMPTS[2]))).text, backend.adapters

    text, adapters = run(scenario, base_model)
    assert adapters == [] and text


@contextmanager
def batches(base_model: Path, *slots: int) -> Iterator[list[LlamaCppBatch]]:
    """Batches of the real model with so many slots each (2 threads), closed afterwards."""
    made: list[LlamaCppBatch] = []
    try:
        for n in slots:
            made.append(LlamaCppBatch.for_model(base_model, gguf_of(BASE_MODEL_NAME), slots=n, threads=2))
        yield made
    finally:
        for batch in made:
            batch.close()


def greedy(
    batch: LlamaCppBatch, text: str, adapter: str = BASE, max_tokens: int = 16, chat: bool = True
) -> str:
    """One greedy answer to a system + user chat (or to `text` as it is), through `batch` on this thread."""

    if chat:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        text = batch.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    done: list[str] = []
    seq = Sequence(
        prompt_ids=batch.tokenizer(text, add_special_tokens=False)["input_ids"],
        adapter=adapter,
        max_tokens=max_tokens,
        emit=lambda item: done.append(item[1]) if item[0] == "done" else None,
    )
    run_to_end(batch, [seq], slots=1)
    return done[0]


def greedy_all(batch: LlamaCppBatch, asks: list[tuple[str, str]]) -> list[str]:
    """Greedy answers to (user text, adapter) system + user chats decoding together, in order."""
    done: dict[int, str] = {}
    seqs = []
    for i, (text, adapter) in enumerate(asks):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        prompt = batch.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        seqs.append(
            Sequence(
                prompt_ids=batch.tokenizer(prompt, add_special_tokens=False)["input_ids"],
                adapter=adapter,
                max_tokens=16,
                emit=lambda item, i=i: done.__setitem__(i, item[1]) if item[0] == "done" else None,
            )
        )
    run_to_end(batch, seqs, slots=len(seqs))
    return [done[i] for i in range(len(asks))]


def test_a_prompt_that_starts_like_a_finished_one_reuses_its_cache_and_answers_the_same(
    base_model: Path,
) -> None:
    with batches(base_model, 1, 1) as (warm, cold):
        greedy(warm, PROMPTS[0])
        assert warm.reused == 0
        answer = greedy(warm, PROMPTS[1])
        system_tokens = len(warm.tokenizer(SYSTEM, add_special_tokens=False)["input_ids"])
        assert warm.reused >= system_tokens
        assert answer == greedy(cold, PROMPTS[1])


def test_an_adapter_reloaded_under_the_same_name_never_reuses_the_old_ones_cache(
    base_model: Path, real_adapter: Path, tmp_path: Path
) -> None:
    other = random_lora(base_model, tmp_path / "other", seed=1)
    with batches(base_model, 1, 1) as (batch, fresh):
        batch.load_adapter("a", real_adapter)
        first = greedy(batch, PROMPTS[2], "a")
        batch.unload_adapter("a")
        batch.load_adapter("a", other)
        fresh.load_adapter("a", other)
        assert greedy(batch, PROMPTS[2], "a") == greedy(fresh, PROMPTS[2], "a") != first
        assert batch.reused == 0


@pytest.mark.parametrize("bank_size", [8, 1])
def test_rows_on_different_adapters_decode_in_one_call_and_each_answers_as_alone(
    base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bank_size: int
) -> None:
    """make setup's build puts adapters in banks (slot 0 the base): ranks 8 and 4 padded to one, the
    projections b leaves alone zero in its slot; with banks of one, a and b in two banks set together. Rows
    on the base, a and b in one call: each row's logits are exactly those of a batch holding it alone, as
    every row on a bank goes through the same per-row products whatever else the call holds."""
    monkeypatch.setattr(llamacpp, "BANK_SIZE", bank_size)
    a = random_lora(base_model, tmp_path / "a", seed=0, scale=0.05)
    b = random_lora(base_model, tmp_path / "b", targets=["q_proj", "v_proj"], seed=1, rank=4, scale=0.05)
    prompt = list(range(100, 116))
    with batches(base_model, 3, 1, 1, 1) as (together, *singles):
        together.load_adapter("a", a)
        together.load_adapter("b", b)
        assert len(together._banks) == (1 if bank_size == 8 else 2)
        tokens = [(token, pos, slot, True) for slot in range(3) for pos, token in enumerate(prompt)]
        rows = np.stack(together.forward(tokens, {0: BASE, 1: "a", 2: "b"})).reshape(3, len(prompt), -1)
        alone = []
        for batch, (name, path) in zip(singles, ((BASE, None), ("a", a), ("b", b)), strict=True):
            if path is not None:
                batch.load_adapter(name, path)
            alone.append(np.stack(batch.forward([(t, p, 0, True) for p, t in enumerate(prompt)], {0: name})))
    assert np.array_equal(rows[0], alone[0])
    for mixed, own in zip(rows[1:], alone[1:], strict=True):
        assert np.abs(own - alone[0]).max() > 0.1  # the adapter is applied
        assert np.array_equal(mixed, own)


def test_a_call_sets_at_most_banks_per_call_banks_and_the_rest_go_to_another(
    base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five adapters in banks of one: a step over all five (and the base) decodes the rows of four banks,
    the most llama.cpp's graph has room for, in one call and the fifth's in another."""
    monkeypatch.setattr(llamacpp, "BANK_SIZE", 1)
    names = [f"a{i}" for i in range(5)]
    with batches(base_model, 6) as (batch,):
        for i, name in enumerate(names):
            batch.load_adapter(name, random_lora(base_model, tmp_path / name, seed=i, scale=0.05))
        seqs = [Sequence([1, 2], adapter, 4, lambda item: None) for adapter in [BASE, *names]]
        calls = batch._calls(seqs)
        assert [[s.adapter for s in rows] for rows in calls] == [[BASE, *names[:4]], [names[4]]]
        answers = greedy_all(batch, [(PROMPTS[0], adapter) for adapter in [BASE, *names]])
    assert all(answers) and len(set(answers)) > 1


def test_without_banks_a_step_decodes_once_per_adapter_and_each_answers_as_alone(
    base_model: Path, real_adapter: Path
) -> None:
    """Another llama.cpp build has no adapter banks: each adapter is its own llama.cpp adapter, set for a
    call of its rows alone, so the answers are exactly each one's own."""
    with batches(base_model, 2, 1) as (together, alone):
        together._route = alone._route = None  # what _bank_router answers for another build
        together.load_adapter("a", real_adapter)
        alone.load_adapter("a", real_adapter)
        answers = greedy_all(together, [(PROMPTS[0], BASE), (PROMPTS[0], "a")])
        assert answers == [greedy(alone, PROMPTS[0], adapter) for adapter in (BASE, "a")]
        assert answers[0] != answers[1]
        together.unload_adapter("a")
        assert together.adapters == set()


def test_unloading_one_adapter_leaves_the_others_answers_as_they_were(
    base_model: Path, real_adapter: Path, tmp_path: Path
) -> None:
    """The bank is rebuilt without it and the remaining adapter moves to another slot."""
    other = random_lora(base_model, tmp_path / "b", seed=1)
    with batches(base_model, 1, 1) as (batch, fresh):
        batch.load_adapter("a", real_adapter)
        batch.load_adapter("b", other)
        fresh.load_adapter("b", other)
        greedy(batch, PROMPTS[1], "a")
        batch.unload_adapter("a")
        assert batch.adapters == {"b"}
        assert greedy(batch, PROMPTS[2], "b") == greedy(fresh, PROMPTS[2], "b")
        batch.unload_adapter("b")
        assert batch.adapters == set() and batch._banks == []
        assert greedy(batch, PROMPTS[2]) == greedy(fresh, PROMPTS[2])


def test_a_one_token_prompt_right_after_another_adapters_step_gets_its_own_weights(
    base_model: Path, real_adapter: Path
) -> None:
    """Same slot, same shape as the decode before it: llama.cpp 0.3.16 would reuse that decode's graph,
    adapter and all, unless the build drops the graph on a switch (make setup's) or reuse is off."""
    with batches(base_model, 1, 1) as (batch, fresh):
        batch.load_adapter("a", real_adapter)
        greedy(batch, "Hello", "a", max_tokens=2, chat=False)
        assert greedy(batch, "Hello", max_tokens=4, chat=False) == greedy(
            fresh, "Hello", max_tokens=4, chat=False
        )


def test_threads_follow_the_idle_cores_between_decodes_and_answers_stay_the_same(
    base_model: Path, tmp_path: Path
) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, 10, 10)
    cores = IdleCores(stat, every=0)
    batch = LlamaCppBatch.for_model(base_model, gguf_of(BASE_MODEL_NAME), slots=1, threads=cores)
    fixed = LlamaCppBatch.for_model(base_model, gguf_of(BASE_MODEL_NAME), slots=1, threads=1)
    try:
        expected = [greedy(fixed, text) for text in PROMPTS[:2]]
        write_stat(stat, 1010, 10)  # other processes kept every core busy
        assert greedy(batch, PROMPTS[0]) == expected[0]
        assert batch.threads == 1
        write_stat(stat, 1010, 1010)  # and then left them idle
        assert greedy(batch, PROMPTS[1]) == expected[1]
        assert batch.threads == cores.cores
    finally:
        batch.close()
        fixed.close()


def sequence(batch: LlamaCppBatch, text: str, max_tokens: int, done: list[str]) -> Sequence:
    """A greedy sequence over `text` as it is, whose final answer lands in `done`."""
    return Sequence(
        prompt_ids=batch.tokenizer(text, add_special_tokens=False)["input_ids"],
        adapter="__base__",
        max_tokens=max_tokens,
        emit=lambda item: done.append(item[1]) if item[0] == "done" else None,
    )


def running_row(batch: LlamaCppBatch, done: list[str]) -> Sequence:
    """A greedy answer to "Hello" admitted and stepped once, so it is decoding when the test goes on."""
    row = sequence(batch, "Hello", 200, done)
    batch.admit([row])
    batch.step()
    assert batch.rows == [row]
    return row


LONG = " ".join(f"Clause {i}: the customer may return any item within thirty days." for i in range(60))


def test_a_long_prompt_is_prefilled_a_chunk_a_step_while_running_rows_keep_decoding(
    base_model: Path,
) -> None:
    with batches(base_model, 2) as (batch,):
        done: list[str] = []
        short = running_row(batch, done)
        long = sequence(batch, LONG, 4, done)
        assert len(long.prompt_ids) > 3 * PREFILL_CHUNK
        batch.admit([long])
        filled = []
        while long in batch.filling:
            before = len(short.tokens)
            batch.step()
            assert len(short.tokens) == before + 1  # the running row got its token this step too
            filled.append(long.pos)
        assert len(filled) == -(-len(long.prompt_ids) // PREFILL_CHUNK)
        assert all(b - a <= PREFILL_CHUNK for a, b in zip([0, *filled], filled, strict=False))
        assert long in batch.rows and long.tokens  # prefilled: its first token is taken


def beside_a_running_row(batch: LlamaCppBatch, text: str, max_tokens: int) -> str:
    """The greedy answer to `text` as it is, admitted while another answer is being decoded (so its prompt
    is prefilled a chunk a step)."""
    done: list[str] = []
    running = running_row(batch, [])
    seq = sequence(batch, text, max_tokens, done)
    batch.admit([seq])
    while not done:
        batch.step()
    running.cancelled = True
    batch.drop_finished()
    return done[0]


def test_chunked_prefill_answers_as_prefilling_in_one_pass(
    base_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = LONG[:1500]
    with batches(base_model, 1) as (alone,):
        in_one_pass = greedy(alone, prompt, max_tokens=12, chat=False)  # nothing else runs: one call
    monkeypatch.setattr(llamacpp, "PREFILL_CHUNK", 16)
    with batches(base_model, 2) as (batch,):
        assert beside_a_running_row(batch, prompt, 12) == in_one_pass


def test_a_prompt_cancelled_while_it_fills_gives_back_its_slot(base_model: Path) -> None:
    with batches(base_model, 2) as (batch,):
        done: list[str] = []
        running = running_row(batch, done)
        long = sequence(batch, LONG, 4, done)
        batch.admit([long])
        batch.step()
        assert batch.filling == [long]
        long.cancelled = True
        batch.drop_finished()
        assert batch.active == [running]
        running.cancelled = True
        batch.drop_finished()
        assert greedy(batch, PROMPTS[0])  # a free slot again, its partial cache gone
        assert batch.reused == 0 and done == []


def test_with_no_answer_running_a_prompt_is_prefilled_in_one_call(base_model: Path) -> None:
    with batches(base_model, 1) as (batch,):
        long = sequence(batch, LONG, 4, [])
        batch.admit([long])
        batch.step()
        assert batch.rows == [long] and long.tokens


def test_a_long_cached_prompt_is_cut_to_what_running_answers_reach_and_still_serves_its_start(
    base_model: Path,
) -> None:
    """llama.cpp attends every row over as many cells as the fullest slot holds: a long prompt left cached
    in a free slot would slow every decode, so running answers cut it to the positions they reach."""
    with batches(base_model, 2, 2) as (batch, fresh):
        greedy(batch, LONG, max_tokens=4, chat=False)  # its prompt stays cached in its free slot
        answer = greedy(batch, "Hello there", max_tokens=8, chat=False)  # in the other slot
        assert batch.reused == 0
        again = greedy(batch, LONG, max_tokens=4, chat=False)
        assert 0 < batch.reused <= 16  # the start the cut cache kept, no more
        assert again == greedy(fresh, LONG, max_tokens=4, chat=False)
        assert answer == greedy(fresh, "Hello there", max_tokens=8, chat=False)


def test_setup_builds_llama_cpp_without_openmp() -> None:
    """`make setup` builds llama.cpp without OpenMP, whose barriers halve decoding beside PyTorch."""
    import llama_cpp

    assert b"OPENMP = 1" not in llama_cpp.llama_print_system_info()


def test_the_backend_sets_no_more_banks_at_once_than_the_build_gives_llama_cpps_graph_room_for() -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "build_llama_cpp.py"
    spec = importlib.util.spec_from_file_location("build_llama_cpp", script)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.BANKS_PER_CALL == llamacpp.BANKS_PER_CALL
    assert llamacpp.FIXED_BUILD.removeprefix("+") == build.LABEL


BF16_BETWEEN_DECODES = """
import json, sys
from pathlib import Path
import numpy as np, torch
from tuneloop.model_files import BASE_MODEL_NAME, gguf_of, load_tokenizer
from tuneloop.serve.backends.base import BASE
from tuneloop.serve.backends.llamacpp import LlamaCppBatch
base = Path(sys.argv[1])
config = json.loads((base / "config.json").read_text())
batch = LlamaCppBatch(gguf_of(BASE_MODEL_NAME), load_tokenizer(base), {2}, config, slots=1, threads=2)
tokens = [(token, pos, 0, True) for pos, token in enumerate(range(100, 140))]
first = np.stack(batch.forward(tokens, {0: BASE}))
a, b = torch.randn(256, 256), torch.randn(256, 256, requires_grad=True)
with torch.autocast("cpu", dtype=torch.bfloat16):
    (a @ b).sum().backward()
batch.close()
batch = LlamaCppBatch(gguf_of(BASE_MODEL_NAME), load_tokenizer(base), {2}, config, slots=1, threads=2)
print(np.array_equal(first, np.stack(batch.forward(tokens, {0: BASE}))))
"""


def test_pytorch_bf16_on_the_calling_thread_between_decodes_leaves_decoding_intact(base_model: Path) -> None:
    """On an AMX CPU PyTorch's bf16 kernels release the AMX tiles of the thread they run on; a llama.cpp
    decode on that thread afterwards died of an illegal instruction. In a child process: it would kill the
    test run."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", BF16_BETWEEN_DECODES, str(base_model)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


def test_make_setups_llama_cpp_build_is_the_fixed_one_so_graph_reuse_stays_on() -> None:
    import llama_cpp

    llamacpp.amx_cpu()  # initialises the module as the backend does
    assert llama_cpp.__version__.endswith(llamacpp.FIXED_BUILD)
    assert "LLAMA_GRAPH_REUSE_DISABLE" not in os.environ
