"""Named scores (feedback kind `score`) count through the reward policy's `scores` mapping, by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.signals.streams import NOW, event, interaction
from tuneloop.capture.events import FeedbackIn
from tuneloop.signals.policy import RewardPolicy, ScoreMapping
from tuneloop.signals.rewards import compute_rewards

POLICY = RewardPolicy(
    half_life_days=None,
    scores={
        "helpfulness": ScoreMapping(kind="rating"),
        "correctness": ScoreMapping(kind="reward", min=0, max=10, weight=2),
        "tone": ScoreMapping(values={"friendly": 1, "rude": -1}),
        "resolved": ScoreMapping(kind="thumbs"),
    },
)


def _score(iid: str, name: str, data_type: str, value: object) -> dict:
    return event(iid, "score", {"name": name, "data_type": data_type, "value": value})


@pytest.mark.parametrize(
    ("name", "data_type", "value", "reward"),
    [
        ("helpfulness", "numeric", 5, 1.0),
        ("helpfulness", "numeric", 2, -0.5),
        ("correctness", "numeric", 7.5, 0.5),
        ("correctness", "numeric", 40, 1.0),
        ("tone", "categorical", "rude", -1.0),
        ("resolved", "boolean", False, -1.0),
        ("resolved", "numeric", 0.3, 1.0),
    ],
)
def test_a_mapped_score_becomes_a_reward(name: str, data_type: str, value: object, reward: float) -> None:
    got = compute_rewards([interaction("a")], [_score("a", name, data_type, value)], POLICY, NOW)
    assert got["a"].reward == reward


def test_unmapped_names_and_categories_carry_no_reward() -> None:
    events = [_score("a", "latency_ok", "boolean", True), _score("a", "tone", "categorical", "terse")]
    assert compute_rewards([interaction("a")], events, POLICY, NOW) == {}


def test_a_scores_weight_defaults_to_its_kinds_weight() -> None:
    policy = RewardPolicy(half_life_days=None, scores={"stars": ScoreMapping(kind="rating")})
    events = [_score("a", "stars", "numeric", 5), event("a", "thumbs", -1)]
    got = compute_rewards([interaction("a")], events, policy, NOW)["a"]
    assert got.reward == 0.0 and got.weight == 2.0


@pytest.mark.parametrize(
    "value",
    [
        {"name": "x", "data_type": "numeric", "value": "high"},
        {"name": "x", "data_type": "numeric", "value": True},
        {"name": "x", "data_type": "boolean", "value": 0.5},
        {"name": "x", "data_type": "categorical", "value": 3},
        {"name": "", "data_type": "numeric", "value": 1},
        {"name": "x", "data_type": "ordinal", "value": 1},
        {"name": "x", "data_type": "numeric", "value": 1, "extra": 1},
        "good",
    ],
)
def test_a_malformed_score_is_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        FeedbackIn(id="e", interaction_id="a", kind="score", value=value)


def test_a_boolean_score_may_be_sent_as_one_or_zero_and_keeps_its_comment() -> None:
    value = {"name": "ok", "data_type": "boolean", "value": 1, "comment": "fine"}
    stored = FeedbackIn(id="e", interaction_id="a", kind="score", value=value).value
    assert stored == {"name": "ok", "data_type": "boolean", "value": True, "comment": "fine"}


@pytest.mark.parametrize(
    ("name", "value", "reward"), [("helpfulness", 10**400, 1.0), ("correctness", -(10**400), -1.0)]
)
def test_a_score_integer_past_float_range_already_stored_reads_as_the_extreme_not_an_error(
    name: str, value: int, reward: float
) -> None:
    # Ingest refuses them now; one stored before must not raise OverflowError at every read of the tenant.
    got = compute_rewards([interaction("a")], [_score("a", name, "numeric", value)], POLICY, NOW)
    assert got["a"].reward == reward
