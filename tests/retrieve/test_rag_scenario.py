"""The `rag` scenario: users prefer the current fact, cited; its outdated pages are hidden-irrelevant."""

from __future__ import annotations

import random
from collections import Counter

from tuneloop.sim import SCENARIOS
from tuneloop.sim.scenarios.rag import DOCUMENTS, FACTS, relevance, source_events


def test_rag_prefers_the_current_cited_fact_over_an_outdated_one() -> None:
    scenario = SCENARIOS["rag"](0)
    for prompt in scenario.pool():
        fact = FACTS[prompt.topic]
        assert scenario.score(prompt, prompt.ideal) == 1.0
        for outdated in fact.outdated:
            stated = scenario.score(prompt, f"It is {outdated} [1].")
            assert stated < scenario.score(prompt, f"It is {fact.current}.") < 1.0
    assert len(DOCUMENTS) == 4 * len(FACTS)
    kinds = ("current", "related", "stale", "archived")
    assert [relevance("atm_limit", f"atm_limit-{k}.md") for k in kinds] == [3, 1, 0, 0]
    assert relevance("atm_limit", "refund_time-current.md") == 0


def test_rag_users_open_sources_with_a_position_bias_and_mark_stale_ones_wrong() -> None:
    rng = random.Random(0)
    opened: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    shown = ["atm_limit-current.md", "atm_limit-related.md", "atm_limit-stale.md", "atm_limit-archived.md"]
    for _ in range(2000):
        order = rng.sample(shown, len(shown))
        for kind, doc in source_events(rng, "atm_limit", order):
            kinds[kind, doc] += 1
            opened[order.index(doc) + 1] += kind == "source_clicked"

    assert opened[1] > 2 * opened[3] > 0
    assert min(kinds["source_wrong", f"atm_limit-{kind}.md"] for kind in ("stale", "archived")) > 0
    assert kinds["source_helpful", "atm_limit-current.md"] > 0
    assert kinds["source_wrong", "atm_limit-current.md"] == 0
