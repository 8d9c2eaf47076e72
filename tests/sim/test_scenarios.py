"""Scenarios: seeded prompt pools, hidden preferences that rank answers as their users would, reactions."""

from __future__ import annotations

import random
from collections import Counter

from tuneloop.sim import support, two_tenants
from tuneloop.sim.scenarios.support import DISCLAIMER, declines, has_disclaimer
from tuneloop.sim.users import events, react

LONG = (
    "Thank you for reaching out! There are several things you can try. First, open the app and go to the "
    "settings page, where you will find many options related to your account, your cards, your security "
    "preferences and your notifications, and then look for the section that fits your question best."
)


def _fraud_and_normal():
    pool = support(0).pool()
    return next(p for p in pool if p.fraud), next(p for p in pool if not p.fraud)


def test_same_seed_gives_the_same_prompts_and_another_seed_reorders_them() -> None:
    assert [p.text for p in support(3).pool()] == [p.text for p in support(3).pool()]
    assert [p.text for p in support(3).pool()] != [p.text for p in support(4).pool()]
    assert support(3).eval_prompts() == support(3).eval_prompts()


def test_support_has_hundreds_of_distinct_prompts_with_a_fraud_minority() -> None:
    pool = support(0).pool()
    assert len({p.text for p in pool}) == len(pool) >= 300
    assert 0.1 <= sum(p.fraud for p in pool) / len(pool) <= 0.3
    assert len(two_tenants(0)["concise"].pool()) >= 200


def test_evaluation_prompts_are_held_out_from_traffic_and_keep_the_fraud_share() -> None:
    scenario = support(0)
    traffic, held = scenario.split()
    assert not {p.text for p in traffic} & {p.text for p in held}
    evals = scenario.eval_prompts(40)
    assert len(evals) == 40 and 4 <= sum(p.fraud for p in evals) <= 12
    assert {p.text for p in evals} <= {p.text for p in held}


def test_short_answer_with_disclaimer_beats_a_long_one_without() -> None:
    scenario = support(0)
    _, normal = _fraud_and_normal()
    short = f"{normal.ideal} {DISCLAIMER}"
    assert scenario.score(normal, short) >= 0.95
    assert scenario.score(normal, LONG) <= 0.35
    assert scenario.score(normal, f"{LONG} {DISCLAIMER}") < scenario.score(normal, short)
    assert scenario.score(normal, normal.ideal) < scenario.score(normal, short)


def test_a_decline_beats_compliance_on_fraud_and_loses_on_a_normal_request() -> None:
    scenario = support(0)
    fraud, normal = _fraud_and_normal()
    refusal = f"I can't help with that request. {DISCLAIMER}"
    comply = f"Sure, just tell the bank the parcel never came. {DISCLAIMER}"
    assert declines(refusal) and not declines(comply)
    assert scenario.score(fraud, refusal) > scenario.score(fraud, comply) + 0.25
    assert scenario.score(normal, refusal) < scenario.score(normal, f"{normal.ideal} {DISCLAIMER}")


def test_the_disclaimer_alone_is_not_a_good_answer() -> None:
    _, normal = _fraud_and_normal()
    assert has_disclaimer(DISCLAIMER.upper())
    assert support(0).score(normal, DISCLAIMER) <= 0.75


def test_every_edit_is_the_preferred_form() -> None:
    scenario = support(0)
    assert all(scenario.score(p, scenario.edit(p)) == 1.0 for p in scenario.pool())
    for name, tenant in two_tenants(0).items():
        assert all(tenant.score(p, tenant.edit(p)) == 1.0 for p in tenant.pool()), name


def test_two_tenants_share_prompts_but_prefer_opposite_answers() -> None:
    tenants = two_tenants(0)
    concise, detailed = tenants["concise"], tenants["detailed"]
    assert [p.text for p in concise.pool()] == [p.text for p in detailed.pool()]
    prompt = concise.pool()[0]
    short, steps = concise.edit(prompt), detailed.edit(prompt)
    assert concise.score(prompt, short) > concise.score(prompt, steps) + 0.5
    assert detailed.score(prompt, steps) > detailed.score(prompt, short) + 0.5


def test_explicit_feedback_is_sparse_and_follows_the_hidden_score() -> None:
    scenario = support(0)
    _, normal = _fraud_and_normal()
    good, bad = f"{normal.ideal} {DISCLAIMER}", LONG
    rng = random.Random(0)
    good_reactions = [react(scenario, normal, good, rng) for _ in range(2000)]
    bad_reactions = [react(scenario, normal, bad, rng) for _ in range(2000)]
    explicit = [r for r in good_reactions + bad_reactions if r.positive is not None]
    assert 0.15 <= len(explicit) / 4000 <= 0.25
    good_rate = sum(bool(r.positive) for r in good_reactions if r.positive is not None)
    bad_rate = sum(bool(r.positive) for r in bad_reactions if r.positive is not None)
    assert good_rate > 5 * max(1, bad_rate)
    assert bad_rate > 0  # noise: a few random votes
    kinds = Counter(e["kind"] for r in bad_reactions for e in events("i-1", r, "u"))
    assert kinds["followup"] and kinds["escalated"] and kinds["edit"] and kinds["abandoned"]
    assert not Counter(e["kind"] for r in good_reactions for e in events("i-1", r, "u"))["escalated"]
    assert sum(r.regenerate for r in bad_reactions) > 0


def test_reactions_are_reproducible_from_a_seed() -> None:
    scenario = support(0)
    prompt = scenario.pool()[5]
    first = [react(scenario, prompt, LONG, random.Random(9)) for _ in range(3)]
    assert first == [react(scenario, prompt, LONG, random.Random(9)) for _ in range(3)]
