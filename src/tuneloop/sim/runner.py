"""Drive simulated traffic at a tuneloop server exactly as a real client would: the official `openai`
package for chat completions and plain HTTP for the capture API's `POST /v1/feedback`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

# `openai` looks for httpx2 in sys.modules on every request and reads its classes. The demo's loop thread
# imports it (through huggingface_hub) while users' threads make requests, and a request that met it half
# imported raised AttributeError and ended the demo: imported whole here, before any thread starts.
import httpx2  # noqa: F401
import openai

from tuneloop.sim.scenario import Prompt, Scenario
from tuneloop.sim.users import choose, event, events, react, review

RETRY_STATUSES = (429, 500, 502, 503, 504)


class SimError(RuntimeError):
    """The simulator could not talk to the server (most requests failed)."""


@dataclass
class VersionTally:
    """What one served version (and experiment arm) got."""

    interactions: int = 0
    score_sum: float = 0.0
    explicit: int = 0
    positive: int = 0
    arms: set[str] = field(default_factory=set)

    @property
    def satisfaction(self) -> float:
        return self.score_sum / self.interactions if self.interactions else 0.0

    @property
    def positive_rate(self) -> float | None:
        return self.positive / self.explicit if self.explicit else None


@dataclass
class TrafficReport:
    """What a burst of simulated traffic did and saw."""

    episodes: int = 0  # user turns that got an answer
    interactions: int = 0  # completions made, regenerations included
    events: Counter = field(default_factory=Counter)  # acknowledged events by kind
    rejected: int = 0  # events the server refused
    duplicates: int = 0  # events the server already had (a retried batch)
    by_version: dict[str, VersionTally] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def satisfaction(self) -> float:
        """Mean hidden satisfaction of every answer served (the first choice of each completion)."""
        total = sum(s.score_sum for s in self.by_version.values())
        return total / self.interactions if self.interactions else 0.0

    @property
    def positive_rate(self) -> float | None:
        """Share of explicit feedback (thumbs, ratings) that was positive; None without any."""
        explicit = sum(s.explicit for s in self.by_version.values())
        return sum(s.positive for s in self.by_version.values()) / explicit if explicit else None

    @property
    def explicit_share(self) -> float:
        """Share of interactions that got a thumbs or a rating."""
        explicit = sum(s.explicit for s in self.by_version.values())
        return explicit / self.interactions if self.interactions else 0.0

    def summary(self) -> str:
        """One line for a log or a demo table."""
        rate = "n/a" if self.positive_rate is None else f"{self.positive_rate:.0%}"
        kinds = " ".join(f"{k}={v}" for k, v in sorted(self.events.items()))
        return (
            f"{self.interactions} interactions, {sum(self.events.values())} events ({kinds}), "
            f"satisfaction {self.satisfaction:.3f}, positive feedback {rate}, {self.elapsed_s:.0f}s"
        )


@dataclass
class _Served:
    interaction_id: str
    texts: list[str]
    version: str
    arm: str | None


class _Session:
    """One server, one tenant key: the clients, the shared report and its lock."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float) -> None:
        base = base_url.rstrip("/")
        self.chat = openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, timeout=timeout, max_retries=3)
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )
        self.model = model
        self.report = TrafficReport()
        self.lock = threading.Lock()

    def close(self) -> None:
        self.chat.close()
        self.http.close()

    def complete(
        self, scenario: Scenario, prompt: Prompt, session: str | None = None, **kwargs: Any
    ) -> _Served:
        """One chat completion in `session` (OpenAI's `metadata`); the response id is the interaction id
        tuneloop captured."""
        raw = self.chat.chat.completions.with_raw_response.create(
            model=self.model,
            messages=scenario.messages(prompt),  # type: ignore[arg-type]
            max_tokens=scenario.max_tokens,
            **{
                k: v
                for k, v in {
                    "temperature": scenario.temperature,
                    "metadata": {"session_id": session} if session else None,
                    **kwargs,
                }.items()
                if v is not None
            },
        )
        completion = raw.parse()
        iid = raw.headers.get("x-tuneloop-interaction-id") or completion.id
        texts = [c.message.content or "" for c in completion.choices]
        version = raw.headers.get("x-tuneloop-version") or completion.model or "unknown"
        return _Served(iid, texts, version, raw.headers.get("x-tuneloop-arm"))

    def send(self, batch: list[dict], attempts: int = 4) -> None:
        """Post the events in one batch; a retry resends the same body, so the same event ids."""
        if not batch:
            return
        for attempt in range(attempts):
            try:
                resp = self.http.post("/v1/feedback", json={"events": batch})
            except httpx.TransportError as exc:
                error: str = f"feedback: {exc!r}"
            else:
                if resp.status_code not in RETRY_STATUSES:
                    self._count(batch, resp)
                    return
                error = f"feedback: HTTP {resp.status_code} {resp.text[:200]}"
                time.sleep(float(resp.headers.get("retry-after") or 0))
            time.sleep(0.2 * 2**attempt)
        with self.lock:
            self.report.errors.append(error)

    def _count(self, batch: list[dict], resp: httpx.Response) -> None:
        if resp.status_code != 200:
            with self.lock:
                self.report.rejected += len(batch)
                self.report.errors.append(f"feedback: HTTP {resp.status_code} {resp.text[:200]}")
            return
        results = resp.json().get("results", [])
        with self.lock:
            for item, result in zip(batch, results, strict=False):
                status = result.get("status")
                if status in ("accepted", "duplicate"):
                    self.report.events[item["kind"]] += 1
                    self.report.duplicates += status == "duplicate"
                else:
                    self.report.rejected += 1
                    self.report.errors.append(f"event {item['id']} rejected: {result}")

    def record(self, served: _Served, score: float, positive: bool | None) -> None:
        with self.lock:
            stats = self.report.by_version.setdefault(served.version, VersionTally())
            stats.interactions += 1
            stats.score_sum += score
            if served.arm:
                stats.arms.add(served.arm)
            if positive is not None:
                stats.explicit += 1
                stats.positive += positive
            self.report.interactions += 1


def _episode(session: _Session, scenario: Scenario, traffic: list[Prompt], seed: int, index: int) -> None:
    """One user's visit: a conversation, and another one about the same issue if the first did not help."""
    rng = random.Random(f"{scenario.name}:{seed}:episode:{index}")
    prompt = rng.choice(traffic)
    user = f"sim-u{rng.randrange(scenario.behaviour.users)}"
    conversation = f"sim-{scenario.name}-{seed}-{index}"
    if _conversation(session, scenario, prompt, user, conversation, rng):
        _conversation(session, scenario, prompt, user, f"{conversation}-again", rng, may_return=False)


def _conversation(
    session: _Session,
    scenario: Scenario,
    prompt: Prompt,
    user: str,
    conversation: str,
    rng: random.Random,
    *,
    may_return: bool = True,
) -> bool:
    """Ask, read, react, maybe regenerate or compare two answers, send the feedback (and a supervisor's
    review); True when the user will come back about the same issue."""
    b = scenario.behaviour
    pairwise = rng.random() < b.pairwise
    request_seed = rng.randrange(2**31)
    served = session.complete(
        scenario, prompt, conversation, user=user, n=2 if pairwise else None, seed=request_seed
    )
    if pairwise and len(served.texts) >= 2:
        pick = choose(scenario, prompt, served.texts, rng)
        session.record(served, scenario.score(prompt, served.texts[0]), None)
        if pick is not None:
            session.send([event(served.interaction_id, "preference", pick, user)])
        return False
    reaction = react(scenario, prompt, served.texts[0], rng)
    session.record(served, reaction.score, reaction.positive)
    reviews = _reviewed(scenario, prompt, served, rng) + _sources(
        session, scenario, prompt, served, user, rng
    )
    if not reaction.regenerate:
        session.send(events(served.interaction_id, reaction, user) + reviews)
        return may_return and reaction.comes_back
    again = session.complete(scenario, prompt, conversation, user=user, seed=request_seed + 1)
    second = react(scenario, prompt, again.texts[0], rng, may_regenerate=False)
    session.record(again, second.score, second.positive)
    # The regenerated event points at an interaction that now exists, so it goes after the new request.
    batch = events(served.interaction_id, reaction, user, replaced_by=again.interaction_id)
    session.send(batch + reviews + events(again.interaction_id, second, user))
    return may_return and second.comes_back


def _sources(
    session: _Session, scenario: Scenario, prompt: Prompt, served: _Served, user: str, rng: random.Random
) -> list[dict]:
    """What the user did with the sources the answer showed (as the app's retrieval log lists them)."""
    if scenario.sources is None:
        return []
    found = session.http.get("/v1/retrievals", params={"interaction_id": served.interaction_id})
    found.raise_for_status()
    records = found.json()["data"]
    marks = scenario.marks(rng, prompt.topic, records[0]["results"] if records else [])
    return [  # one event per source and kind: ids of their own, so none is taken for a retry's copy
        {**event(served.interaction_id, kind, value, user), "id": f"sim.{served.interaction_id}.{kind}.{n}"}
        for n, (kind, value) in enumerate(marks)
    ]


def _reviewed(scenario: Scenario, prompt: Prompt, served: _Served, rng: random.Random) -> list[dict]:
    """A supervisor's review of the served answer, as `labeler` events (none for most answers)."""
    found = review(scenario, prompt, served.texts[0], rng)
    return [event(served.interaction_id, kind, value, who, "labeler") for kind, value, who in found]


def run_traffic(
    base_url: str,
    api_key: str,
    scenario: Scenario,
    n_interactions: int,
    concurrency: int = 8,
    seed: int = 0,
    *,
    model: str = "tuneloop",
    timeout: float = 300.0,
) -> TrafficReport:
    """Send `n_interactions` simulated user turns (with their feedback) to the server; concurrent
    requests let the server batch generation. Raises SimError when most turns failed."""
    traffic = scenario.split()[0]
    session = _Session(base_url, api_key, model, timeout)
    started = time.perf_counter()

    def run(index: int) -> None:
        try:
            _episode(session, scenario, traffic, seed, index)
        except (openai.APIError, httpx.HTTPError) as exc:
            with session.lock:
                session.report.errors.append(f"episode {index}: {exc!r}")
            return
        with session.lock:
            session.report.episodes += 1

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(run, range(n_interactions)))
    finally:
        session.close()
    report = session.report
    report.elapsed_s = time.perf_counter() - started
    if n_interactions and report.episodes < n_interactions / 2:
        raise SimError(
            f"{n_interactions - report.episodes} of {n_interactions} turns failed: {report.errors[:3]}"
        )
    return report


def answers(
    base_url: str,
    api_key: str,
    scenario: Scenario,
    prompts: list[Prompt] | None = None,
    concurrency: int = 8,
    *,
    model: str = "tuneloop",
    user: str | None = "sim-eval",
    timeout: float = 300.0,
) -> list[tuple[Prompt, str, float]]:
    """What the server answers each evaluation prompt at temperature 0, with its hidden score."""
    prompts = scenario.eval_prompts() if prompts is None else prompts
    session = _Session(base_url, api_key, model, timeout)

    def ask(prompt: Prompt) -> tuple[Prompt, str, float]:
        text = session.complete(scenario, prompt, user=user, temperature=0).texts[0]
        return prompt, text, scenario.score(prompt, text)

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(ask, prompts))
    finally:
        session.close()


def satisfaction(
    base_url: str,
    api_key: str,
    scenario: Scenario,
    prompts: list[Prompt] | None = None,
    concurrency: int = 8,
    *,
    model: str = "tuneloop",
    user: str | None = "sim-eval",
) -> float:
    """Mean hidden satisfaction of the server's temperature-0 answers on a fixed evaluation set (by
    default `scenario.eval_prompts()`, held out from traffic). No feedback is sent."""
    scored = answers(base_url, api_key, scenario, prompts, concurrency, model=model, user=user)
    return sum(s for _, _, s in scored) / len(scored) if scored else 0.0
