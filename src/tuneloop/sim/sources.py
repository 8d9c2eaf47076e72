"""Simulated users of `POST /v1/retrieve` on the `rag` scenario: each asks a question, the app logs the
interaction it answered from the sources, and the user opens and marks sources with a position bias."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import httpx

from tuneloop.sim.scenarios.rag import DOCUMENTS, rag, relevance


@dataclass(frozen=True)
class Session:
    """What one user was shown (document ids in order) for a question of `topic`, and their events."""

    topic: str
    shown: list[str]
    events: int

    def ndcg(self, k: int = 5) -> float:
        """Hidden NDCG@k of what was shown against the best list the whole collection allows."""
        best = sorted((relevance(self.topic, d) for d in DOCUMENTS), reverse=True)
        return _dcg([relevance(self.topic, d) for d in self.shown], k) / _dcg(best, k)


def _dcg(labels: list[int], k: int) -> float:
    return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(labels[:k]))


def retrieval_sessions(
    http: httpx.Client, sessions: int, *, seed: int, tag: str, k: int = 4
) -> list[Session]:
    """Run `sessions` users against the server `http` points at (with a tenant's key); what each saw."""
    rng = random.Random(seed)
    scenario = rag(seed)
    prompts = scenario.pool()
    out = []
    for i in range(sessions):
        prompt = rng.choice(prompts)
        iid = f"int-{tag}-{i}"
        found = http.post("/v1/retrieve", json={"query": prompt.text, "k": k, "interaction_id": iid})
        found.raise_for_status()
        results = found.json()["data"]
        message = {"role": "user", "content": prompt.text}
        logged = {"id": iid, "messages": [message], "response": prompt.ideal}
        http.post("/v1/interactions", json=logged).raise_for_status()
        events = [
            {"id": f"{iid}-{n}", "interaction_id": iid, "kind": kind, "value": value}
            for n, (kind, value) in enumerate(scenario.marks(rng, prompt.topic, results))
        ]
        if events:
            http.post("/v1/feedback", json={"events": events}).raise_for_status()
        out.append(Session(prompt.topic, [r["document_id"] for r in results], len(events)))
    return out
