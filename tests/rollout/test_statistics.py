from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

from tuneloop.rollout.assignment import BUCKETS, assign, bucket
from tuneloop.rollout.guardrails import rate_guardrail, sample_ratio_p
from tuneloop.rollout.sequential import ArmStats, msprt

ALPHA, TAU2, MIN = 0.05, 0.04, 30


def _peek_every_event(control: np.ndarray, treatment: np.ndarray) -> str:
    """Run the test after every pair of observations, as a controller checking on each event would."""
    c, t = ArmStats(), ArmStats()
    p = 1.0
    for x, y in zip(control, treatment, strict=True):
        c.add(float(x))
        t.add(float(y))
        result = msprt(c, t, alpha=ALPHA, tau2=TAU2, min_samples=MIN, previous_p=p)
        p = result.p_value
        if result.decision in ("promote", "rollback"):
            return result.decision
    return "continue"


def test_aa_experiments_with_continuous_peeking_promote_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    outcomes = [
        _peek_every_event(rng.choice([-1.0, 1.0], 300), rng.choice([-1.0, 1.0], 300)) for _ in range(500)
    ]
    assert outcomes.count("promote") / 500 <= ALPHA
    assert (outcomes.count("promote") + outcomes.count("rollback")) / 500 <= ALPHA


def test_a_real_effect_is_promoted_and_a_harmful_one_rolled_back() -> None:
    rng = np.random.default_rng(1)
    control = rng.choice([-1.0, 1.0], 1500, p=[0.6, 0.4])
    assert _peek_every_event(control, rng.choice([-1.0, 1.0], 1500, p=[0.3, 0.7])) == "promote"
    assert _peek_every_event(control, rng.choice([-1.0, 1.0], 1500, p=[0.85, 0.15])) == "rollback"


def test_missing_or_constant_data_is_inconclusive_never_a_pass() -> None:
    nan = ArmStats.of([math.nan] * 40)
    assert (
        msprt(nan, ArmStats.of([1.0] * 40), alpha=ALPHA, tau2=TAU2, min_samples=MIN).decision
        == "inconclusive"
    )
    flat = msprt(ArmStats.of([1.0] * 40), ArmStats.of([1.0] * 40), alpha=ALPHA, tau2=TAU2, min_samples=MIN)
    assert flat.decision == "inconclusive"
    few = msprt(ArmStats.of([0.0, 1.0]), ArmStats.of([1.0, 1.0]), alpha=ALPHA, tau2=TAU2, min_samples=MIN)
    assert few.decision == "continue"


def test_guardrail_breaches_only_when_treatment_is_surely_worse_than_tolerated() -> None:
    calm = ArmStats.of([0.0] * 195 + [1.0] * 5)
    assert not rate_guardrail(
        "escalation_rate",
        calm,
        ArmStats.of([0.0] * 190 + [1.0] * 10),
        tolerance=0.02,
        alpha=ALPHA,
        tau2=TAU2,
        min_samples=MIN,
    ).breached
    assert rate_guardrail(
        "escalation_rate",
        calm,
        ArmStats.of([0.0] * 120 + [1.0] * 80),
        tolerance=0.02,
        alpha=ALPHA,
        tau2=TAU2,
        min_samples=MIN,
    ).breached


def test_sample_ratio_mismatch_is_detected_at_p_below_0_001() -> None:
    assert sample_ratio_p(950, 50, 0.05) > 0.001
    assert sample_ratio_p(800, 200, 0.05) < 0.001


def test_assignment_is_sticky_uniform_and_monotone_in_the_share() -> None:
    users = [f"user-{i}" for i in range(100_000)]
    buckets = np.array([bucket("exp-1", u) for u in users])
    counts = np.bincount(buckets * 20 // BUCKETS, minlength=20)
    assert chisquare(counts).pvalue > 0.001
    assert all(assign("exp-1", u, 0.3) == assign("exp-1", u, 0.3) for u in users[:1000])
    at_5 = {u for u in users[:5000] if assign("exp-1", u, 0.05) == "treatment"}
    at_20 = {u for u in users[:5000] if assign("exp-1", u, 0.2) == "treatment"}
    assert at_5 < at_20 and abs(len(at_20) / 5000 - 0.2) < 0.02


def test_assignment_matches_the_published_test_vectors() -> None:
    vectors = json.loads((Path(__file__).parents[2] / "docs" / "assignment_vectors.json").read_text())
    for v in vectors:
        assert bucket(v["experiment_key"], v["user_id"]) == v["bucket"]
        assert assign(v["experiment_key"], v["user_id"], 0.2) == v["arm_at_20pct"]
