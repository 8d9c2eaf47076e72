"""The `rag` scenario: users prefer the current fact, cited; its stale page is hidden-irrelevant."""

from __future__ import annotations

import random
from collections import Counter

from tuneloop.sim import SCENARIOS
from tuneloop.sim.scenarios.rag import DOCUMENTS, FACTS, relevance, source_events


def test_rag_prefers_the_current_cited_fact_over_the_stale_one() -> None:
    scenario = SCENARIOS["rag"](0)
    for prompt in scenario.pool():
        _, current, stale, *_ = FACTS[prompt.topic]
        assert scenario.score(prompt, prompt.ideal) == 1.0
        assert (
            scenario.score(prompt, f"It is {stale} [1].") < scenario.score(prompt, f"It is {current}.") < 1.0
        )
    assert len(DOCUMENTS) == 3 * len(FACTS)
    assert [relevance("atm_limit", f"atm_limit-{k}.md") for k in ("current", "related", "stale")] == [3, 1, 0]
    assert relevance("atm_limit", "refund_time-current.md") == 0


def test_rag_users_open_sources_with_a_position_bias_and_mark_stale_ones_wrong() -> None:
    rng = random.Random(0)
    opened: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    shown = ["atm_limit-current.md", "atm_limit-related.md", "atm_limit-stale.md", "fees.md"]
    for _ in range(2000):
        order = rng.sample(shown, len(shown))
        for kind, doc in source_events(rng, "atm_limit", order):
            kinds[kind, doc] += 1
            opened[order.index(doc) + 1] += kind == "source_clicked"

    assert opened[1] > 2 * opened[3] > 0
    assert (
        kinds["source_wrong", "atm_limit-stale.md"] > 0
        and kinds["source_helpful", "atm_limit-current.md"] > 0
    )
    assert kinds["source_wrong", "atm_limit-current.md"] == 0
