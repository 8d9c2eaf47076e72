import random

import pytest

from tests.signals.streams import NOW, event, interaction
from tuneloop.errors import BadRequest
from tuneloop.signals import RewardPolicy, build_signals

# A tenant that trusts regenerations enough for them to make pairs on their own.
POLICY = RewardPolicy(
    half_life_days=14, near_duplicate_threshold=1.0, heldout_fraction=0.3, weights={"regenerated": 0.7}
)


def stream():
    chats, events = [], []
    for n in range(24):
        iid = f"i{n}"
        chats.append(
            interaction(
                iid,
                f"question {n % 8}",
                f"answer {n}",
                choices=[f"answer {n}", f"alt {n}"],
                user=f"u{n % 5}",
                days_ago=n / 2,
            )
        )
        events.append(event(iid, "thumbs", 1 if n % 3 else -1, days_ago=n / 3))
        if n % 4 == 0:
            events.append(event(iid, "edit", f"better answer {n}", days_ago=n / 4))
        if n % 5 == 0:
            events.append(
                event(iid, "preference", {"chosen": 1, "rejected": 0}, rater="lab1", source="labeler")
            )
        if n % 6 == 1:
            events.append(event(iid, "regenerated", {"replaced_by": f"i{n + 1}"}))
    return chats, events


def test_every_dataset_carries_lineage_and_a_split() -> None:
    signals = build_signals(*stream(), POLICY, NOW)
    assert signals.tenant_id == "acme"
    assert {r["origin"] for r in signals.pairs} == {"preference", "edit", "regenerated", "reward"}
    for rows in (signals.pairs, signals.kto, signals.sft):
        assert rows
        for row in rows:
            assert row["event_ids"] and row["interaction_ids"] and row["split"] in ("train", "heldout")
            assert row["confidence"] >= POLICY.min_confidence


def test_content_hash_is_a_pure_function_of_the_inputs() -> None:
    chats, events = stream()
    first = build_signals(chats, events, POLICY, NOW)
    again = build_signals(chats[::-1], random.Random(5).sample(events, len(events)), POLICY, NOW)
    assert (first.pairs, first.kto, first.sft) == (again.pairs, again.kto, again.sft)
    assert first.content_hash() == again.content_hash()
    assert build_signals(
        chats, events, RewardPolicy(**{**POLICY.model_dump(), "seed": 9}), NOW
    ).content_hash() != (first.content_hash())


def test_feedback_after_the_snapshot_time_is_not_used() -> None:
    chats, events = stream()
    late = [event("i0", "thumbs", -1, days_ago=-1), event("i3", "escalated", days_ago=-2)]
    assert build_signals(chats, events + late, POLICY, NOW).content_hash() == (
        build_signals(chats, events, POLICY, NOW).content_hash()
    )


def test_build_refuses_records_from_two_tenants() -> None:
    chats, events = stream()
    with pytest.raises(BadRequest, match="several tenants"):
        build_signals([*chats, interaction("x", tenant="globex")], events, POLICY, NOW)


@pytest.mark.slow
def test_rows_are_in_trl_conversational_formats() -> None:
    from datasets import Dataset
    from trl.data_utils import is_conversational, unpair_preference_dataset

    signals = build_signals(*stream(), POLICY, NOW)
    pairs, kto, sft = (Dataset.from_list(rows) for rows in (signals.pairs, signals.kto, signals.sft))
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert {"prompt", "completion", "label"} <= set(kto.column_names)
    assert "messages" in sft.column_names
    assert all(is_conversational(ds[0]) for ds in (pairs, kto, sft))
    unpaired = unpair_preference_dataset(pairs.select_columns(["prompt", "chosen", "rejected"]))
    assert set(unpaired.column_names) == set(
        kto.select_columns(["prompt", "completion", "label"]).column_names
    )


def test_an_answer_holding_a_redaction_placeholder_is_never_taught() -> None:
    """A user's edit "select Add <PERSON>" (a UI label the recogniser read as a name) taught an adapter to
    write "<PERSON>" to customers; such an answer may stand as the rejected one, never as the target."""
    chats, events = stream()
    chats.append(interaction("ip", "question 1", "I am sorry, I can't", user="u1", days_ago=0.1))
    chats.append(interaction("iq", "question 2", "Write to <EMAIL_ADDRESS> today", user="u2", days_ago=0.1))
    events += [
        event("ip", "edit", "Go to Manage Trip and select Add <PERSON>.", days_ago=0.05),
        event("ip", "thumbs", -1, days_ago=0.05),
        event("iq", "thumbs", -1, days_ago=0.05),
    ]
    signals = build_signals(chats, events, POLICY, NOW)
    taught = [r["chosen"] for r in signals.pairs] + [r["messages"][-1:] for r in signals.sft]
    taught += [r["completion"] for r in signals.kto if r["label"]]
    assert taught and not any("<PERSON>" in str(t) or "<EMAIL_ADDRESS>" in str(t) for t in taught)
    undesirable = [r["completion"] for r in signals.kto if not r["label"]]
    assert any("<EMAIL_ADDRESS>" in str(t) for t in undesirable)
