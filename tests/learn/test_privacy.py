"""DP-SGD for the embedding reward model: the spent budget is recorded, bad budgets are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.learn.data import varied_preference_rows
from tuneloop.errors import BadRequest
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.learn.privacy import DifferentialPrivacy, budget_from, dp_trainer_args
from tuneloop.learn.reward_model import load_reward_model


def _private_spec(tmp_path: Path, **budget) -> JobSpec:
    return JobSpec(
        kind="reward_embedding",
        base_model="all-minilm-l6-v2",
        trainer_args=dp_trainer_args(DifferentialPrivacy(**budget)),
        output_dir=tmp_path,
    )


def test_private_training_records_the_spent_epsilon_and_delta_and_still_ranks(tmp_path: Path) -> None:
    result = run_job(_private_spec(tmp_path, epsilon=8.0), varied_preference_rows(60))

    privacy = result.metrics["privacy"]
    assert 0 < privacy["epsilon"] <= 8.0 and privacy["target_epsilon"] == 8.0
    assert privacy["delta"] == 1e-5 and privacy["unit"] == "preference pair"
    assert privacy["noise_multiplier"] > 0 and privacy["steps"] > 0
    # No temperature is fitted on pairs the guarantee does not cover: they train instead.
    assert result.metrics["val_pairs"] == 0 and result.metrics["temperature"] == 1.0
    assert (
        json.loads((result.artifact_dir / "job_spec.json").read_text())["trainer_args"]["dp"]["epsilon"] == 8
    )
    scorer = load_reward_model(result.artifact_dir)
    prompt = [{"role": "user", "content": "Please explain volcanoes to me."}]
    good = scorer.score(prompt, "Happy to help with volcanoes: here is a short, accurate summary.")
    assert good > scorer.score(prompt, "Not my problem. Go away.")


def test_non_private_training_records_no_budget(tmp_path: Path) -> None:
    spec = JobSpec(kind="reward_embedding", base_model="all-minilm-l6-v2", output_dir=tmp_path)
    assert "privacy" not in run_job(spec, varied_preference_rows(20)).metrics


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": -1}, "epsilon"),
        ({"epsilon": float("inf")}, "epsilon"),
        ({"epsilon": "strong"}, "epsilon"),
        ({"delta": 1e-5}, "epsilon"),
        ({"epsilon": 4, "delta": 1.5}, "delta"),
        ({"epsilon": 4, "max_grad_norm": 0}, "max_grad_norm"),
        ({"epsilon": 4, "epochs": 0}, "epochs"),
        ({"epsilon": 4, "noise": 1.0}, "noise"),
    ],
)
def test_bad_budget_values_are_refused_with_the_field_named(budget: dict, field: str) -> None:
    with pytest.raises(ValidationError):
        DifferentialPrivacy.model_validate(budget)
    with pytest.raises(BadRequest, match=f"bad differential-privacy settings: {field}:"):
        budget_from({"dp": budget})


def test_a_delta_that_does_not_protect_each_pair_is_refused(tmp_path: Path) -> None:
    spec = _private_spec(tmp_path, epsilon=4.0, delta=0.1)
    with pytest.raises(BadRequest, match=r"not below 1/\d+ training pairs"):
        run_job(spec, varied_preference_rows(20))


def test_the_lora_reward_model_refuses_a_privacy_budget(tmp_path: Path) -> None:
    spec = JobSpec(
        kind="reward",
        base_model=str(tmp_path / "unused"),
        trainer_args=dp_trainer_args(DifferentialPrivacy(epsilon=4.0)),
        output_dir=tmp_path,
    )
    with pytest.raises(BadRequest, match="reward_embedding head only"):
        run_job(spec, varied_preference_rows(20))
