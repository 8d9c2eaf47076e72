"""The grounding suite checks answers' claims against the sources shown with them, with the real MiniLM."""

from __future__ import annotations

from pathlib import Path

from tuneloop.evaluate.generation import Evaluator
from tuneloop.evaluate.policy import GatePolicy, GroundingConfig
from tuneloop.evaluate.suites import SUITES, grounding
from tuneloop.evaluate.suites.base import GateContext
from tuneloop.evaluate.suites.grounding import Answered
from tuneloop.retrieve.search import Hit
from tuneloop.store.repository import Store

REFUNDS = "Refunds reach your card within five business days of approval. A refund cannot go to another card."
FEES = "Transfers abroad cost 0.5% of the amount, at least $2. Transfers within the country are free."


def _hit(document: str, text: str) -> Hit:
    return Hit(f"{document}:v1:0", document, 1, 0, len(text), document, text, 0.8, 0.5, f"{document}:v1:0")


SOURCES = [[_hit("refunds", REFUNDS), _hit("fees", FEES)]] * 8
PROMPTS = [[{"role": "user", "content": f"Question {i} about refunds and fees?"}] for i in range(8)]
FAITHFUL = [
    "Your refund reaches your card within five business days of approval [1].",
    "Sending money abroad costs 0.5% of the amount, with a minimum of $2 [2].",
    "Transfers inside the country are free of charge [2].",
    "Refunds can only go back to the card you paid with [1].",
    "After approval, expect the refund on your card within five business days.",
    "Yes. International transfers cost 0.5%, at least $2.",
    "The sources do not say.",
    "A refund is paid to your own card within five business days [1].",
]
INVENTED = [
    "Refunds take 30 days and are paid in cash at any branch.",  # a changed figure
    "Sending money abroad costs 3% of the amount, with a minimum of $15.",
    "You can also get your refund as store credit or a gift voucher.",  # a fact from nowhere
    "Our branches are open Monday to Friday from 9am to 5pm.",
    *FAITHFUL[4:],
]


def test_claims_are_the_sentences_that_state_something() -> None:
    answer = (
        "Yes. Refunds reach your card within five days [1]. Here is how:\n- Open the app and tap Refunds [2]"
    )
    assert grounding.claims(answer) == [
        "Refunds reach your card within five days.",
        "- Open the app and tap Refunds",
    ]


def test_a_candidate_that_states_what_its_sources_do_not_is_blocked() -> None:
    verdict = grounding.compare(
        PROMPTS, Answered(INVENTED, SOURCES), Answered(FAITHFUL, SOURCES), GroundingConfig()
    )
    assert not verdict.passed
    assert verdict.metrics["production_grounded_rate"] == 1.0
    assert verdict.metrics["candidate_grounded_rate"] == 0.5
    assert (verdict.metrics["regressions"], verdict.metrics["fixed"]) == (4, 0)
    assert [r["candidate_supported"] for r in verdict.rows[:4]] == ["0/1"] * 4


def test_a_candidate_that_paraphrases_its_sources_passes() -> None:
    verdict = grounding.compare(
        PROMPTS, Answered(FAITHFUL, SOURCES), Answered(INVENTED, SOURCES), GroundingConfig()
    )
    assert verdict.passed and verdict.metrics["candidate_grounded_rate"] == 1.0
    assert verdict.metrics["fixed"] == 4


def test_each_version_is_held_to_the_sources_it_was_shown() -> None:
    # The candidate shows only the top source (a version's `sources`): the fee it states is from nowhere.
    top_only = [hits[:1] for hits in SOURCES]
    verdict = grounding.compare(
        PROMPTS, Answered(FAITHFUL, top_only), Answered(FAITHFUL, SOURCES), GroundingConfig()
    )
    assert [r["candidate_supported"] for r in verdict.rows if r["regression"]] == ["0/1", "0/1", "0/1"]
    assert verdict.metrics["production_grounded_rate"] == 1.0


def test_the_suite_is_registered_and_skipped_for_a_tenant_without_retrieval(tmp_path: Path) -> None:
    assert "grounding" in SUITES and GatePolicy().suites.grounding.required
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tenant_row, _ = store.create_tenant("acme")
    ctx = GateContext(store.for_tenant(tenant_row), tmp_path, GatePolicy(), None, None, None, Evaluator())  # type: ignore[arg-type]
    verdict = grounding.run(ctx, GroundingConfig())
    store.close()
    assert verdict.passed and verdict.metrics["skipped"]
    assert verdict.reason == "skipped: retrieval is off for this tenant"
