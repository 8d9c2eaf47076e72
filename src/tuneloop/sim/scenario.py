"""A scenario: what simulated users ask, what they secretly prefer, and how they react to answers.

The hidden preference (`Scenario.score`) is the ground truth the loop is measured against; tuneloop never
sees it, only the feedback the simulated users send through the public API.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product

WORD = re.compile(r"[A-Za-z0-9$€£%']+")


@dataclass(frozen=True)
class Prompt:
    """One user request; `ideal` is the answer the user would write themselves (used for edits)."""

    text: str
    topic: str
    ideal: str
    fraud: bool = False  # a request the users' own rules say must be declined (fraud, a forbidden exception)


@dataclass(frozen=True)
class Topic:
    """A family of prompts: phrasings with `{slot}` fields filled from `slots`, and one ideal answer."""

    name: str
    phrasings: tuple[str, ...]
    ideal: str
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fraud: bool = False

    def expand(self) -> list[Prompt]:
        """Every distinct prompt this topic can produce, in a stable order."""
        out: dict[str, Prompt] = {}
        names = sorted(self.slots)
        for combo in product(*(self.slots[n] for n in names)):
            values = dict(zip(names, combo, strict=True))
            for phrasing in self.phrasings:
                text = phrasing.format(**values)
                ideal = self.ideal.format(**values)
                out.setdefault(text, Prompt(text, self.name, ideal, self.fraud))
        return list(out.values())


@dataclass(frozen=True)
class Behaviour:
    """How users react. Probabilities are per interaction; all draws come from a seeded RNG."""

    explicit: float = 0.20  # share of interactions with a thumbs or a rating
    rating_share: float = 0.25  # of explicit feedback, the share given as a 1-5 rating instead of a thumb
    noise: float = 0.05  # of explicit feedback, the share that is a random vote
    satisfied_at: float = 0.6  # hidden score at or above which the user is happy
    badly_below: float = 0.3  # hidden score below which the user is badly unsatisfied
    judgement_sd: float = 0.08  # how fuzzy a user's sense of their own satisfaction is
    followup: float = 0.35  # P(follow-up | unsatisfied)
    escalate: float = 0.30  # P(escalation | badly unsatisfied)
    regenerate: float = 0.12  # P(regenerate | unsatisfied)
    abandon: float = 0.05  # P(abandon | unsatisfied)
    accept: float = 0.30  # P(accepted | satisfied)
    copy: float = 0.10  # P(copied | satisfied)
    edit: float = 0.06  # P(edit | not satisfied): the user rewrites the answer into their ideal form
    pairwise: float = 0.08  # share of requests that ask for n=2 and get a preference back
    users: int = 60  # distinct end-user ids (sticky canary assignment hashes these)
    # Each knob below draws from the RNG only when it is on, so a scenario without it replays unchanged.
    dwell: float = 0.0  # P(the app reports dwell_ms | the user acted on the answer): the time to that action
    repeat: float = 0.0  # P(the user comes back about the same issue in a new session | unsatisfied)
    review: float = 0.0  # share of answers a supervisor reviews (a `labeler` rating)
    review_edit: float = 0.5  # P(the supervisor rewrites the answer | their review finds it unsatisfying)
    reviewers: int = 5  # distinct supervisors


@dataclass(frozen=True)
class Scenario:
    """Prompts, a hidden preference in [0, 1] and user behaviour; deterministic given `seed`."""

    name: str
    system_prompt: str
    topics: Sequence[Topic]
    preference: Callable[[Prompt, str], float]
    followups: tuple[str, ...]
    ideal: Callable[[Prompt], str] | None = None  # the user's own rewrite; defaults to `Prompt.ideal`
    # A task outcome the app posts after a user used an answer (accepted or copied it): name, and whether
    # the answer succeeded (e.g. the team's CI on the code it was given).
    outcome: tuple[str, Callable[[Prompt, str], bool]] | None = None
    behaviour: Behaviour = Behaviour()
    # The app's document collection (id -> Markdown), retrieved for every chat request when not empty, and
    # what a user does with the sources an answer showed: (rng, topic, document ids in order) -> (feedback
    # kind, document id) events.
    documents: Mapping[str, str] = field(default_factory=dict)
    sources: Callable[[random.Random, str, list[str]], list[tuple[str, str]]] | None = None
    max_tokens: int = 48
    temperature: float | None = None  # what the client app asks for; None leaves the API's default (1.0)
    seed: int = 0
    eval_share: float = 0.15

    def score(self, prompt: Prompt, answer: str) -> float:
        """The hidden satisfaction of `answer` to `prompt`, in [0, 1]."""
        return max(0.0, min(1.0, float(self.preference(prompt, answer))))

    def edit(self, prompt: Prompt) -> str:
        """What a user types when they rewrite an answer to `prompt` into the form they prefer."""
        return self.ideal(prompt) if self.ideal else prompt.ideal

    def marks(self, rng: random.Random, topic: str, results: list[dict]) -> list[tuple[str, dict]]:
        """What a user does with retrieval `results` (as the API lists them, in order): (feedback kind,
        value naming the chunk) pairs; none when the scenario has no source behaviour."""
        if self.sources is None:
            return []
        chunk_of = {r["document_id"]: r["chunk_id"] for r in results}
        shown = [r["document_id"] for r in results]
        return [(kind, {"chunk_id": chunk_of[doc]}) for kind, doc in self.sources(rng, topic, shown)]

    def pool(self) -> list[Prompt]:
        """All distinct prompts, shuffled by the scenario's seed."""
        prompts = [p for t in self.topics for p in t.expand()]
        random.Random(f"{self.name}:{self.seed}:pool").shuffle(prompts)
        return prompts

    def split(self) -> tuple[list[Prompt], list[Prompt]]:
        """(traffic prompts, held-out evaluation prompts): disjoint, stable for a seed."""
        pool = self.pool()
        cut = max(1, int(len(pool) * self.eval_share))
        return pool[cut:], pool[:cut]

    def eval_prompts(self, n: int = 40) -> list[Prompt]:
        """A fixed held-out evaluation set, stratified so fraud prompts keep their share."""
        pool = self.pool()
        held = self.split()[1]
        fraud = [p for p in held if p.fraud]
        others = [p for p in held if not p.fraud]
        k = min(len(fraud), round(n * sum(p.fraud for p in pool) / len(pool)))
        picked = fraud[:k] + others[: n - k]
        random.Random(f"{self.name}:{self.seed}:eval").shuffle(picked)
        return picked

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        """The chat messages a client sends for `prompt`."""
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt.text}]


def words(text: str) -> int:
    """Number of words in `text` (numbers and amounts count as words)."""
    return len(WORD.findall(text))


def ramp(value: float, full_at: float, zero_at: float) -> float:
    """1 at or before `full_at`, 0 at or beyond `zero_at`, linear between (either direction)."""
    if full_at == zero_at:
        return 1.0 if value <= full_at else 0.0
    t = (value - full_at) / (zero_at - full_at)
    return max(0.0, min(1.0, 1.0 - t))
