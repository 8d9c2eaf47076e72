import random

import pytest

from tests.signals.streams import NOW, event, interaction
from tuneloop.errors import BadRequest
from tuneloop.signals import pairs
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.rewards import compute_rewards

POLICY = RewardPolicy(half_life_days=None, near_duplicate_threshold=1.0)
PAIR_KEYS = {"prompt", "chosen", "rejected", "origin", "event_ids", "interaction_ids", "rater", "confidence"}


def texts(row):
    return row["chosen"][0]["content"], row["rejected"][0]["content"]


def test_preference_between_choices_makes_a_pair_with_lineage() -> None:
    chat = interaction("a", choices=["first", "second", "third"], response="first")
    ev = event("a", "preference", {"chosen": 2, "rejected": 0}, rater="ann", eid="e1")
    [row] = pairs.preference_pairs([chat], [ev], POLICY, NOW)
    assert set(row) == PAIR_KEYS
    assert texts(row) == ("third", "first")
    assert row["prompt"] == chat["messages"] and row["prompt"][-1]["role"] == "user"
    assert row["chosen"][0]["role"] == "assistant"
    assert (row["event_ids"], row["interaction_ids"], row["rater"], row["origin"]) == (
        ["e1"],
        ["a"],
        "ann",
        "preference",
    )


def test_preference_between_interactions_uses_their_responses() -> None:
    chats = [interaction("a", response="short"), interaction("b", response="long")]
    ev = event("b", "preference", {"chosen_interaction": "b", "rejected_interaction": "a"})
    [row] = pairs.preference_pairs(chats, [ev], POLICY, NOW)
    assert texts(row) == ("long", "short")
    assert row["interaction_ids"] == ["b", "a"]


def test_opposite_votes_on_the_same_pair_cancel_and_duplicates_add() -> None:
    chat = interaction("a", choices=["x", "y"], response="x")
    up, down = {"chosen": 0, "rejected": 1}, {"chosen": 1, "rejected": 0}
    tied = [event("a", "preference", up, rater="p"), event("a", "preference", down, rater="q")]
    assert pairs.preference_pairs([chat], tied, POLICY, NOW) == []
    twice = [*tied, event("a", "preference", up, rater="r")]
    [row] = pairs.preference_pairs([chat], twice, POLICY, NOW)
    assert texts(row) == ("x", "y") and len(row["event_ids"]) == 3 and row["rater"] is None


def test_preference_with_an_index_beyond_the_choices_is_skipped() -> None:
    chat = interaction("a", choices=["x", "y"], response="x")
    assert (
        pairs.preference_pairs([chat], [event("a", "preference", {"chosen": 5, "rejected": 0})], POLICY, NOW)
        == []
    )


def test_edit_makes_the_corrected_text_preferred_to_the_response() -> None:
    chat = interaction("a", response="Click reset.")
    [row] = pairs.edit_pairs([chat], [event("a", "edit", "Open Settings > Security > Reset.")], POLICY, NOW)
    assert texts(row) == ("Open Settings > Security > Reset.", "Click reset.")
    assert row["origin"] == "edit" and row["confidence"] == pytest.approx(0.393469, abs=1e-6)


def test_regeneration_prefers_the_kept_answer_to_the_replaced_one() -> None:
    chats = [interaction("old", response="meh"), interaction("new", response="great")]
    events = [event("old", "regenerated", {"replaced_by": "new"}), event("old", "regenerated", None)]
    trusting = RewardPolicy(half_life_days=None, weights={"regenerated": 0.7})
    [row] = pairs.regenerated_pairs(chats, events, trusting, NOW)
    assert texts(row) == ("great", "meh")
    assert row["interaction_ids"] == ["new", "old"] and len(row["event_ids"]) == 1


def test_a_lone_regeneration_makes_no_pair_by_default() -> None:
    chats = [interaction("old", response="meh"), interaction("new", response="great")]
    events = [event("old", "regenerated", {"replaced_by": "new"})]
    assert pairs.regenerated_pairs(chats, events, POLICY, NOW) == []


def test_pairs_below_min_confidence_are_left_out() -> None:
    chats = [interaction("old", response="meh"), interaction("new", response="great")]
    strict = RewardPolicy(half_life_days=None, min_confidence=0.9)
    assert (
        pairs.regenerated_pairs(chats, [event("old", "regenerated", {"replaced_by": "new"})], strict, NOW)
        == []
    )


def test_answers_to_the_same_prompt_pair_up_when_rewards_differ_by_the_margin() -> None:
    chats = [
        interaction("good", response="Use Settings."),
        interaction("bad", response="I don't know."),
        interaction("meh", response="Maybe Settings?"),
        interaction("other", "What is the refund policy?", response="30 days."),
    ]
    events = [
        event("good", "thumbs", 1),
        event("bad", "thumbs", -1),
        event("meh", "rating", 3),
        event("other", "thumbs", -1),
    ]
    rewards = compute_rewards(chats, events, POLICY, NOW)
    rows = pairs.reward_pairs(chats, rewards, POLICY)
    assert sorted(texts(r) for r in rows) == [
        ("Maybe Settings?", "I don't know."),
        ("Use Settings.", "I don't know."),
        ("Use Settings.", "Maybe Settings?"),
    ]
    widest = next(r for r in rows if r["interaction_ids"] == ["good", "bad"])
    assert widest["origin"] == "reward" and len(widest["event_ids"]) == 2
    narrow = RewardPolicy(
        half_life_days=None, near_duplicate_threshold=1.0, pair_margin=1.5, max_pairs_per_prompt=1
    )
    assert [r["interaction_ids"] for r in pairs.reward_pairs(chats, rewards, narrow)] == [["good", "bad"]]


def test_kto_labels_come_from_confident_rewards_beyond_the_threshold() -> None:
    chats = [interaction(i, response=f"answer {i}") for i in ("up", "down", "flat", "faint")]
    events = [
        event("up", "thumbs", 1),
        event("down", "escalated"),
        event("flat", "rating", 3),
        event("faint", "followup", None),
    ]
    rows = pairs.kto_rows(chats, events, compute_rewards(chats, events, POLICY, NOW), POLICY, NOW)
    assert {r["interaction_ids"][0]: r["label"] for r in rows} == {"up": True, "down": False}
    row = next(r for r in rows if r["label"])
    assert row["completion"] == [{"role": "assistant", "content": "answer up"}] and row["reward"] == 1.0


def test_a_lone_copy_or_acceptance_is_a_desirable_label_by_default() -> None:
    chats = [interaction(i, response=f"answer {i}") for i in ("copied", "accepted", "followup")]
    events = [event("copied", "copied"), event("accepted", "accepted"), event("followup", "followup", None)]
    policy = RewardPolicy()
    rows = pairs.kto_rows(chats, events, compute_rewards(chats, events, policy, NOW), policy, NOW)
    assert {r["interaction_ids"][0]: r["label"] for r in rows} == {"copied": True, "accepted": True}


def test_an_edited_text_is_a_desirable_kto_completion() -> None:
    chats = [interaction("e", response="wrong")]
    events = [event("e", "edit", "fixed", eid="x1")]
    rows = pairs.kto_rows(chats, events, compute_rewards(chats, events, POLICY, NOW), POLICY, NOW)
    edited = [r for r in rows if r["origin"] == "edit"]
    assert [(r["completion"][0]["content"], r["label"], r["event_ids"]) for r in edited] == [
        ("fixed", True, ["x1"])
    ]
    assert edited[0]["prompt"] == chats[0]["messages"]


def test_sft_rows_hold_edited_texts_and_high_reward_answers() -> None:
    chats = [
        interaction("e", response="wrong"),
        interaction("g", response="right"),
        interaction("b", response="no"),
    ]
    events = [
        event("e", "edit", "fixed", eid="x1"),
        event("g", "thumbs", 1, eid="x2"),
        event("b", "thumbs", -1),
    ]
    rewards = compute_rewards(chats, events, POLICY, NOW)
    rows = pairs.sft_rows(chats, events, rewards, POLICY, NOW)
    got = {r["messages"][-1]["content"]: (r["origin"], r["event_ids"]) for r in rows}
    assert got == {"fixed": ("edit", ["x1"]), "right": ("reward", ["x2"])}
    assert all(r["messages"][:-1] == chats[0]["messages"] for r in rows)


def test_builder_output_does_not_depend_on_input_order() -> None:
    chats = [interaction(f"i{n}", f"q{n % 3}", f"a{n}", choices=[f"a{n}", f"b{n}"]) for n in range(12)]
    events = [event(f"i{n}", "thumbs", 1 if n % 2 else -1) for n in range(12)]
    events += [event(f"i{n}", "preference", {"chosen": 1, "rejected": 0}) for n in range(0, 12, 3)]
    shuffled_chats, shuffled_events = chats[::-1], random.Random(1).sample(events, len(events))
    rewards = compute_rewards(chats, events, POLICY, NOW)
    assert rewards == compute_rewards(shuffled_chats, shuffled_events, POLICY, NOW)
    assert pairs.reward_pairs(chats, rewards, POLICY) == pairs.reward_pairs(shuffled_chats, rewards, POLICY)
    assert pairs.preference_pairs(chats, events, POLICY, NOW) == pairs.preference_pairs(
        shuffled_chats, shuffled_events, POLICY, NOW
    )


@pytest.mark.parametrize(
    "builder", ["preference_pairs", "edit_pairs", "regenerated_pairs", "sft_rows", "kto_rows"]
)
def test_event_builders_refuse_mixed_tenants(builder) -> None:
    chats = [interaction("a")]
    events = [event("a", "edit", "x", tenant="globex")]
    with_rewards = builder in ("sft_rows", "kto_rows")
    args = (chats, events, {}, POLICY, NOW) if with_rewards else (chats, events, POLICY, NOW)
    with pytest.raises(BadRequest, match="several tenants"):
        getattr(pairs, builder)(*args)


def test_reward_pairs_refuse_mixed_tenants() -> None:
    with pytest.raises(BadRequest, match="several tenants"):
        pairs.reward_pairs([interaction("a"), interaction("b", tenant="globex")], {}, POLICY)
