from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from tuneloop.config import load_policy_file, tenant_policy
from tuneloop.errors import BadRequest
from tuneloop.rollout.policy import RolloutPolicy

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("rollout_policy*.yaml"))


def test_there_is_an_example_rollout_policy() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_rollout_policy_loads(path: Path) -> None:
    policy = load_policy_file(path, RolloutPolicy)
    assert policy.ramp[0] == policy.canary_share and policy.ramp[-1] < 1


def test_defaults_match_the_documented_plan() -> None:
    policy = RolloutPolicy()
    assert (policy.alpha, policy.canary_share, policy.srm_p) == (0.05, 0.05, 0.001)
    assert policy.ramp == [0.05, 0.2, 0.5]
    assert all(field.description for field in RolloutPolicy.model_fields.values())


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("alpha: 0.7\n", "alpha"),
        ("ramp: [0.5, 0.2]\n", "ramp"),
        ("canary_share: 0.1\nramp: [0.2, 0.5]\n", "ramp"),
        ("guardrails:\n  escalation_rate: -1\n", "guardrails.escalation_rate"),
        ("tau2: zero\n", "tau2"),
        ("alhpa: 0.05\n", "alhpa"),
    ],
)
def test_a_bad_policy_file_raises_bad_request_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "rollout_policy.yaml"
    path.write_text(text)
    with pytest.raises(BadRequest) as err:
        load_policy_file(path, RolloutPolicy)
    assert err.value.param == field and field in err.value.message


def test_a_final_full_share_stands_for_promotion_and_the_canary_share_leads_the_ramp() -> None:
    assert RolloutPolicy(ramp=[0.1, 0.3, 1.0]).ramp == [0.1, 0.3]
    assert RolloutPolicy(ramp=[0.1, 0.3]).canary_share == 0.1
    assert RolloutPolicy(canary_share=0.01).ramp == [0.01, 0.2, 0.5]


def test_a_policy_survives_the_round_trip_through_the_store() -> None:
    policy = RolloutPolicy(tau2=0.09, ramp=[0.1, 0.4])
    assert RolloutPolicy.model_validate(policy.model_dump(mode="json")) == policy
    with pytest.raises(ValidationError, match="tau"):  # τ itself was never a released field
        RolloutPolicy.model_validate({"tau": 0.3})


def test_max_duration_bounds_an_experiment() -> None:
    policy, start = RolloutPolicy(max_duration_hours=48), datetime(2026, 1, 1, tzinfo=UTC)
    assert not policy.out_of_time(start, start + timedelta(hours=47))
    assert policy.out_of_time(start, start + timedelta(hours=48))


def test_a_tenant_without_a_policy_file_gets_the_defaults(tmp_path: Path) -> None:
    assert tenant_policy(tmp_path, "acme", RolloutPolicy) == RolloutPolicy()
