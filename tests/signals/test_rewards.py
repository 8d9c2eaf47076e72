import math

import pytest

from tests.signals.streams import NOW, event, interaction
from tuneloop.errors import BadRequest
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.rewards import compute_rewards

POLICY = RewardPolicy(half_life_days=None)


def rewards_of(interactions, events, policy=POLICY, **kwargs):
    return compute_rewards(interactions, events, policy, NOW, **kwargs)


def test_thumbs_and_ratings_map_to_signed_rewards() -> None:
    chats = [interaction(i) for i in ("a", "b", "c", "d")]
    events = [
        event("a", "thumbs", 1),
        event("b", "thumbs", -1),
        event("c", "rating", 4),
        event("d", "rating", 1),
    ]
    got = {iid: r.reward for iid, r in rewards_of(chats, events).items()}
    assert got == {"a": 1.0, "b": -1.0, "c": 0.5, "d": -1.0}


def test_implicit_signals_have_their_fixed_direction() -> None:
    kinds = {
        "accepted": 1.0,
        "copied": 1.0,
        "escalated": -1.0,
        "abandoned": -1.0,
        "followup": -1.0,
        "edit": -1.0,
    }
    chats = [interaction(kind) for kind in kinds]
    events = [event(kind, kind, "fixed text" if kind == "edit" else True) for kind in kinds]
    events.append(event("regen", "regenerated", None))
    chats.append(interaction("regen"))
    got = {iid: r.reward for iid, r in rewards_of(chats, events).items()}
    assert got == {**kinds, "regen": -1.0}


def test_comment_and_dwell_carry_no_reward() -> None:
    events = [event("a", "comment", "meh"), event("a", "dwell_ms", 12000)]
    assert rewards_of([interaction("a")], events) == {}


def test_weighted_mean_and_confidence_grow_with_evidence() -> None:
    chats = [interaction("a"), interaction("b")]
    events = [
        event("a", "thumbs", 1),
        event("a", "followup", None),
        event("b", "thumbs", 1),
        event("b", "accepted"),
    ]
    got = rewards_of(chats, events)
    assert got["a"].reward == pytest.approx((1.0 - 0.2) / 1.2, abs=1e-6)
    assert got["a"].confidence == pytest.approx(1 - math.exp(-1.2), abs=1e-6)
    assert got["b"].confidence > rewards_of(chats, events[:1])["a"].confidence


def test_preferences_reward_the_chosen_and_penalise_the_rejected_answer() -> None:
    chats = [interaction("a"), interaction("b"), interaction("c", choices=["x", "y"], response="x")]
    events = [
        event("a", "preference", {"chosen_interaction": "a", "rejected_interaction": "b"}),
        event("c", "preference", {"chosen": 1, "rejected": 0}),
    ]
    got = {iid: r.reward for iid, r in rewards_of(chats, events).items()}
    assert got == {"a": 1.0, "b": -1.0, "c": -1.0}


def test_outcomes_count_only_when_named_in_the_policy_and_negative_weight_flips() -> None:
    policy = RewardPolicy(half_life_days=None, outcomes={"tests_passed": 1.0, "refund": -2.0, "score": 1.0})
    chats = [interaction(i) for i in ("a", "b", "c", "d")]
    events = [
        event("a", "outcome", {"name": "tests_passed", "value": False}),
        event("b", "outcome", {"name": "refund", "value": True}),
        event("c", "outcome", {"name": "score", "value": 0.25}),
        event("d", "outcome", {"name": "unlisted", "value": True}),
    ]
    got = rewards_of(chats, events, policy)
    assert {iid: r.reward for iid, r in got.items()} == {"a": -1.0, "b": -1.0, "c": 0.25}
    assert got["b"].weight == 2.0


def test_old_events_weigh_less_under_time_decay() -> None:
    policy = RewardPolicy(half_life_days=10)
    chats = [interaction("a", days_ago=40)]
    fresh = rewards_of(chats, [event("a", "thumbs", -1, days_ago=0)], policy)["a"]
    old = rewards_of(chats, [event("a", "thumbs", -1, days_ago=20)], policy)["a"]
    assert fresh.weight == 1.0 and old.weight == pytest.approx(0.25)
    mixed = rewards_of(
        chats, [event("a", "thumbs", -1, days_ago=20), event("a", "thumbs", 1, days_ago=0)], policy
    )
    assert mixed["a"].reward == pytest.approx(0.75 / 1.25, abs=1e-6)


def test_evidence_decayed_to_nothing_gives_no_reward_rather_than_a_division_by_zero() -> None:
    policy = RewardPolicy(half_life_days=1 / 24)  # an hour: a year-old thumbs weighs 2^-8760, i.e. 0.0
    chats = [interaction("a", days_ago=400), interaction("b")]
    events = [event("a", "thumbs", 1, days_ago=365), event("b", "thumbs", 1)]
    assert set(rewards_of(chats, events, policy)) == {"b"}


def test_events_after_now_are_unseen() -> None:
    assert rewards_of([interaction("a")], [event("a", "thumbs", 1, days_ago=-1)]) == {}


def test_rater_weights_scale_each_raters_evidence() -> None:
    events = [event("a", "thumbs", 1, rater="good"), event("a", "thumbs", -1, rater="bad")]
    got = rewards_of([interaction("a")], events, rater_weights={"good": 1.0, "bad": 0.0})["a"]
    assert got.reward == 1.0 and got.rater == "good"
    assert len(got.event_ids) == 1


def test_source_weights_scale_judges() -> None:
    events = [event("a", "thumbs", 1, source="judge", rater="gpt")]
    assert rewards_of([interaction("a")], events)["a"].weight == 0.5


def test_no_rater_holds_more_than_the_cap_of_evidence_weight() -> None:
    policy = RewardPolicy(half_life_days=None, rater_cap=0.25)
    chats = [interaction(f"i{n}") for n in range(40)]
    events = [event(f"i{n}", "thumbs", -1, rater="loud") for n in range(40)]
    events += [event(f"i{n}", "thumbs", 1, rater=f"r{n % 4}") for n in range(8)]
    got = rewards_of(chats, events, policy)
    loud = sum(r.weight for r in got.values()) - 8
    assert loud / sum(r.weight for r in got.values()) == pytest.approx(0.25, abs=1e-6)
    assert all(got[f"i{n}"].reward > 0 for n in range(8))


def test_records_from_several_tenants_are_refused() -> None:
    with pytest.raises(BadRequest, match="several tenants"):
        rewards_of([interaction("a"), interaction("b", tenant="other")], [])
    with pytest.raises(BadRequest, match="several tenants"):
        rewards_of([interaction("a")], [event("a", "thumbs", 1, tenant="other")])


def test_an_outcome_integer_past_float_range_already_stored_reads_as_the_extreme_not_an_error() -> None:
    # Ingest refuses them now; one stored before must not raise OverflowError at every read of the tenant.
    policy = RewardPolicy(half_life_days=None, outcomes={"resolved": 1.0})
    chats = [interaction("a"), interaction("b")]
    events = [
        event("a", "outcome", {"name": "resolved", "value": 10**400}),
        event("b", "outcome", {"name": "resolved", "value": -(10**400)}),
    ]
    assert {iid: r.reward for iid, r in rewards_of(chats, events, policy).items()} == {"a": 1.0, "b": -1.0}
