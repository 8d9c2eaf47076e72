"""Per-text cost of PII redaction on short support-chat messages, at batch sizes 1, 16 and 256.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/redact.py [--texts 512]
Every text is unique (a counter is woven in), so the span cache never helps here; a last line shows what
a repeated text (a system prompt) costs once cached.
"""

from __future__ import annotations

import argparse
import random
import time

from tuneloop.capture.redact import Redactor

TEMPLATES = [
    "Hi, my order #{n} never arrived. Can you check?",
    "How do I reset my password? I tried {n} times already.",
    "The app crashes when I upload a photo larger than {n}MB on Android 14.",
    "I was charged twice for invoice {n}, please refund one of the charges.",
    "Thanks {name}, that fixed it!",
    "Please email the receipt to {first}.{last}{n}@example.com",
    "You can reach me on +44 20 7946 {n4} after 5pm.",
    "My name is {name} and my account {n} is locked.",
    "Can I pay with card 4111 1111 1111 1111? Order {n}.",
    "Refund to IBAN DE89 3704 0044 0532 0130 00 please, ticket {n}.",
    "What are your opening hours on weekends? (asking for store {n})",
    "Our server at 10.0.{b}.{b2} cannot reach your API since this morning.",
    "Is there a discount for teams larger than {n} people?",
    "The export to CSV cuts off after row {n}.",
    "Call me at (212) 555-{n4}, I'd rather talk.",
    "I want to cancel my subscription, account id {n}.",
]
FIRST = ["John", "Maria", "Priya", "Wei", "Olusegun", "Anna", "Carlos", "Aisha", "Dmitri", "Sarah"]
LAST = ["Smith", "Garcia", "Patel", "Zhang", "Obasanjo", "Kowalska", "Lopez", "Khan", "Ivanov", "Lee"]


def make_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        texts.append(
            rng.choice(TEMPLATES).format(
                n=seed * 100_000 + i,
                n4=f"{(seed * 7919 + i) % 10_000:04d}",
                b=i % 250,
                b2=seed % 250,
                first=first.lower(),
                last=last.lower(),
                name=f"{first} {last}",
            )
        )
    return texts


def per_text_us(redactor: Redactor, batch: int, total: int, seed: int) -> tuple[float, float]:
    """Wall-clock and CPU microseconds per text (CPU time is steadier on a shared machine)."""
    texts = make_texts(total, seed)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, total, batch):
        redactor.redact_texts(texts[i : i + batch], "redact")
    return (time.perf_counter() - wall) / total * 1e6, (time.process_time() - cpu) / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="texts per batch size (default 512)")
    args = parser.parse_args()

    redactor = Redactor(hash_key=b"benchmark")
    start = time.perf_counter()
    redactor.warm_up()
    print(f"warm_up (load spaCy + Presidio): {time.perf_counter() - start:.2f} s")
    per_text_us(redactor, 16, 64, seed=0)  # first calls compile regexes and grow the vocab

    print(f"{'batch':>6} {'wall µs/text':>13} {'cpu µs/text':>12} {'texts/s':>8}")
    for seed, batch in enumerate((1, 16, 256), start=1):
        wall, cpu = per_text_us(redactor, batch, args.texts, seed)
        print(f"{batch:>6} {wall:>13.0f} {cpu:>12.0f} {1e6 / wall:>8.0f}")

    # A feedback event carries one comment; an interaction carries the user turn and the answer.
    events = make_texts(args.texts, seed=9)
    start = time.perf_counter()
    for i in range(0, len(events), 2):
        redactor.redact_json([[events[i]], events[i + 1], {"source": "web"}], "redact")
    interaction_s = (time.perf_counter() - start) / (len(events) // 2)
    print(f"interaction events (2 texts + metadata, one call each): {1 / interaction_s:.0f} events/s")

    prompt = "You are a helpful support agent for Acme. Be concise and polite. " * 8
    redactor.redact_texts([prompt], "redact")
    start = time.perf_counter()
    for _ in range(200):
        redactor.redact_texts([prompt], "redact")
    print(f"repeated system prompt (cached): {(time.perf_counter() - start) / 200 * 1e6:.0f} µs/text")


if __name__ == "__main__":
    main()
