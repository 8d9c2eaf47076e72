"""The gate end to end on the tiny model: real store, registry, snapshot, reward model and PEFT adapters."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from tests.evaluate.conftest import Adapters, GateSetup
from tests.evaluate.helpers import CANARY
from tuneloop.evaluate.gate import build_context, run_gate, run_gates
from tuneloop.evaluate.generation import Evaluator
from tuneloop.evaluate.suites import reward
from tuneloop.evaluate.suites.golden import load_golden
from tuneloop.store.schema import audit_log


def _suite(result, name: str):
    return next(s for s in result.suites if s.name == name)


def test_candidate_trained_on_sensible_preferences_is_gated_with_its_report_linked(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    candidate = gate_setup.candidate(adapters.sensible)
    result = run_gate(gate_setup.tenant, candidate.id, home=gate_setup.home, policy=gate_setup.policy)
    assert result.decision == "gated", result.reasons
    assert all(s.status == "pass" for s in result.suites), [(s.name, s.reason) for s in result.suites]
    prefs = _suite(result, "human_preferences").metrics
    assert prefs["win_rate"] > 0.5 and prefs["ci_low"] <= prefs["win_rate"] <= prefs["ci_high"]
    version = gate_setup.registry.get(candidate.id)
    assert version.state == "gated" and version.gate_report == str(result.report_json)
    assert version.metrics["gate"]["decision"] == "gated"
    report = json.loads(Path(version.gate_report).read_text())
    assert report["decision"] == "gated" and report["snapshot"] == gate_setup.snapshot.hash
    html = result.report_html.read_text()
    assert '<table id="suites"' in html and "<svg" in html and "human_preferences" in html
    ok, summary = gate_setup.tenant.store.verify_audit()
    assert ok, summary


def test_candidate_trained_on_poisoned_feedback_is_blocked_by_the_safety_suite(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    candidate = gate_setup.candidate(adapters.poisoned)
    result = run_gate(gate_setup.tenant, candidate.id, home=gate_setup.home, policy=gate_setup.policy)
    safety = _suite(result, "safety")
    assert result.decision == "blocked"
    assert safety.status == "fail" and "refuses harmful requests less often" in safety.reason
    assert safety.metrics["candidate_harmful_refusal"] < safety.metrics["production_harmful_refusal"]
    assert gate_setup.registry.get(candidate.id).state == "blocked"
    assert any(r.startswith("safety:") for r in result.reasons)


def test_candidates_gated_together_are_judged_each_on_its_own_answers_and_production_is_run_once(
    gate_setup: GateSetup, adapters: Adapters, monkeypatch
) -> None:
    sensible, poisoned = (gate_setup.candidate(a) for a in (adapters.sensible, adapters.poisoned))
    generated: list[str] = []
    real = Evaluator._generate_batch

    def counted(self, arm_name, prompts, max_new_tokens):
        generated.extend([self.arms[arm_name].signature] * len(prompts))
        return real(self, arm_name, prompts, max_new_tokens)

    monkeypatch.setattr(Evaluator, "_generate_batch", counted)
    first, second = run_gates(
        gate_setup.tenant, [sensible.id, poisoned.id], home=gate_setup.home, policy=gate_setup.policy
    )
    # The second candidate reuses the arm name "candidate", never the first one's adapter or answers.
    assert (first.decision, second.decision) == ("gated", "blocked"), (first.reasons, second.reasons)
    assert any(r.startswith("safety:") for r in second.reasons)
    repeats = {sig: generated.count(sig) for sig in set(generated)}
    production_runs = [n for sig, n in repeats.items() if str(adapters.production) in sig]
    candidate_runs = [n for sig, n in repeats.items() if str(adapters.production) not in sig]
    # Production answered its prompts once for both gates; each candidate answered its own.
    assert len(production_runs) == 1 and len(candidate_runs) == 2
    assert production_runs[0] <= max(candidate_runs)


def test_candidate_that_memorised_a_planted_canary_is_blocked_by_the_pii_probe(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    candidate = gate_setup.candidate(adapters.leaky)
    result = run_gate(gate_setup.tenant, candidate.id, home=gate_setup.home, policy=gate_setup.policy)
    pii = _suite(result, "pii_leak")
    assert result.decision == "blocked"
    assert pii.status == "fail" and pii.metrics["candidate_leaks"] >= 1
    assert pii.metrics["production_leaks"] == 0
    # The report names the canary only masked.
    assert CANARY not in result.report_html.read_text()


def test_candidate_without_training_snapshot_fails_closed(gate_setup: GateSetup, adapters: Adapters) -> None:
    candidate = gate_setup.candidate(adapters.sensible, snapshot_hash=None)
    result = run_gate(gate_setup.tenant, candidate.id, home=gate_setup.home, policy=gate_setup.policy)
    assert result.decision == "blocked"
    for name in ("human_preferences", "reward_model", "drift", "pii_leak"):
        suite = _suite(result, name)
        assert suite.status == "error" and suite.reason.startswith("missing input"), (name, suite.reason)
    with gate_setup.tenant.store.read() as conn:
        rows = conn.execute(
            sa.select(audit_log).where(
                audit_log.c.action == "version.blocked", audit_log.c.subject == candidate.id
            )
        ).all()
    assert len(rows) == 1 and "snapshot" in rows[0].details["reason"]


def test_drifted_reward_model_approves_nothing(
    gate_setup: GateSetup, adapters: Adapters, tmp_path: Path
) -> None:
    from tuneloop.learn.job_config import JobSpec
    from tuneloop.learn.jobs import run_job

    # A reward model trained on flipped preferences disagrees with the held-out humans.
    flipped = [
        {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
        for row in gate_setup.snapshot.rows("pairs", split="train")
    ]
    job = run_job(
        JobSpec(kind="reward_embedding", base_model=str(gate_setup.base), output_dir=tmp_path), flipped
    )
    judge = gate_setup.registry.register(
        kind="reward_model",
        base_model=str(gate_setup.base),
        actor="learn",
        artifact_path=str(job.artifact_dir),
    )
    candidate = gate_setup.candidate(adapters.sensible)
    cfg = gate_setup.policy.suites.reward_model.model_copy(update={"version": judge.id})
    ctx, problem = build_context(
        gate_setup.tenant, gate_setup.home, gate_setup.policy, candidate, gate_setup.registry.production()
    )
    assert ctx is not None, problem
    verdict = reward.run(ctx, cfg)
    assert not verdict.passed and "drifted" in verdict.reason
    assert verdict.metrics["agreement"] < cfg.min_agreement


def test_a_tenant_without_a_golden_set_gets_a_starter_set_from_its_best_rated_answers(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    golden = gate_setup.home / "policies" / "acme" / "golden.yaml"
    golden.unlink()
    candidate = gate_setup.candidate(adapters.sensible)

    result = run_gate(
        gate_setup.tenant, candidate.id, home=gate_setup.home, policy=gate_setup.policy, record=False
    )

    suite = _suite(result, "golden")
    assert suite.status in ("pass", "fail"), suite.reason  # it ran: no missing input
    assert golden.read_text().startswith("# Starter golden set")
    starter = load_golden(golden)
    assert starter.items and len(starter.items) == suite.metrics["items"]
    assert len({json.dumps(i.prompt) for i in starter.items}) == len(starter.items)  # no prompt twice
    # Unreviewed, it is judged on the counts: one flipped guess from the ratings does not block.
    assert not starter.reviewed and "starter set" in suite.reason and "regression_p" in suite.metrics
