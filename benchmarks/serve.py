"""In-process serving speed of the embedded backend: batching, adapter switches, resident adapters.

Prints, per model (tiny random Llama, real SmolLM2-135M): total tokens/s at 1, 4 and 8 concurrent
requests; the latency an adapter switch adds (ms); and tokens/s of 8 concurrent requests spread over
1, 2, 4 and 8 resident adapters. Run: `.venv/bin/python benchmarks/serve.py [--models tiny,real]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tuneloop.config import Settings
from tuneloop.model_files import ensure_base_model, make_tiny_model
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.embedded import EmbeddedBackend

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
    """`count` random LoRA adapters (q/v, rank 8, non-zero B) for `model_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
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
    """Total completion tokens/s of `concurrency` simultaneous requests (adapters assigned round-robin)."""
    reqs = [ask(i, max_tokens, adapters[i % len(adapters)] if adapters else None) for i in range(concurrency)]
    start = time.perf_counter()
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


async def bench_model(label: str, model_dir: Path, max_tokens: int, work: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    async with EmbeddedBackend(model_dir, max_batch_size=8) as backend:
        await backend.generate(ask(0, 2))  # warm-up
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,real", help="comma list of: tiny, real")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: TUNELOOP_HOME/models")
    args = parser.parse_args()
    models_dir = args.models_dir or Settings().home / "models"
    choices = {"tiny": lambda: make_tiny_model(models_dir), "real": lambda: ensure_base_model(models_dir)}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for label in args.models.split(","):
            rows += asyncio.run(bench_model(label, choices[label](), args.max_tokens, Path(work)))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
