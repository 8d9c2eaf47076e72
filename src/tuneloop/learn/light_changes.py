"""Light changes read from feedback, without training: what a snapshot's preference pairs say about answer
length and about regenerated answers, turned into a system prompt or decoding settings to try against
production.

- Length: the median chosen/rejected length ratio of the pairs (users' edits among them; with few pairs, the
  answers users labelled desirable against undesirable, signals.pairs.length_ask). When users clearly ask for
  shorter answers, an instruction to keep under the length they point to leads production's system prompt (the
  median words of users' edits when there are enough, else of the answers users chose, shortened once more by
  the ratio they chose by; rounded up to ten): a small model asked for brevity writes a short complete answer,
  where a `max_tokens` cap only cuts a long one off (README, "Light candidates first"). The number comes from
  the users: a fixed "one or two short sentences" also cut the numbered steps a helpdesk's users wanted. When
  users ask for longer answers and production's cap binds, a cap twice the length they chose.
- Regenerations: when users regenerate a material share of answers, production's temperature is wrong for
  them: a high one is lowered (answers users could rely on), a low one raised (a second try that differs).
- Sources: once a re-ranker trained on users' source feedback orders a tenant's retrieved sources, the top
  of its order is what users trust, and a small model shown outdated or unrelated sources beside the right
  one quotes them: a candidate shows half as many (rounded up), again after each promotion, down to one.

Each proposal is a prompt or decoding to compose on production's adapter (registry.composition.compose),
with its reason as lineage; the gate and a multi-arm experiment decide which, if any, is better.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuneloop.registry.composition import Decoding
from tuneloop.signals import canaries
from tuneloop.signals.pairs import MATERIAL_ASK, MIN_LENGTH_EVIDENCE, length_ask
from tuneloop.signals.records import completion_text

MATERIAL_REGENERATIONS = 0.2  # share of pairs from regenerated answers that says the sampling is off
CHARS_PER_TOKEN = 4.0  # English text, roughly; a cap is a bound, not a target
CAP_MARGIN = 1.25  # a cap above the answers users chose, so it does not cut them off
MIN_PAIRS = MIN_LENGTH_EVIDENCE  # fewer pairs say too little to change a setting on
MAX_CAP = 4096  # half the largest cap a version may set, so that twice it is still valid
BRIEF = "Keep your answer under {words} words."
_BRIEF = re.compile(r"Keep your answer under (\d+) words\.\s*")  # one production already carries
DEFAULT_TEMPERATURE = 1.0  # what the gateway samples at when neither version nor client sets one


@dataclass(frozen=True)
class Proposal:
    """One light change to try on production, and why: a decoding, or a system prompt (operator-written or
    read from feedback)."""

    reason: str
    decoding: Decoding | None = None
    prompt: str | None = None


def propose_changes(
    pairs: Sequence[dict[str, Any]],
    production: Decoding,
    production_prompt: str | None,
    labels: Sequence[dict[str, Any]] = (),
) -> list[Proposal]:
    """The light changes the snapshot's `pairs` (and, for length, with few pairs its `labels`) call for,
    each differing from production."""
    pairs = [r for r in pairs if r.get("origin") != canaries.ORIGIN]  # planted probes, not users' words
    asked = length_ask(pairs, labels)
    chosen_texts, ask = asked.preferred, asked.change
    if not chosen_texts:
        return []
    proposals: list[Proposal] = []
    chosen = sorted(len(text) for text in chosen_texts)
    p90 = chosen[int(0.9 * (len(chosen) - 1))]
    typical = max(1, min(MAX_CAP, math.ceil(CAP_MARGIN * p90 / CHARS_PER_TOKEN)))
    temperature = production.temperature if production.temperature is not None else DEFAULT_TEMPERATURE
    if ask <= -MATERIAL_ASK:
        # Users' edits are the length they want, written by them. An answer users chose of those the model
        # wrote is only the shortest it happened to write: one more step of the ratio they chose by
        # (docs/light-candidates.md, "How short to ask for").
        edits = [completion_text(r["chosen"]) for r in pairs if r.get("origin") == "edit"]
        if len(edits) >= MIN_PAIRS:
            wanted = statistics.median(len(t.split()) for t in edits)
        else:
            wanted = statistics.median(len(t.split()) for t in chosen_texts) * (1 + ask)
        words = max(10, 10 * math.ceil(wanted / 10))
        rest = _BRIEF.sub("", production_prompt or "").strip()
        prompt = BRIEF.format(words=words) + (f"\n\n{rest}" if rest else "")
        if prompt != production_prompt:
            said = (
                f"the answers users rated up are {-ask:.0%} shorter than those they rated down"
                if asked.from_labels
                else f"users chose answers {-ask:.0%} shorter"
            )
            why = f"{said}; an instruction to keep under {words} words"
            proposals.append(Proposal(why, prompt=prompt))
    elif ask >= MATERIAL_ASK and production.max_tokens is not None and production.max_tokens < 2 * typical:
        why = f"users chose answers {ask:.0%} longer and production's cap binds"
        proposals.append(Proposal(why, decoding=_with(production, max_tokens=2 * typical)))
    regenerated = sum(r.get("origin") == "regenerated" for r in pairs) / max(len(pairs), 1)
    if len(pairs) >= MIN_PAIRS and regenerated >= MATERIAL_REGENERATIONS:
        changed = round(0.6 * temperature, 2) if temperature > 0.3 else 0.7
        why = f"{regenerated:.0%} of the pairs come from regenerated answers; temperature {changed}"
        proposals.append(Proposal(why, decoding=_with(production, temperature=changed)))
    return [p for p in proposals if p.decoding != production]


def word_limit(system_prompt: str | None) -> int | None:
    """The words a version's brevity instruction allows, or None when its prompt carries none."""
    found = _BRIEF.search(system_prompt or "")
    return int(found[1]) if found else None


def _with(production: Decoding, **update: Any) -> Decoding:
    return Decoding.parse({**production.values(), **update})


def fewer_sources(ranked: int | None) -> Proposal | None:
    """Show half the `ranked` sources production shows in its re-ranker's order (rounded up); None when
    none are ranked so, or one is."""
    if ranked is None or ranked <= 1:
        return None
    fewer = math.ceil(ranked / 2)
    why = f"users' source feedback orders the sources: the top {fewer} of the {ranked} shown"
    return Proposal(why, decoding=Decoding(sources=fewer))
