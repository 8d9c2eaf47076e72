"""The gate can cap the ε its judging reward model spent: no recorded ε or a larger one fails, and such a
reward model never takes the judge's seat."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.evaluate.conftest import Adapters, GateSetup
from tuneloop.config import Settings, load_policy_file
from tuneloop.errors import BadRequest
from tuneloop.evaluate.gate import build_context, run_gate
from tuneloop.evaluate.judge import appoint_judge
from tuneloop.evaluate.policy import GatePolicy, JudgePrivacyConfig
from tuneloop.evaluate.suites import privacy
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.learn.privacy import DifferentialPrivacy, dp_trainer_args
from tuneloop.registry.versions import Version


def _private_reward_model(setup: GateSetup, out: Path, epsilon: float) -> Version:
    spec = JobSpec(
        kind="reward_embedding",
        base_model=str(setup.base),
        trainer_args=dp_trainer_args(DifferentialPrivacy(epsilon=epsilon)),
        output_dir=out,
    )
    job = run_job(spec, setup.snapshot.rows("pairs", split="train"))
    return setup.registry.register(
        kind="reward_model",
        base_model=str(setup.base),
        actor="learn",
        artifact_path=str(job.artifact_dir),
        snapshot_hash=setup.snapshot.hash,
        metrics=job.metrics,
    )


def _capped(policy: GatePolicy, max_epsilon: float, judge: Version | None = None) -> GatePolicy:
    suites = policy.suites.model_copy(
        update={
            "judge_privacy": JudgePrivacyConfig(max_epsilon=max_epsilon),
            "reward_model": policy.suites.reward_model.model_copy(
                update={"version": judge.id if judge else None}
            ),
        }
    )
    return policy.model_copy(update={"suites": suites})


def _verdict(setup: GateSetup, adapters: Adapters, policy: GatePolicy):
    candidate = setup.candidate(adapters.sensible)
    ctx, problem = build_context(
        setup.tenant, setup.home, policy, candidate, setup.registry.production("adapter")
    )
    assert ctx is not None, problem
    return privacy.run(ctx, policy.suites.judge_privacy)


def test_a_judge_above_the_max_epsilon_fails_and_one_within_passes(
    gate_setup: GateSetup, adapters: Adapters, tmp_path: Path
) -> None:
    judge = _private_reward_model(gate_setup, tmp_path, epsilon=8.0)
    spent = judge.metrics["privacy"]["epsilon"]

    above = _verdict(gate_setup, adapters, _capped(gate_setup.policy, 4.0, judge))
    assert not above.passed and "above the allowed ε=4" in above.reason and judge.id in above.reason
    assert above.metrics["epsilon"] == spent and above.metrics["max_epsilon"] == 4.0

    within = _verdict(gate_setup, adapters, _capped(gate_setup.policy, 8.0, judge))
    assert within.passed and "within the allowed ε=8" in within.reason


def test_the_gate_blocks_a_candidate_judged_by_a_model_with_no_recorded_epsilon(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    candidate = gate_setup.candidate(adapters.sensible)
    policy = _capped(gate_setup.policy, 4.0)  # the production judge was trained without DP

    result = run_gate(gate_setup.tenant, candidate.id, home=gate_setup.home, policy=policy)

    assert result.decision == "blocked"
    [reason] = [r for r in result.reasons if r.startswith("judge_privacy:")]
    assert "no recorded ε" in reason and "--dp-epsilon 4" in reason
    assert gate_setup.registry.get(candidate.id).state == "blocked"


def test_without_a_cap_the_privacy_check_passes(gate_setup: GateSetup, adapters: Adapters) -> None:
    verdict = _verdict(gate_setup, adapters, gate_setup.policy)
    assert verdict.passed and "no ε limit" in verdict.reason


def test_a_reward_model_without_recorded_epsilon_does_not_become_the_judge_under_a_cap(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    policy_file = gate_setup.home / "policies" / "acme" / "gate_policy.yaml"
    policy_file.write_text(yaml.safe_dump({"suites": {"judge_privacy": {"max_epsilon": 4}}}))
    job = run_job(
        JobSpec(kind="reward_embedding", base_model=str(gate_setup.base), output_dir=tmp_path),
        gate_setup.snapshot.rows("pairs", split="train"),
    )
    new = gate_setup.registry.register(
        kind="reward_model",
        base_model=str(gate_setup.base),
        actor="learn",
        artifact_path=str(job.artifact_dir),
        snapshot_hash=gate_setup.snapshot.hash,
        metrics=job.metrics,
    )
    settings = Settings(home=gate_setup.home, model=str(gate_setup.base))

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="loop")

    assert verdict["judge"] == gate_setup.reward_model.id and "no recorded ε" in verdict["verdict"]
    assert gate_setup.registry.get(new.id).state == "blocked"


@pytest.mark.parametrize("value", [0, -1, "inf", "many"])
def test_a_bad_max_epsilon_is_refused_with_the_field_named(tmp_path: Path, value: object) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({"suites": {"judge_privacy": {"max_epsilon": value}}}))
    with pytest.raises(BadRequest, match=r"suites\.judge_privacy\.max_epsilon"):
        load_policy_file(path, GatePolicy)


def test_every_judge_privacy_field_has_a_description() -> None:
    assert all(f.description for f in JudgePrivacyConfig.model_fields.values())
