"""Decoding candidates from a snapshot's pairs: shorter asks cap answers, regenerations move temperature."""

from __future__ import annotations

from tuneloop.learn.decoding import propose_decodings
from tuneloop.registry.composition import Decoding
from tuneloop.signals.pairs import asked_length_change

LONG = "This is a long answer that goes on about many things the user never asked about at all. " * 3


def _pair(chosen: str, rejected: str, origin: str = "edit") -> dict:
    prompt = [{"role": "user", "content": "How do I reset my password?"}]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "origin": origin,
    }


def test_users_who_edit_answers_down_get_a_cap_and_a_cooler_candidate() -> None:
    pairs = [_pair("Open Settings, then Security.", LONG) for _ in range(10)]
    assert asked_length_change(pairs) < -0.5
    proposals = propose_decodings(pairs, Decoding(temperature=0.8))
    caps = {p.decoding.max_tokens for p in proposals}
    assert len(caps) == 1 and caps.pop() < len(LONG) / 4  # near the chosen length, far below the rejected
    assert [p.decoding.temperature for p in proposals] == [0.8, 0.48]
    assert all("shorter" in p.reason for p in proposals)


def test_regenerations_lower_a_high_temperature_and_raise_a_greedy_one() -> None:
    pairs = [_pair("Answer A.", "Answer B.", origin="regenerated") for _ in range(10)]
    [hot] = propose_decodings(pairs, Decoding(temperature=1.0))
    [cold] = propose_decodings(pairs, Decoding(temperature=0.0))
    assert hot.decoding.temperature == 0.6 and cold.decoding.temperature == 0.7


def test_no_candidate_without_a_clear_signal() -> None:
    balanced = [_pair("Answer A.", "Answer B.", origin="preference") for _ in range(10)]
    assert propose_decodings(balanced, Decoding()) == []
    assert propose_decodings([_pair("Short.", LONG)] * 3, Decoding()) == []  # too few pairs to act on
