"""In-process serving speed of the embedded backend: engines, batching, adapter switches, resident adapters.

Engines (the real SmolLM2-135M): raw llama.cpp (llama-cpp-python's `Llama`, the same GGUF file and threads),
tuneloop's llama.cpp backend and tuneloop's transformers backend, in rotating rounds so load from other
processes hits them alike: tokens/s at 1 and 8 concurrent users, time to first token (streaming, 1 user),
and tokens/s of 8 users with 8 adapters resident, all on one adapter and spread over the 8.

Prefill (llama.cpp backend): while one user streams, another sends a ~1,500-token prompt; the stream's
longest pause and the long prompt's first token, prefilled a chunk a step against in one pass.

Gateway (the transformers backend), per model (tiny random Llama, real SmolLM2-135M): total tokens/s at
1, 4 and 8 concurrent requests; the latency an adapter switch adds (ms); tokens/s of 8 concurrent requests
spread over 1, 2, 4 and 8 resident adapters; and the same work through the HTTP gateway (a `tuneloop serve`
subprocess, the official `openai` client), streaming and not, against in-process `generate`, with the
gateway's overhead as a share of generation time (target: at most 3%): in wall time (median of paired
runs, with its interquartile range) and in CPU time of both processes, which a busy machine does not skew.
Run: `.venv/bin/python benchmarks/serve.py [--sections engines,prefill,gateway] [--models tiny,real]
[--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tuneloop.config import Settings
from tuneloop.learn.job_config import DEFAULT_LORA
from tuneloop.model_files import BASE_MODEL_NAME, ensure_base_model, gguf_of, make_tiny_model
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.embedded import EmbeddedBackend
from tuneloop.serve.backends.llamacpp import LlamaCppBackend, amx_cpu
from tuneloop.store.repository import Store

PROMPTS = [
    "Explain what a hash table is.",
    "Write a haiku about autumn.",
    "Give me three tips for a job interview.",
    "What is the boiling point of water?",
    "Summarize the plot of Hamlet.",
    "How do vaccines work?",
    "Name some uses of Python.",
    "Why is the sky blue?",
]


def ask(i: int, max_tokens: int, adapter: str | None = None) -> GenerationRequest:
    content = PROMPTS[i % len(PROMPTS)]
    return GenerationRequest([{"role": "user", "content": content}], max_tokens, 0.0, adapter=adapter)


def make_adapters(model_dir: Path, count: int, out: Path) -> list[Path]:
    """`count` random LoRA adapters shaped as tuneloop trains them (non-zero B) for `model_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        config = LoraConfig(**DEFAULT_LORA, init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.05)  # non-zero but small: random full-size B would wreck the real model
        path = out / f"adapter-{i}"
        peft_model.save_pretrained(path)
        paths.append(path)
    return paths


async def throughput(backend: EmbeddedBackend, concurrency: int, max_tokens: int, adapters=None) -> float:
    """Total completion tokens/s of `concurrency` simultaneous requests (adapters assigned round-robin); one
    user asks every prompt in turn, as raw llama.cpp is measured, so both answer the same questions."""
    reqs = [ask(i, max_tokens, adapters[i % len(adapters)] if adapters else None) for i in range(concurrency)]
    start = time.perf_counter()
    if concurrency == 1:
        done = [await backend.generate(ask(i, max_tokens, reqs[0].adapter)) for i in range(len(PROMPTS))]
    else:
        done = await asyncio.gather(*(backend.generate(r) for r in reqs))
    return sum(c.completion_tokens for c in done) / (time.perf_counter() - start)


async def switch_cost_ms(backend: EmbeddedBackend, names: list[str], rounds: int) -> tuple[float, float]:
    """Median latency of a 1-token request on the same adapter vs. alternating adapters; returns both."""

    async def latency(adapter: str) -> float:
        start = time.perf_counter()
        await backend.generate(ask(0, 1, adapter))
        return (time.perf_counter() - start) * 1000

    same = [await latency(names[0]) for _ in range(rounds)]
    alternating = [await latency(names[i % 2]) for i in range(rounds)]
    return statistics.median(same), statistics.median(alternating)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A `tuneloop serve` subprocess on `model_dir`, with one tenant per redaction mode (redact, off)."""

    def __init__(self, model_dir: Path, home: Path) -> None:
        store = Store(f"sqlite:///{home / 'tuneloop.db'}")
        self.keys = {mode: store.create_tenant(mode, redaction=mode)[1] for mode in ("redact", "off")}
        store.close()
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_MODEL": str(model_dir)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneloop", "serve", "--port", self.url.rsplit(":", 1)[1]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        import httpx

        async with httpx.AsyncClient() as http:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise RuntimeError(f"`tuneloop serve` exited with {self.process.returncode}")
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("`tuneloop serve` did not start within 120 s")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def inprocess_step(backend: EmbeddedBackend, ids: range, max_tokens: int) -> tuple[float, int]:
    """Seconds and completion tokens of the requests `ids`, sent together, through `generate`."""
    start = time.perf_counter()
    done = await asyncio.gather(*(backend.generate(ask(i, max_tokens)) for i in ids))
    return time.perf_counter() - start, sum(c.completion_tokens for c in done)


async def gateway_step(client, ids: range, max_tokens: int, stream: bool) -> tuple[float, int]:
    """The same requests through the gateway with the official client; streams are read to the end."""

    async def one(i: int) -> int:
        args = {
            "model": "tuneloop",
            "messages": ask(i, max_tokens).messages,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if not stream:
            return (await client.chat.completions.create(**args)).usage.completion_tokens
        chunks = await client.chat.completions.create(
            **args, stream=True, stream_options={"include_usage": True}
        )
        used = 0
        async for chunk in chunks:
            used = chunk.usage.completion_tokens if chunk.usage else used
        return used

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in ids)))
    return time.perf_counter() - start, tokens


async def gateway_overhead(
    label: str, backend: EmbeddedBackend, gateway: Gateway, max_tokens: int, rounds: int
) -> list[tuple[str, str]]:
    """Tokens/s of in-process `generate` vs. the gateway on the same requests, and the gateway's overhead.

    Each step runs the same batch of requests once per mode, back to back in rotating order, so load from
    other processes hits the modes alike; the overhead is the median of the per-step paired ratios.
    """
    from openai import AsyncOpenAI

    clients = {
        mode: AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        for mode, key in gateway.keys.items()
    }
    modes = {
        "in-process generate": lambda ids: inprocess_step(backend, ids, max_tokens),
        "gateway, non-streaming": lambda ids: gateway_step(clients["redact"], ids, max_tokens, False),
        "gateway, streaming": lambda ids: gateway_step(clients["redact"], ids, max_tokens, True),
        "gateway, non-streaming, redaction off": lambda ids: gateway_step(
            clients["off"], ids, max_tokens, False
        ),
    }
    names = list(modes)
    for run in modes.values():
        await run(range(1))  # warm-up: first-request costs (imports, caches, connections) are not measured

    def cpu_now() -> float:
        # Both processes, all threads: CPU seconds do not stretch when other jobs take the cores.
        return time.process_time() + process_cpu_seconds(gateway.process.pid)

    rows: list[tuple[str, str]] = []
    for concurrency in (1, 4):
        seconds: dict[str, list[float]] = {m: [] for m in names}
        cpu: dict[str, float] = dict.fromkeys(names, 0.0)
        tokens: dict[str, list[int]] = {m: [] for m in names}
        steps = [
            range(f, f + concurrency) for _ in range(rounds) for f in range(0, len(PROMPTS), concurrency)
        ]
        for n, ids in enumerate(steps):
            for mode in names[n % len(names) :] + names[: n % len(names)]:
                cpu_start = cpu_now()
                took, used = await modes[mode](ids)
                cpu[mode] += cpu_now() - cpu_start
                seconds[mode].append(took)
                tokens[mode].append(used)
        if len({tuple(t) for t in tokens.values()}) != 1:
            print(f"warning: {label} c={concurrency}: token counts differ across modes", file=sys.stderr)
        base = names[0]
        for mode in names:
            name = f"{label}: c={concurrency} {mode}"
            rows.append((f"{name}: tokens/s", f"{sum(tokens[mode]) / sum(seconds[mode]):.1f}"))
            rows.append((f"{name}: CPU ms per token", f"{cpu[mode] * 1000 / sum(tokens[mode]):.1f}"))
            if mode == base:
                continue
            ratios = sorted((t - b) / b * 100 for t, b in zip(seconds[mode], seconds[base], strict=True))
            q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            rows.append(
                (
                    f"{name}: wall overhead %, median of {len(ratios)} pairs",
                    f"{median:+.1f} ({q1:+.1f}..{q3:+.1f})",
                )
            )
            rows.append((f"{name}: CPU overhead %", f"{(cpu[mode] - cpu[base]) / cpu[base] * 100:+.1f}"))
    for client in clients.values():
        await client.close()
    return rows


async def bench_model(
    label: str, model_dir: Path, max_tokens: int, work: Path, rounds: int
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    home = work / f"{label}-home"
    home.mkdir(parents=True)
    gateway = Gateway(model_dir, home)
    async with EmbeddedBackend(model_dir, max_batch_size=8) as backend:
        await backend.generate(ask(0, 2))  # warm-up
        try:
            await gateway.wait_ready()
            rows += await gateway_overhead(label, backend, gateway, max_tokens, rounds)
        finally:
            gateway.close()
        for c in (1, 4, 8):
            rows.append(
                (f"{label}: tokens/s at {c} concurrent", f"{await throughput(backend, c, max_tokens):.1f}")
            )
        paths = make_adapters(model_dir, 8, work / label)
        start = time.perf_counter()
        await backend.load_adapter("a0", paths[0])
        rows.append((f"{label}: load one adapter (ms)", f"{(time.perf_counter() - start) * 1000:.0f}"))
        for i, path in enumerate(paths[1:], start=1):
            await backend.load_adapter(f"a{i}", path)
        same, alternating = await switch_cost_ms(backend, ["a0", "a1"], rounds=11)
        rows.append((f"{label}: 1-token latency, same adapter (ms)", f"{same:.1f}"))
        rows.append((f"{label}: adapter switch cost (ms)", f"{alternating - same:+.1f}"))
        for k in (1, 2, 4, 8):
            names = [f"a{i}" for i in range(k)]
            tps = await throughput(backend, 8, max_tokens, names)
            rows.append((f"{label}: tokens/s, 8 concurrent over {k} adapters", f"{tps:.1f}"))
    return rows


async def first_token_ms(backend: EmbeddedBackend, i: int, max_tokens: int) -> float:
    """Milliseconds until the first streamed delta of one request (read to the end afterwards)."""
    start = time.perf_counter()
    async with await backend.stream(ask(i, max_tokens)) as stream:
        async for _ in stream:
            first = (time.perf_counter() - start) * 1000
            break
        async for _ in stream:
            pass
    return first


def raw_llama(gguf: Path, threads: int):
    """llama-cpp-python's own `Llama` on the GGUF file: the anchor the llama.cpp backend is held to."""
    from llama_cpp import Llama

    return Llama(str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)


def raw_round(llm, max_tokens: int) -> tuple[float, float]:
    """Raw llama.cpp's tokens/s over the prompts one at a time (it runs one sequence) and its median ms to
    the first streamed token."""
    tokens, seconds, firsts = 0, 0.0, []
    for content in PROMPTS:
        start = time.perf_counter()
        chunks = llm.create_chat_completion(
            [{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0, stream=True
        )
        for n, chunk in enumerate(chunks):
            if n == 1:  # the first chunk carries the role only
                firsts.append((time.perf_counter() - start) * 1000)
            tokens += bool(chunk["choices"][0]["delta"].get("content"))
        seconds += time.perf_counter() - start
    return tokens / seconds, statistics.median(firsts)


async def bench_engines(models_dir: Path, max_tokens: int, rounds: int, threads: int, work: Path) -> list:
    """Raw llama.cpp vs tuneloop's two in-process engines on the real model, in rotating rounds."""
    model_dir, gguf = ensure_base_model(models_dir), gguf_of(BASE_MODEL_NAME)
    adapters = make_adapters(model_dir, 8, work / "engines")
    engines = {
        "llama.cpp backend": LlamaCppBackend(model_dir, gguf, threads=threads, max_batch_size=8),
        "transformers backend": EmbeddedBackend(model_dir, threads=threads, max_batch_size=8),
    }
    llm = raw_llama(gguf, threads)
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    loads = []  # llama.cpp rebuilds its adapter bank on each load: the first and the last one's cost
    for name, backend in engines.items():
        await backend.start()
        for i, path in enumerate(adapters):
            start = time.perf_counter()
            await backend.load_adapter(f"a{i}", path)
            if i in (0, len(adapters) - 1):
                ms = (time.perf_counter() - start) * 1000
                loads.append((f"{name}: load adapter {i + 1} of {len(adapters)} (ms)", f"{ms:.0f}"))
        await backend.generate(ask(0, 2))  # warm-up
    raw_round(llm, 2)
    for r in range(rounds):
        order = ["raw", *engines][r % 3 :] + ["raw", *engines][: r % 3]
        for name in order:
            if name == "raw":
                tps, ttft = raw_round(llm, max_tokens)
                add("raw llama.cpp: tokens/s, 1 user", tps)
                add("raw llama.cpp: first token ms, 1 user", ttft)
                continue
            backend = engines[name]
            add(f"{name}: tokens/s, 1 user", await throughput(backend, 1, max_tokens))
            add(f"{name}: tokens/s, 1 user on an adapter", await throughput(backend, 1, max_tokens, ["a0"]))
            add(f"{name}: tokens/s, 8 users", await throughput(backend, 8, max_tokens))
            add(f"{name}: first token ms, 1 user", await first_token_ms(backend, r, max_tokens))
            add(
                f"{name}: tokens/s, 8 users on 1 of 8 resident adapters",
                await throughput(backend, 8, max_tokens, ["a0"]),
            )
            add(
                f"{name}: tokens/s, 8 users over 8 resident adapters",
                await throughput(backend, 8, max_tokens, [f"a{i}" for i in range(8)]),
            )
    for backend in engines.values():
        await backend.close()
    median = {name: statistics.median(values) for name, values in figures.items()}
    rows = [(f"{name} (median of {rounds})", f"{value:.1f}") for name, value in median.items()] + loads
    ours = "llama.cpp backend"
    ratios = {
        f"{ours} / raw llama.cpp, 1 user": ("raw llama.cpp: tokens/s, 1 user", f"{ours}: tokens/s, 1 user"),
        f"{ours} / transformers backend, 1 user": (
            "transformers backend: tokens/s, 1 user",
            f"{ours}: tokens/s, 1 user",
        ),
        f"{ours} / transformers backend, 8 users": (
            "transformers backend: tokens/s, 8 users",
            f"{ours}: tokens/s, 8 users",
        ),
        f"{ours}: 1 user on an adapter / on the base (as fast as a merged model)": (
            f"{ours}: tokens/s, 1 user",
            f"{ours}: tokens/s, 1 user on an adapter",
        ),
        f"{ours}: 8 users over 8 adapters / on 1 adapter": (
            f"{ours}: tokens/s, 8 users on 1 of 8 resident adapters",
            f"{ours}: tokens/s, 8 users over 8 resident adapters",
        ),
    }
    rows += [(name, f"{median[top] / median[bottom]:.2f}x") for name, (bottom, top) in ratios.items()]
    return [(f"engines, {threads} threads: {name}", value) for name, value in rows]


def long_prompt(case: int) -> str:
    """About 1,500 tokens, different from the first clause on for each `case` (no cached prefix helps)."""
    return " ".join(f"Case {case}, clause {i}: returns are accepted within 30 days." for i in range(110))


async def prefill_pause(backend: EmbeddedBackend, max_tokens: int, case: int) -> tuple[float, float]:
    """While one user streams, another sends a ~1,500-token prompt: the longest pause between the stream's
    deltas from then on (ms), and the long prompt's time to its first token (ms)."""
    long = GenerationRequest([{"role": "user", "content": long_prompt(case)}], 1, 0.0)
    gaps: list[float] = []
    sent: asyncio.Task | None = None
    async with await backend.stream(ask(0, max_tokens)) as stream:
        last = time.perf_counter()
        async for _ in stream:
            now = time.perf_counter()
            if sent is not None and not sent.done():
                gaps.append(now - last)
            last = now
            if sent is None:
                start = time.perf_counter()
                sent = asyncio.create_task(backend.generate(long))
    await sent
    return max(gaps, default=0.0) * 1000, (time.perf_counter() - start) * 1000


async def bench_prefill(models_dir: Path, rounds: int, threads: int) -> list:
    """A running stream beside a long prompt's prefill: a chunk a step (PREFILL_CHUNK) against the whole
    prompt in one pass, as before chunking."""
    from tuneloop.serve.backends import llamacpp

    model_dir, gguf = ensure_base_model(models_dir), gguf_of(BASE_MODEL_NAME)
    chunked = LlamaCppBackend(model_dir, gguf, threads=threads, max_batch_size=8)
    whole = LlamaCppBackend(model_dir, gguf, threads=threads, max_batch_size=8)
    chunk = llamacpp.PREFILL_CHUNK  # read at every step: set for whichever backend runs
    figures: dict[str, list[float]] = {}
    try:
        for backend in (chunked, whole):
            await backend.start()
        for r in range(rounds):
            for name, backend in (("chunked", chunked), ("one pass", whole)):
                llamacpp.PREFILL_CHUNK = chunk if backend is chunked else 4096
                pause, first = await prefill_pause(backend, 96, r)
                figures.setdefault(f"{name}: longest pause of a running stream, ms", []).append(pause)
                figures.setdefault(f"{name}: the long prompt's first token, ms", []).append(first)
    finally:
        llamacpp.PREFILL_CHUNK = chunk
        for backend in (chunked, whole):
            await backend.close()
    return [
        (f"prefill of a 1,500-token prompt, {threads} threads: {name} (median of {rounds})", f"{v:.0f}")
        for name, values in figures.items()
        for v in [statistics.median(values)]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", default="engines,prefill,gateway", help="comma list of: engines, prefill, gateway"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads per engine")
    parser.add_argument("--models", default="tiny,real", help="gateway section: comma list of tiny, real")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: TUNELOOP_HOME/models")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the gateway comparison")
    args = parser.parse_args()
    models_dir = args.models_dir or Settings().home / "models"
    choices = {"tiny": lambda: make_tiny_model(models_dir), "real": lambda: ensure_base_model(models_dir)}
    rows = []
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory() as work:
        if "engines" in sections:
            rows += asyncio.run(
                bench_engines(models_dir, args.max_tokens, args.rounds, args.threads, Path(work))
            )
        if "prefill" in sections:
            rows += asyncio.run(bench_prefill(models_dir, args.rounds, args.threads))
        for label in args.models.split(",") if "gateway" in sections else []:
            rows += asyncio.run(
                bench_model(label, choices[label](), args.max_tokens, Path(work), args.rounds)
            )
    if "engines" in sections and amx_cpu():
        rows.insert(0, ("AMX kernels, wrong from 32 tokens a call", "raw runs them whole, tuneloop by 31"))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
