"""PII redaction quality and cost: recall per entity type, over-redaction, precision, ms per text.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/pii.py [--texts 1500] [--seed 0]
The labelled set is generated here from templates filled with Faker values (several locales), and holds
obfuscated forms (`jane(at)example(dot)com`, `123 45 6789`, 7-digit local numbers, lowercase names and
IBANs) and support/code sentences without PII. Both `redact` and `hash` modes are scored from their output
alone: a value counts as recalled when none of its letters or digits survive, whatever placeholder took
its place. A last table gives the cost per text at batch sizes 1, 16 and 256.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from _pii_templates import NO_PII_TEMPLATES, PII_TEMPLATES
from faker import Faker

from tuneloop.capture.redact import Redactor, _engines

# The goals: structured identifiers >= 0.95, names and addresses >= 0.85; the rest are reported.
RECALL_GOALS = {
    "EMAIL_ADDRESS": 0.95,
    "PHONE_NUMBER": 0.95,
    "CREDIT_CARD": 0.95,
    "IBAN_CODE": 0.95,
    "IP_ADDRESS": 0.95,
    "US_SSN": 0.95,
    "PERSON": 0.85,
    "STREET_ADDRESS": 0.85,
}
GOAL_OVER_REDACTION = 0.05
GOAL_MS_PER_TEXT = 10.0
NAME_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pl_PL", "en_IN", "nl_NL", "pt_BR"]


@dataclass
class Sample:
    text: str
    spans: list[tuple[int, int, str, str]]  # (start, end, entity, variant) of each labelled value


class Generator:
    """Fills templates with realistic values from Faker, seeded, recording where each value sits."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        Faker.seed(seed)
        self.us = Faker("en_US")
        self.world = Faker(NAME_LOCALES)
        self.slots: dict[str, Callable[[], tuple[str, str, str]]] = {
            "name": lambda: (self.world.name(), "PERSON", ""),
            "first": lambda: (self.world.first_name(), "PERSON", "first name only"),
            "lname": lambda: (self._plain_name().lower(), "PERSON", "lowercase"),
            "email": lambda: (self.us.email(), "EMAIL_ADDRESS", ""),
            "email_obf": lambda: (self._obfuscated_email(), "EMAIL_ADDRESS", "obfuscated"),
            "phone": lambda: (self.us.phone_number(), "PHONE_NUMBER", ""),
            "phone_intl": lambda: (self.world.phone_number(), "PHONE_NUMBER", "other countries"),
            "phone7": lambda: (self._local_phone(), "PHONE_NUMBER", "7-digit local"),
            "card": lambda: (self._card(), "CREDIT_CARD", ""),
            "iban": lambda: (self._iban(), "IBAN_CODE", ""),
            "iban_lower": lambda: (self._iban().lower(), "IBAN_CODE", "lowercase"),
            "ip": lambda: (self._ip(), "IP_ADDRESS", ""),
            "ssn": lambda: (self.us.ssn(), "US_SSN", ""),
            "ssn_obf": lambda: (self._obfuscated_ssn(), "US_SSN", "spaced, dotted or bare"),
            "address": lambda: (self._address(), "STREET_ADDRESS", ""),
            "zip": lambda: (self.rng.choice([self.us.zipcode(), self.us.zipcode_plus4()]), "ZIP_CODE", ""),
            "dob": lambda: (self._dob(), "DATE_OF_BIRTH", ""),
            "age": lambda: (str(self.rng.randint(8, 95)), "AGE", ""),
        }

    def samples(self, count: int, pii_share: float = 0.75) -> list[Sample]:
        return [
            self._fill(self.rng.choice(PII_TEMPLATES))
            if self.rng.random() < pii_share
            else self._fill(self.rng.choice(NO_PII_TEMPLATES))
            for _ in range(count)
        ]

    def _fill(self, template: str) -> Sample:
        text, spans = "", []
        for literal, field in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
            text += literal
            if not field:
                continue
            if field in self.slots:
                value, entity, variant = self.slots[field]()
                spans.append((len(text), len(text) + len(value), entity, variant))
            else:
                value = self._filler(field)
            text += value
        return Sample(text, spans)

    def _filler(self, field: str) -> str:
        """Values of the no-PII templates: ids, versions, amounts, dates that are not anyone's birth."""
        r = self.rng
        return {
            "n": lambda: str(r.randint(10_000, 99_999_999)),
            "v": lambda: f"{r.randint(0, 4)}.{r.randint(0, 30)}.{r.randint(0, 12)}",
            "amount": lambda: f"{r.randint(5, 9_999):,}.{r.randint(0, 99):02d}",
            "k": lambda: str(r.randint(2, 9)),
            "k2": lambda: str(r.randint(10, 99)),
            "hh": lambda: f"{r.randint(0, 23):02d}",
            "mm": lambda: f"{r.randint(0, 59):02d}",
            "date": lambda: self.us.date_between("-1y", "+1y").isoformat(),
            "port": lambda: str(r.randint(1024, 65_535)),
            "status": lambda: r.choice(["400", "404", "413", "429", "500", "503"]),
            "pct": lambda: str(r.randint(1, 99)),
        }[field]()

    def _plain_name(self) -> str:
        return f"{self.world.first_name()} {self.world.last_name()}"

    def _obfuscated_email(self) -> str:
        user, domain = self.us.email().split("@")
        host, tld = domain.rsplit(".", 1)
        at, dot = self.rng.choice(
            [("(at)", "(dot)"), (" [at] ", " [dot] "), (" at ", " dot "), (" AT ", " DOT ")]
        )
        return f"{user}{at}{host}{dot}{tld}"

    def _local_phone(self) -> str:
        digits = f"{self.rng.randint(200, 999)}{self.rng.randint(0, 9999):04d}"
        return self.rng.choice([f"{digits[:3]}-{digits[3:]}", f"{digits[:3]} {digits[3:]}", digits])

    def _card(self) -> str:
        number = self.us.credit_card_number(self.rng.choice(["visa16", "mastercard", "amex", "discover"]))
        sep = self.rng.choice(["", " ", "-"])
        groups = [number[i : i + 4] for i in range(0, len(number), 4)]
        return sep.join(groups) if sep else number

    def _iban(self) -> str:
        iban = self.world.iban()
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if self.rng.random() < 0.5 else iban

    def _ip(self) -> str:
        return self.rng.choice([self.us.ipv4_public, self.us.ipv4_private, self.us.ipv6])()

    def _obfuscated_ssn(self) -> str:
        digits = self.us.ssn().replace("-", "")
        sep = self.rng.choice([" ", ".", ""])
        return sep.join([digits[:3], digits[3:5], digits[5:]])

    def _address(self) -> str:
        street = self.us.street_address()
        if self.rng.random() < 0.5:
            return street
        return f"{street}, {self.us.city()}, {self.us.state_abbr()} {self.us.zipcode()}"

    def _dob(self) -> str:
        born = self.us.date_of_birth(minimum_age=5, maximum_age=95)
        formats = ["%m/%d/%Y", "%Y-%m-%d", "%B %d, %Y", "%d %B %Y", "%d.%m.%Y", "%b %d %Y"]
        return born.strftime(self.rng.choice(formats))


PLACEHOLDER = re.compile(r"<[A-Z_]+(?::[0-9a-f]+)?>")


def removed_mask(text: str, out: str) -> list[bool]:
    """Which characters of `text` the redactor replaced: the kept pieces of `out`, found in order."""
    removed = [True] * len(text)
    at = 0
    for piece in PLACEHOLDER.split(out):
        found = text.find(piece, at) if piece else at
        if found < 0:
            raise AssertionError(f"output is not the input with spans replaced: {out!r}")
        removed[found : found + len(piece)] = [False] * len(piece)
        at = found + len(piece)
    return removed


@dataclass
class Score:
    found: Counter[str]
    total: Counter[str]
    pii_tokens_removed: int = 0
    clean_tokens_removed: int = 0
    clean_tokens: int = 0
    ms_per_text: float = 0.0  # wall clock
    cpu_ms_per_text: float = 0.0  # steadier than wall clock on a shared machine; the goal is checked on it

    def recall(self, key: str) -> float:
        return self.found[key] / self.total[key] if self.total[key] else float("nan")

    @property
    def precision(self) -> float:
        removed = self.pii_tokens_removed + self.clean_tokens_removed
        return self.pii_tokens_removed / removed if removed else 1.0

    @property
    def over_redaction(self) -> float:
        return self.clean_tokens_removed / self.clean_tokens if self.clean_tokens else 0.0


def score(samples: list[Sample], outputs: list[str]) -> Score:
    """Recall per type and variant (all letters and digits gone), token precision and over-redaction."""
    result = Score(Counter(), Counter())
    for sample, out in zip(samples, outputs, strict=True):
        removed = removed_mask(sample.text, out)
        for start, end, entity, variant in sample.spans:
            gone = all(removed[i] for i in range(start, end) if sample.text[i].isalnum())
            for key in {entity, f"{entity} ({variant})" if variant else entity}:
                result.total[key] += 1
                result.found[key] += gone
        for token in re.finditer(r"\S+", sample.text):
            chars = [i for i in range(token.start(), token.end()) if sample.text[i].isalnum()]
            if not chars:
                continue
            hit = any(removed[i] for i in chars)
            if any(start < token.end() and token.start() < end for start, end, _, _ in sample.spans):
                result.pii_tokens_removed += hit
            else:
                result.clean_tokens += 1
                result.clean_tokens_removed += hit
    return result


def run_mode(redactor: Redactor, samples: list[Sample], mode: str) -> Score:
    """Redact each text as its own request (no batch-wide propagation), timed from a cold span cache."""
    _engines()._cache.clear()  # both modes analyse every text afresh, so their timings compare
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = [redactor.redact_texts([s.text], mode)[0] for s in samples]  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result = score(samples, outputs)
    result.ms_per_text = wall / len(samples) * 1000
    result.cpu_ms_per_text = cpu / len(samples) * 1000
    return result


def row(label: str, n: object, redact: float, hashed: float, goal: str = "") -> str:
    return f"{label:<28} {n!s:>5} {redact:>7.3f} {hashed:>7.3f} {goal}"


def goal_mark(goal: float, ok: bool) -> str:
    return f"{goal:>6.2f} {'PASS' if ok else 'FAIL'}"


def print_quality(scores: dict[str, Score]) -> None:
    redact, hashed = scores["redact"], scores["hash"]
    print(f"{'recall':<28} {'n':>5} {'redact':>7} {'hash':>7} {'goal':>6}")
    for key in sorted(redact.total, key=lambda k: (k.split(" ")[0], k)):
        goal = RECALL_GOALS.get(key)
        worst = min(redact.recall(key), hashed.recall(key))
        label = key if " " not in key else "  " + key.split(" ", 1)[1]
        mark = goal_mark(goal, worst >= goal) if goal else ""
        print(row(label, redact.total[key], redact.recall(key), hashed.recall(key), mark))
    over = max(s.over_redaction for s in scores.values())
    ms = max(s.cpu_ms_per_text for s in scores.values())
    print()
    print(
        row(
            "over-redaction (tokens)",
            redact.clean_tokens,
            redact.over_redaction,
            hashed.over_redaction,
            goal_mark(GOAL_OVER_REDACTION, over <= GOAL_OVER_REDACTION),
        )
    )
    print(row("precision (tokens)", "", redact.precision, hashed.precision))
    print(row("wall ms per text (batch 1)", "", redact.ms_per_text, hashed.ms_per_text))
    print(
        row(
            "cpu ms per text (batch 1)",
            "",
            redact.cpu_ms_per_text,
            hashed.cpu_ms_per_text,
            goal_mark(GOAL_MS_PER_TEXT, ms <= GOAL_MS_PER_TEXT),
        )
    )


def print_cost(redactor: Redactor, texts: list[str]) -> None:
    """Wall and CPU time per text at batch sizes 1, 16 and 256 (CPU time is steadier on a shared machine)."""
    print(f"\n{'batch':>6} {'wall ms/text':>13} {'cpu ms/text':>12} {'texts/s':>8}")
    for batch in (1, 16, 256):
        _engines()._cache.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(texts), batch):
            redactor.redact_texts(texts[i : i + batch], "redact")
        wall_ms = (time.perf_counter() - wall) / len(texts) * 1000
        cpu_ms = (time.process_time() - cpu) / len(texts) * 1000
        print(f"{batch:>6} {wall_ms:>13.2f} {cpu_ms:>12.2f} {1000 / wall_ms:>8.0f}")
    prompt = "You are a helpful support agent for Acme. Be concise and polite. " * 8
    redactor.redact_texts([prompt], "redact")
    started = time.perf_counter()
    for _ in range(200):
        redactor.redact_texts([prompt], "redact")
    print(f"repeated system prompt (cached): {(time.perf_counter() - started) / 200 * 1e6:.0f} µs/text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1500, help="labelled texts to generate (default 1500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    samples = Generator(args.seed).samples(args.texts)
    redactor = Redactor(hash_key=b"benchmark")
    started = time.perf_counter()
    redactor.warm_up()
    redactor.redact_texts([s.text for s in Generator(args.seed + 1).samples(64)], "redact")  # compile regexes
    print(f"warm_up (load spaCy + Presidio): {time.perf_counter() - started:.2f} s")
    clean = sum(not s.spans for s in samples)
    print(
        f"{len(samples)} texts ({clean} without PII), {sum(len(s.spans) for s in samples)} labelled values\n"
    )
    print_quality({mode: run_mode(redactor, samples, mode) for mode in ("redact", "hash")})
    print_cost(redactor, [s.text for s in samples])


if __name__ == "__main__":
    main()
