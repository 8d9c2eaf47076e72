"""How a simulated user reacts to an answer: explicit votes (sparse, a little noisy), implicit signals, edits,
pairwise choices and task outcomes; how a supervisor reviews one — and the feedback events they become on
tuneloop's capture API.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from tuneloop.sim.scenario import Prompt, Scenario, words


@dataclass(frozen=True)
class Reaction:
    """What one user did after reading one answer."""

    score: float  # the hidden satisfaction, for reporting; never sent
    thumbs: int | None = None
    rating: int | None = None
    edit: str | None = None
    followup: str | None = None
    escalated: bool = False
    abandoned: bool = False
    accepted: bool = False
    copied: bool = False
    regenerate: bool = False
    outcome: tuple[str, bool] | None = None  # the task outcome the app posts for a used answer
    dwell_ms: int | None = None  # time from reading the answer to acting on it, as the app measured it
    comes_back: bool = False  # the user will ask about the same issue again, in a new session

    @property
    def positive(self) -> bool | None:
        """Whether the explicit feedback was positive; None without explicit feedback."""
        if self.thumbs is not None:
            return self.thumbs > 0
        if self.rating is not None:
            return self.rating >= 4
        return None


def react(
    scenario: Scenario, prompt: Prompt, answer: str, rng: random.Random, *, may_regenerate: bool = True
) -> Reaction:
    """The user's reaction to `answer`; all chance comes from `rng`, so a seed reproduces it."""
    b = scenario.behaviour
    score = scenario.score(prompt, answer)
    felt = score + rng.gauss(0.0, b.judgement_sd)
    happy, badly = felt >= b.satisfied_at, felt < b.badly_below
    out: dict[str, Any] = {"score": score}

    if rng.random() < b.explicit:
        noisy = rng.random() < b.noise
        if rng.random() < b.rating_share:
            out["rating"] = rng.randint(1, 5) if noisy else max(1, min(5, round(1 + 4 * felt)))
        else:
            out["thumbs"] = rng.choice((1, -1)) if noisy else (1 if happy else -1)

    if happy:
        out["accepted"] = rng.random() < b.accept
        out["copied"] = rng.random() < b.copy
        if scenario.outcome and (out["accepted"] or out["copied"]):
            name, succeeded = scenario.outcome
            out["outcome"] = (name, succeeded(prompt, answer))
        return _timed(Reaction(**out), answer, b.dwell, rng)

    if rng.random() < b.edit:
        out["edit"] = scenario.edit(prompt)
    if may_regenerate and rng.random() < b.regenerate:
        # Someone who regenerates does not also argue with the answer they threw away.
        out["regenerate"] = True
        return _timed(Reaction(**out), answer, b.dwell, rng)
    if rng.random() < b.followup:
        out["followup"] = rng.choice(scenario.followups)
    out["escalated"] = badly and rng.random() < b.escalate
    out["abandoned"] = not out["escalated"] and rng.random() < b.abandon
    out["comes_back"] = bool(b.repeat) and not out["escalated"] and rng.random() < b.repeat
    return _timed(Reaction(**out), answer, b.dwell, rng)


def _timed(reaction: Reaction, answer: str, dwell: float, rng: random.Random) -> Reaction:
    """The reaction with the app's dwell measurement when the user acted on the answer: reading time at
    about 4 words a second plus a few seconds to act, log-normally spread."""
    acted = reaction.accepted or reaction.copied or reaction.edit is not None or reaction.outcome is not None
    if not (dwell and acted and rng.random() < dwell):
        return reaction
    seconds = (3.0 + words(answer) / 4.0) * rng.lognormvariate(0.0, 0.3)
    return replace(reaction, dwell_ms=round(seconds * 1000))


def review(scenario: Scenario, prompt: Prompt, answer: str, rng: random.Random) -> list[tuple[str, Any, str]]:
    """A supervisor's review of `answer` when one happens: (kind, value, supervisor) for a 1-5 rating and,
    when the answer falls short, their rewrite. Supervisors judge closely (half a user's noise)."""
    b = scenario.behaviour
    if not (b.review and rng.random() < b.review):
        return []
    supervisor = f"sim-supervisor{rng.randrange(b.reviewers)}"
    felt = scenario.score(prompt, answer) + rng.gauss(0.0, b.judgement_sd / 2)
    out: list[tuple[str, Any, str]] = [("rating", max(1, min(5, round(1 + 4 * felt))), supervisor)]
    if felt < b.satisfied_at and rng.random() < b.review_edit:
        out.append(("edit", scenario.edit(prompt), supervisor))
    return out


def choose(scenario: Scenario, prompt: Prompt, answers: list[str], rng: random.Random) -> dict | None:
    """The user's pick between two answers as a `preference` value, or None when they look the same."""
    felt = [scenario.score(prompt, a) + rng.gauss(0.0, scenario.behaviour.judgement_sd) for a in answers[:2]]
    if abs(felt[0] - felt[1]) < 0.05 or answers[0] == answers[1]:
        return None
    chosen = 0 if felt[0] > felt[1] else 1
    return {"chosen": chosen, "rejected": 1 - chosen}


def events(interaction_id: str, reaction: Reaction, user: str, replaced_by: str | None = None) -> list[dict]:
    """The feedback events for one reaction. Event ids derive from the interaction id and the kind, so a
    retry resends the very same ids and the server's idempotency drops the copies."""
    values: list[tuple[str, Any]] = []
    if reaction.thumbs is not None:
        values.append(("thumbs", reaction.thumbs))
    if reaction.rating is not None:
        values.append(("rating", reaction.rating))
    if reaction.edit is not None:
        values.append(("edit", reaction.edit))
    if reaction.followup is not None:
        values.append(("followup", reaction.followup))
    for flag in ("accepted", "copied", "escalated", "abandoned"):
        if getattr(reaction, flag):
            values.append((flag, True))
    if reaction.outcome is not None:
        values.append(("outcome", {"name": reaction.outcome[0], "value": reaction.outcome[1]}))
    if reaction.dwell_ms is not None:
        values.append(("dwell_ms", reaction.dwell_ms))
    if replaced_by is not None:
        values.append(("regenerated", {"replaced_by": replaced_by}))
    return [event(interaction_id, kind, value, user) for kind, value in values]


def event(interaction_id: str, kind: str, value: Any, rater: str, source: str = "user") -> dict:
    """One feedback event in the capture API's shape; a reviewer's events get ids of their own."""
    suffix = "" if source == "user" else f".{source}"
    return {
        "id": f"sim.{interaction_id}.{kind}{suffix}",
        "interaction_id": interaction_id,
        "kind": kind,
        "value": value,
        "rater": rater,
        "source": source,
    }
