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
        ("dwell_ms", 78051120, 78100000),  # nine digits hold a national id; a long wait needs three
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
    ("value", "stored"),
    [
        ({"name": "callback_phone", "value": 4155550134}, 4160000000),
        ({"name": "ssn", "data_type": "numeric", "value": 123456789}, 123000000),
        ({"name": "paid_with", "value": 4111111111111111}, 4110000000000000),
        ({"name": "paid_with", "value": 4.111111111111111e15}, 4.11e15),
        ({"name": "paid_with", "value": -4111111111111111}, -4110000000000000),
        ({"name": "resolution_ms", "value": 1234567}, 1230000),
        ({"name": "resolution_ms", "value": 1235000}, 1240000),
        ({"name": "account", "value": 1000000}, 1000000),
        ({"name": "tokens", "value": 9.994e17}, 9.99e17),  # 18 whole digits: the most a measure has
        ({"name": "callback_phone", "value": 4155550134.5}, 4.16e9),  # a fraction hides nothing
        ({"name": "amex", "data_type": "numeric", "value": 378282246310005.5}, 3.78e14),
    ],
)
def test_a_long_number_in_an_outcome_or_score_keeps_three_significant_digits(
    value: dict, stored: float
) -> None:
    kind = "score" if "data_type" in value else "outcome"
    kept = FeedbackIn.model_validate(_event(kind, value)).value["value"]
    assert kept == stored and type(kept) is type(value["value"])


@pytest.mark.parametrize(
    "value",
    [
        {"name": "resolved", "value": 10**400},  # past float range: it would overflow every read
        {"name": "helpfulness", "data_type": "numeric", "value": 5500000000000000004},
        {"name": "helpfulness", "data_type": "boolean", "value": -(10**309)},
        {"name": "resolved", "value": 1e300},
        {"name": "resolved", "value": -1e308},
        {"name": "resolved", "value": 1e18},  # 19 whole digits
        {"name": "paid_with", "value": 4.111111111111111e20},  # a card number, scaled
        {"name": "helpfulness", "data_type": "numeric", "value": 1e19},
    ],
)
def test_a_number_past_eighteen_digits_is_refused_without_echoing_it(value: dict) -> None:
    kind = "score" if "data_type" in value else "outcome"
    with pytest.raises(ValidationError, match="more than 18 digits is no measure") as caught:
        FeedbackIn.model_validate(_event(kind, value))
    assert not any(d in caught.value.errors()[0]["msg"] for d in ("5500", "1000000"))


@pytest.mark.parametrize("number", [999999, -999999, 12345, 3.5, 999999.5, 1.5e-300, -0.0])
def test_counts_and_fractions_are_kept_as_measures(number: float) -> None:
    outcome = {"name": "x", "value": number}
    assert FeedbackIn.model_validate(_event("outcome", outcome)).value["value"] == number
    score = {"name": "x", "data_type": "numeric", "value": number}
    assert FeedbackIn.model_validate(_event("score", score)).value["value"] == number


@pytest.mark.parametrize("kind", ["edit", "comment"])
@pytest.mark.parametrize(
    "text",
    [
        "\u200b\u2060\ufeff",
        " \u200b\n",
        "\u00ad\u200d",
        "\u3164",
        "\u2800",
        "\u115f\u1160",
        "\u0301",
        "\ufe0f\u034f",
    ],
)
def test_an_edit_or_comment_of_invisible_characters_only_is_refused(kind: str, text: str) -> None:
    with pytest.raises(ValidationError, match="visible text"):
        FeedbackIn.model_validate(_event(kind, text))


def test_a_preference_or_regeneration_naming_its_own_interaction_is_refused() -> None:
    both = {"chosen_interaction": "i1", "rejected_interaction": "i1"}
    with pytest.raises(ValidationError, match="must differ"):
        FeedbackIn.model_validate(_event("preference", both))
    with pytest.raises(ValidationError, match=r"value\.replaced_by"):
        FeedbackIn.model_validate(_event("regenerated", {"replaced_by": "i1"}))
