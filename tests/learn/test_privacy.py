"""DP-SGD for the embedding reward model: the spent budget is recorded, bad budgets are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.learn.data import varied_preference_rows
from tests.signals.test_snapshots import POLICY, _seed
from tuneloop.cli import main
from tuneloop.config import Settings
from tuneloop.errors import BadRequest
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.learn.privacy import DifferentialPrivacy, budget_from, budget_text, dp_trainer_args
from tuneloop.learn.reward_model import load_reward_model
from tuneloop.registry.versions import Registry
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store


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


@pytest.fixture
def snapshot(tiny_model: Path, tuneloop_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Tenant `acme` with preference feedback and a snapshot of it, in the CLI's home."""
    monkeypatch.setenv("TUNELOOP_MODEL", str(tiny_model))
    store = Store(Settings().database_url)
    tenant_row, _ = store.create_tenant("acme")
    tenant = store.for_tenant(tenant_row)
    _seed(tenant)
    return create_snapshot(tenant, tuneloop_home, POLICY).hash


def test_train_reward_with_a_budget_records_it_on_the_version(
    snapshot: str, capsys: pytest.CaptureFixture
) -> None:
    args = ["train", "reward", "--tenant", "acme", "--snapshot", snapshot, "--fast", "--dp-epsilon", "4"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    store = Store(Settings().database_url)
    version = Registry(store.for_tenant(store.tenant_by_name("acme"))).get(out.strip())
    privacy = version.metrics["privacy"]
    assert 0 < privacy["epsilon"] <= 4 and 0 < privacy["delta"] <= 1e-5
    assert version.job_spec["trainer_args"]["dp"]["epsilon"] == 4
    assert f"privacy budget spent: {budget_text(version.metrics)}" in err
    # The state it was left in once measured as a judge, not the candidate it was while training.
    assert f"registered reward_model {version.id} ({version.state})" in err and version.state != "candidate"
    assert main(["versions", "list", "--tenant", "acme"]) == 0
    assert budget_text(version.metrics) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--fast", "--dp-epsilon", "0"], "epsilon: Input should be greater than 0"),
        (["--fast", "--dp-epsilon", "nan"], "epsilon: Input should be a finite number"),
        (["--fast", "--dp-epsilon", "4", "--dp-delta", "2"], "delta: Input should be less than 1"),
        (["--fast", "--dp-delta", "1e-6"], "add --dp-epsilon"),
        (["--dp-epsilon", "4"], "add --fast"),
    ],
)
def test_train_reward_refuses_a_bad_budget_in_one_line(
    snapshot: str, flags: list[str], says: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", "reward", "--tenant", "acme", "--snapshot", snapshot, *flags]) == 1
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
