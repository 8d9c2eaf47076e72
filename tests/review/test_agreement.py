"""Krippendorff's alpha against the published example, and flagging a reviewer whose agreement falls."""

from __future__ import annotations

from tuneloop.review.agreement import (
    FLAG_BELOW,
    alpha,
    expected_disagreement,
    interval,
    nominal,
    reviewer_alpha,
)

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values.
RELIABILITY_DATA = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def units_of(data: dict[str, list]) -> dict[int, dict[str, float]]:
    units: dict[int, dict[str, float]] = {}
    for reviewer, values in data.items():
        for unit, value in enumerate(values):
            if value is not None:
                units.setdefault(unit, {})[reviewer] = value
    return units


def test_alpha_matches_krippendorffs_published_example() -> None:
    units = units_of(RELIABILITY_DATA)
    assert round(alpha(units, nominal), 3) == 0.743
    assert round(alpha(units, interval), 3) == 0.849


def test_alpha_is_undefined_without_two_values_or_without_variety() -> None:
    assert alpha({1: {"a": 1.0}}) is None
    assert alpha({1: {"a": 1.0, "b": 1.0}, 2: {"a": 1.0, "b": 1.0}}) is None


def test_a_reviewer_who_votes_at_random_falls_below_the_flag_and_the_others_do_not() -> None:
    truth = [i % 2 for i in range(20)]
    noisy = [1 - t if i % 2 else t for i, t in enumerate(truth)]  # wrong on every other item
    units = units_of({"ana": truth, "ben": truth, "eve": noisy})
    expected = expected_disagreement(units, nominal)
    assert reviewer_alpha(units, "eve", nominal, expected) < FLAG_BELOW
    assert reviewer_alpha(units, "ana", nominal, expected) > FLAG_BELOW
