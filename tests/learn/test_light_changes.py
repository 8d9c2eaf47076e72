"""Light changes from a snapshot's pairs (and, with few pairs, its labels): shorter asks get a brevity
instruction, a binding cap is raised for longer asks, regenerations move temperature."""

from __future__ import annotations

from tuneloop.learn.light_changes import BRIEF, propose_changes
from tuneloop.registry.composition import Decoding
from tuneloop.signals.pairs import length_ask

LONG = "This is a long answer that goes on about many things the user never asked about at all. " * 3


def _pair(chosen: str, rejected: str, origin: str = "edit") -> dict:
    prompt = [{"role": "user", "content": "How do I reset my password?"}]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "origin": origin,
    }


def test_users_who_edit_answers_down_are_asked_for_the_length_they_chose_before_the_prompt() -> None:
    pairs = [_pair("Open Settings, then Security.", LONG) for _ in range(10)]
    assert length_ask(pairs).change < -0.5
    [brief] = propose_changes(pairs, Decoding(temperature=0.8), "You are the support desk.")
    instruction = BRIEF.format(words=10)  # the chosen answers' 4 words, shortened further: the floor
    assert brief.prompt == f"{instruction}\n\nYou are the support desk." and brief.decoding is None
    assert "shorter" in brief.reason and "under 10 words" in brief.reason
    assert propose_changes(pairs, Decoding(), None)[0].prompt == instruction
    assert propose_changes(pairs, Decoding(), brief.prompt) == []  # production already asks for it


def test_a_longer_chosen_length_replaces_the_instruction_production_carries() -> None:
    chosen = "Open Settings, then Security, then tap Reset and follow the link we email you. " * 2
    pairs = [_pair(chosen, chosen * 2) for _ in range(10)]  # users' edits of 30 words
    [brief] = propose_changes(pairs, Decoding(), f"{BRIEF.format(words=10)}\n\nYou are the support desk.")
    assert brief.prompt == f"{BRIEF.format(words=30)}\n\nYou are the support desk."


def test_the_instruction_asks_for_less_than_users_chose_by_the_ratio_they_chose_by() -> None:
    """Users pick the shorter of two answers the model wrote; the length they want lies further that way."""
    chosen = " ".join(["word"] * 60)
    pairs = [_pair(chosen, f"{chosen} {chosen}", origin="preference") for _ in range(10)]  # asked -50 %
    [brief] = propose_changes(pairs, Decoding(), None)
    assert brief.prompt == BRIEF.format(words=30) and "under 30 words" in brief.reason


def test_a_users_edit_is_the_length_they_want_and_is_not_shortened_further() -> None:
    edited = " ".join(["word"] * 60)
    pairs = [_pair(edited, f"{edited} {edited}") for _ in range(10)]  # users wrote 60 words: asked -50 %
    [brief] = propose_changes(pairs, Decoding(), None)
    assert brief.prompt == BRIEF.format(words=60)


def test_users_who_want_longer_answers_get_a_cap_that_no_longer_binds() -> None:
    pairs = [_pair(LONG, "Open Settings.") for _ in range(10)]
    [raised] = propose_changes(pairs, Decoding(max_tokens=16), None)
    assert raised.decoding is not None and raised.decoding.max_tokens > len(LONG) / 4
    assert propose_changes(pairs, Decoding(), None) == []  # no cap: nothing binds


def test_regenerations_lower_a_high_temperature_and_raise_a_greedy_one() -> None:
    pairs = [_pair("Answer A.", "Answer B.", origin="regenerated") for _ in range(10)]
    [hot] = propose_changes(pairs, Decoding(temperature=1.0), None)
    [cold] = propose_changes(pairs, Decoding(temperature=0.0), None)
    assert hot.decoding.temperature == 0.6 and cold.decoding.temperature == 0.7


def test_no_candidate_without_a_clear_signal() -> None:
    balanced = [_pair("Answer A.", "Answer B.", origin="preference") for _ in range(10)]
    assert propose_changes(balanced, Decoding(), None) == []
    assert propose_changes([_pair("Short.", LONG)] * 3, Decoding(), None) == []  # too few pairs to act on


def _label(text: str, good: bool, origin: str = "reward") -> dict:
    prompt = [{"role": "user", "content": f"Question about {text[:12]}?"}]
    return {
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": text}],
        "label": good,
        "origin": origin,
    }


def test_users_who_rate_short_answers_up_and_long_ones_down_are_asked_for_brevity_without_pairs() -> None:
    """Thumbs and implicit signals rate answers one at a time: a tenant can hold scores of labels and a
    single pair, and what those labels say about length must still reach a candidate."""
    labels = [_label(f"Short answer {i}.", True) for i in range(8)] + [
        _label(f"{LONG} {i}", False) for i in range(8)
    ]
    pairs = [_pair("Answer A.", "Answer B.")]
    assert length_ask(pairs, labels).change < -0.5 and length_ask(pairs).change == 0.0
    [brief] = propose_changes(pairs, Decoding(), None, labels)
    assert brief.prompt == BRIEF.format(words=10) and "rated up are" in brief.reason
    # Seven labels on one side say too little; enough pairs speak for themselves and labels are not read.
    assert propose_changes(pairs, Decoding(), None, labels[1:]) == []
    balanced = [_pair("Answer A.", "Answer B.", origin="preference") for _ in range(10)]
    assert propose_changes(balanced, Decoding(), None, labels) == []
