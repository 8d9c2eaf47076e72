"""llama.cpp threads that follow the idle cores (serve/backends/cores.py) against fixed thread counts.

One llama.cpp batch of the embedded model decodes 8 greedy answers of 64 tokens at 1 thread, at every core,
and at the adaptive count, in rotating rounds: first on an otherwise idle machine, then beside another
process that keeps every core busy (as the loop's training does). Prints tokens/s and the threads each used.
Run: `.venv/bin/python benchmarks/threads.py [--rounds 2]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _busy import busy_cores

from tuneloop.model_files import BASE_MODEL_NAME, ensure_base_model, gguf_of
from tuneloop.serve.backends.batching import Sequence, run_to_end
from tuneloop.serve.backends.llamacpp import LlamaCppBatch

SYSTEM = "You are the support assistant of a small bank. Answer in two sentences."
PROMPTS = [
    "How do vaccines work?",
    "Write a haiku about autumn.",
    "What is a hash table?",
    "Name some uses of Python.",
    "Give me three tips for a job interview.",
    "Summarize the plot of Hamlet.",
    "What is the boiling point of water?",
    "Explain recursion.",
]
MAX_TOKENS = 64


def tokens_per_second(batch: LlamaCppBatch) -> float:
    """Decode every prompt to MAX_TOKENS greedy tokens at once; generated tokens per wall second."""
    seqs = []
    for prompt in PROMPTS:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        text = batch.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = batch.tokenizer(text, add_special_tokens=False)["input_ids"]
        seqs.append(Sequence(prompt_ids=ids, adapter="__base__", max_tokens=MAX_TOKENS, emit=lambda _: None))
    start = time.perf_counter()
    run_to_end(batch, seqs, slots=len(seqs))
    return len(seqs) * MAX_TOKENS / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    base = ensure_base_model(Path(tempfile.gettempdir()) / "tuneloop-bench-models")
    counts = {"1 thread": 1, f"{cores} threads": cores, "adaptive": None}
    batches = {
        name: LlamaCppBatch.for_model(base, gguf_of(BASE_MODEL_NAME), slots=len(PROMPTS), threads=n)
        for name, n in counts.items()
    }
    print(f"{'machine':<28} {'threads':<10} {'tok/s':>7} {'threads used':>12}")
    for load, busy in (("idle", 0), (f"{cores} busy processes beside", cores)):
        with busy_cores(busy):
            for _ in range(args.rounds):
                for name, batch in batches.items():
                    rate = tokens_per_second(batch)
                    print(f"{load:<28} {name:<10} {rate:>7.1f} {batch.threads:>12}", flush=True)
    for batch in batches.values():
        batch.close()


if __name__ == "__main__":
    main()
