from __future__ import annotations

import numpy as np

from tuneloop.rollout.guardrails import (
    latency_guardrail,
    rate_guardrail,
    sample_ratio_check,
    sample_ratio_p,
)
from tuneloop.rollout.sequential import ArmStats

ALPHA, TAU2, MIN = 0.05, 0.04, 30


def _escalations(rng: np.random.Generator, events: int, share: float, rates: dict[str, float]) -> tuple:
    member = rng.random(events) < share
    escalated = rng.random(events) < np.where(member, rates["treatment"], rates["control"])
    return member, escalated.astype(float)


def _first_breach(member: np.ndarray, flags: np.ndarray, tolerance: float, every: int = 10) -> int | None:
    """Check the guardrail every `every` events, as a controller would; the event of the first breach."""
    for i in range(every - 1, len(flags), every):
        seen, treated = flags[: i + 1], member[: i + 1]
        result = rate_guardrail(
            "escalation_rate",
            ArmStats.of(seen[~treated]),
            ArmStats.of(seen[treated]),
            tolerance=tolerance,
            alpha=ALPHA,
            tau2=TAU2,
            min_samples=MIN,
        )
        if result.breached:
            assert "escalation_rate breached" in result.reason
            return i
    return None


def test_a_harmful_candidate_is_stopped_by_a_guardrail_before_the_end() -> None:
    rng = np.random.default_rng(0)
    member, flags = _escalations(rng, 4000, 0.2, {"control": 0.03, "treatment": 0.15})
    at = _first_breach(member, flags, tolerance=0.02)
    assert at is not None and at < 2000


def test_equal_rates_with_repeated_looks_rarely_breach_even_at_zero_tolerance() -> None:
    rng = np.random.default_rng(1)
    breaches = sum(
        _first_breach(*_escalations(rng, 2000, 0.2, {"control": 0.05, "treatment": 0.05}), 0.0, every=20)
        is not None
        for _ in range(200)
    )
    assert breaches / 200 <= ALPHA


def test_a_rise_within_tolerance_does_not_breach() -> None:
    calm = ArmStats.of([0.0] * 1950 + [1.0] * 50)
    slightly_worse = ArmStats.of([0.0] * 1920 + [1.0] * 80)
    kwargs = {"alpha": ALPHA, "tau2": TAU2, "min_samples": MIN}
    assert not rate_guardrail("error_rate", calm, slightly_worse, tolerance=0.02, **kwargs).breached
    assert rate_guardrail("error_rate", calm, ArmStats.of([0.0] * 60 + [1.0] * 40), tolerance=0.02, **kwargs)


def test_guardrails_never_breach_on_too_few_samples_or_no_events() -> None:
    kwargs = {"tolerance": 0.0, "alpha": ALPHA, "tau2": TAU2, "min_samples": MIN}
    assert not rate_guardrail("error_rate", ArmStats.of([0.0] * 5), ArmStats.of([1.0] * 5), **kwargs).breached
    none = rate_guardrail("error_rate", ArmStats.of([0.0] * 500), ArmStats.of([0.0] * 500), **kwargs)
    assert not none.breached and none.as_dict()["lower_bound"] < 0


def test_p95_latency_guardrail_breaches_only_beyond_the_tolerated_ratio() -> None:
    rng = np.random.default_rng(2)
    control = rng.lognormal(np.log(400), 0.4, 2000)
    kwargs = {"ratio": 1.25, "alpha": ALPHA, "tau2": TAU2, "min_samples": MIN}
    same = latency_guardrail(control, rng.lognormal(np.log(400), 0.4, 500), **kwargs)
    a_bit_slower = latency_guardrail(control, rng.lognormal(np.log(440), 0.4, 500), **kwargs)
    much_slower = latency_guardrail(control, rng.lognormal(np.log(700), 0.4, 500), **kwargs)
    assert not same.breached and not a_bit_slower.breached
    assert much_slower.breached and "p95_latency breached" in much_slower.reason
    assert much_slower.treatment_rate > 0.2 and much_slower.control_rate < 0.05


def test_latency_guardrail_with_missing_latencies_does_not_decide() -> None:
    kwargs = {"ratio": 1.25, "alpha": ALPHA, "tau2": TAU2, "min_samples": MIN}
    result = latency_guardrail([100.0] * 100, [np.nan] * 100, **kwargs)
    assert not result.breached and "non-finite" in result.reason


def test_an_injected_sample_ratio_mismatch_halts() -> None:
    rng = np.random.default_rng(3)
    member = rng.random(20_000) < 0.05
    n_treatment = int(member.sum())
    assert not sample_ratio_check(20_000 - n_treatment, n_treatment, 0.05).halt
    logged = int(n_treatment * 0.8)  # a fifth of the treatment's events are lost
    check = sample_ratio_check(20_000 - n_treatment, logged, 0.05, threshold=0.001)
    assert check.halt and check.p_value < 0.001 and "sample ratio mismatch" in check.reason


def test_sample_ratio_p_is_a_chi_square_against_the_planned_split() -> None:
    assert sample_ratio_p(950, 50, 0.05) > 0.001
    assert sample_ratio_p(800, 200, 0.05) < 0.001
    assert sample_ratio_p(0, 0, 0.05) == 1.0
