from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneloop.capture.events import FeedbackIn, InteractionIn


def _event(kind: str, value: object = None) -> dict:
    return {"id": "e1", "interaction_id": "i1", "kind": kind, "value": value}


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        ("thumbs", -1, -1),
        ("rating", 5, 5),
        ("preference", {"chosen": 1, "rejected": 0}, {"chosen": 1, "rejected": 0}),
        (
            "preference",
            {"chosen_interaction": "a", "rejected_interaction": "b"},
            {"chosen_interaction": "a", "rejected_interaction": "b"},
        ),
        ("edit", "better text", "better text"),
        ("accepted", None, True),
        ("escalated", True, True),
        ("regenerated", {"replaced_by": "i2"}, {"replaced_by": "i2"}),
        ("regenerated", None, None),
        ("followup", "and then?", "and then?"),
        ("dwell_ms", 1500.5, 1500.5),
        ("outcome", {"name": "tests_passed", "value": True}, {"name": "tests_passed", "value": True}),
    ],
)
def test_each_kind_accepts_its_documented_value(kind: str, value: object, stored: object) -> None:
    assert FeedbackIn.model_validate(_event(kind, value)).value == stored


@pytest.mark.parametrize(
    ("kind", "value", "fragment"),
    [
        ("thumbs", True, "thumbs takes 1"),
        ("thumbs", 2, "thumbs takes 1"),
        ("rating", 4.5, "rating takes an integer"),
        ("rating", 0, "rating takes an integer"),
        ("preference", {"chosen": 0, "rejected": 0}, "must differ"),
        ("preference", [0, 1], "preference takes"),
        ("edit", "   ", "non-empty string"),
        ("accepted", 1, "accepted takes true"),
        ("dwell_ms", -5, "from 0 to"),
        ("dwell_ms", "5", "from 0 to"),
        ("dwell_ms", 1e308, "a week"),
        ("outcome", {"name": "x"}, "value"),
        ("smile", None, "kind"),
    ],
)
def test_each_kind_rejects_a_wrong_value_with_a_message(kind: str, value: object, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        FeedbackIn.model_validate(_event(kind, value))


def test_interaction_choices_must_start_with_the_response() -> None:
    with pytest.raises(ValidationError, match=r"choices\[0\] must equal response"):
        InteractionIn.model_validate(
            {"messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["b", "a"]}
        )


def test_event_ids_are_restricted_to_safe_characters() -> None:
    with pytest.raises(ValidationError, match="id"):
        FeedbackIn.model_validate({**_event("thumbs", 1), "id": "has space"})


@pytest.mark.parametrize(
    "value",
    [
        {"name": "resolved", "value": 10**400},
        {"name": "resolved", "value": -(10**309)},
    ],
)
def test_an_outcome_integer_past_float_range_is_refused(value: dict) -> None:
    # Stored, it would raise OverflowError in every reward, KPI and /metrics read of the tenant.
    with pytest.raises(ValidationError, match=r"value\.value: an integer of"):
        FeedbackIn.model_validate(_event("outcome", value))


@pytest.mark.parametrize(
    "value",
    [
        {"name": "paid_with", "value": 4111111111111111},
        {"name": "paid_with", "value": 4.111111111111111e15},
        {"name": "paid_with", "value": -4111111111111111},
        {"name": "helpfulness", "data_type": "numeric", "value": 5500000000000004},
    ],
)
def test_a_card_number_sent_as_an_outcome_or_score_is_refused_without_echoing_it(value: dict) -> None:
    kind = "score" if "data_type" in value else "outcome"
    with pytest.raises(ValidationError, match="reads as a payment card number") as caught:
        FeedbackIn.model_validate(_event(kind, value))
    assert not any(d in caught.value.errors()[0]["msg"] for d in ("4111", "5500"))


@pytest.mark.parametrize(
    "number", [1733300000000, 1733300000000000, 4111111111111112, 12345, 3.5, -4111111111111112]
)
def test_timestamps_amounts_and_numbers_failing_luhn_are_kept_as_measures(number: float) -> None:
    assert (
        FeedbackIn.model_validate(_event("outcome", {"name": "x", "value": number})).value["value"] == number
    )


def test_a_numeric_score_integer_past_float_range_is_refused() -> None:
    score = {"name": "helpfulness", "data_type": "numeric", "value": 10**400}
    with pytest.raises(ValidationError, match=r"value\.value: an integer of 401 digits"):
        FeedbackIn.model_validate(_event("score", score))


def test_large_numbers_within_float_range_are_kept() -> None:
    score = {"name": "helpfulness", "data_type": "numeric", "value": 10**300}
    assert FeedbackIn.model_validate(_event("score", score)).value["value"] == 10**300
    outcome = {"name": "resolved", "value": -1e308}
    assert FeedbackIn.model_validate(_event("outcome", outcome)).value["value"] == -1e308
