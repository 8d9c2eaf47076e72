from __future__ import annotations

import math

import numpy as np

from tuneloop.rollout.sequential import (
    ArmStats,
    confidence_sequence,
    cuped_theta,
    mixture_p_value,
    msprt,
    one_sided_margin,
)

ALPHA, TAU2, MIN = 0.05, 0.04, 30


def _first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along the last axis; the length when there is none."""
    return np.where(mask.any(axis=-1), mask.argmax(axis=-1), mask.shape[-1])


def _peek_after_every_event(values: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Look after every event of every simulated experiment; the first decision of each (name, index)."""
    control, treatment = ArmStats.running(values, ~member), ArmStats.running(values, member)
    bounds = confidence_sequence(control, treatment, alpha=ALPHA, tau2=TAU2)
    ready = np.minimum(control.n, treatment.n) >= MIN
    promote_at, rollback_at = _first(ready & (bounds.low > 0)), _first(ready & (bounds.high < 0))
    end = values.shape[-1]
    decision = np.where(
        promote_at < rollback_at, "promote", np.where(rollback_at < end, "rollback", "continue")
    )
    return decision, np.minimum(promote_at, rollback_at)


def _experiments(rng: np.random.Generator, sims: int, events: int, share: float, draw) -> tuple:
    member = rng.random((sims, events)) < share
    return np.where(member, draw("treatment", (sims, events)), draw("control", (sims, events))), member


def test_aa_experiments_with_continuous_peeking_promote_and_roll_back_each_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    values, member = _experiments(rng, 500, 4000, 0.5, lambda arm, shape: rng.normal(0.0, 1.0, shape))
    decision, _ = _peek_after_every_event(values, member)
    assert (decision == "promote").mean() <= ALPHA
    assert (decision == "rollback").mean() <= ALPHA


def test_aa_canaries_at_a_5pct_share_with_rare_thumbs_down_promote_at_most_alpha() -> None:
    # A small arm with a rare outcome underestimates its variance; see sequential.py's docstring.
    rng = np.random.default_rng(1)

    def thumbs(arm: str, shape: tuple) -> np.ndarray:
        return rng.choice([-1.0, 1.0], size=shape, p=[0.1, 0.9])

    decision, _ = _peek_after_every_event(*_experiments(rng, 500, 4000, 0.05, thumbs))
    assert (decision == "promote").mean() <= ALPHA


def test_a_real_effect_is_promoted() -> None:
    rng = np.random.default_rng(2)

    def thumbs(arm: str, shape: tuple) -> np.ndarray:
        up = 0.65 if arm == "treatment" else 0.5
        return rng.choice([-1.0, 1.0], size=shape, p=[1 - up, up])

    decision, _ = _peek_after_every_event(*_experiments(rng, 200, 3000, 0.5, thumbs))
    assert (decision == "promote").mean() >= 0.9
    assert (decision == "rollback").mean() == 0


def test_a_harmful_candidate_is_rolled_back_before_the_end() -> None:
    rng = np.random.default_rng(3)

    def thumbs(arm: str, shape: tuple) -> np.ndarray:
        up = 0.35 if arm == "treatment" else 0.5
        return rng.choice([-1.0, 1.0], size=shape, p=[1 - up, up])

    decision, at = _peek_after_every_event(*_experiments(rng, 200, 3000, 0.5, thumbs))
    assert (decision == "rollback").mean() >= 0.9
    assert (decision == "promote").mean() == 0
    assert np.median(at[decision == "rollback"]) < 1500


def test_msprt_decides_at_the_same_event_as_the_vectorised_sequence() -> None:
    rng = np.random.default_rng(4)
    member = rng.random(2000) < 0.5
    values = np.where(member, rng.choice([-1.0, 1.0], 2000, p=[0.3, 0.7]), rng.choice([-1.0, 1.0], 2000))
    _, vector_at = _peek_after_every_event(values[None], member[None])
    p = 1.0
    for at in range(len(values)):
        seen, treated = values[: at + 1], member[: at + 1]
        control, treatment = ArmStats.of(seen[~treated]), ArmStats.of(seen[treated])
        result = msprt(control, treatment, alpha=ALPHA, tau2=TAU2, min_samples=MIN, previous_p=p)
        assert result.p_value <= p  # the always-valid p-value never rises
        p = result.p_value
        if result.decision in ("promote", "rollback"):
            break
    assert result.decision == "promote" and at == vector_at[0]
    assert result.p_value <= ALPHA and result.ci_low > 0 and result.ci_low < result.effect < result.ci_high
    assert (result.n_control, result.n_treatment) == (control.n, treatment.n)
    assert (result.users_control, result.users_treatment) == (control.n, treatment.n)


def test_nan_zero_variance_and_too_few_samples_are_inconclusive_never_a_pass() -> None:
    kwargs = {"alpha": ALPHA, "tau2": TAU2, "min_samples": MIN}
    with_nan = ArmStats.of([1.0] * 39 + [math.nan])
    assert msprt(ArmStats.of([0.0, 1.0] * 20), with_nan, **kwargs).decision == "inconclusive"
    assert msprt(with_nan, ArmStats.of([5.0, 6.0] * 20), **kwargs).decision == "inconclusive"
    flat = msprt(ArmStats.of([0.0] * 40), ArmStats.of([1.0] * 40), **kwargs)
    assert flat.decision == "inconclusive" and "variance" in flat.reason
    few = msprt(ArmStats.of([0.0, 1.0]), ArmStats.of([9.0, 10.0]), **kwargs)
    assert few.decision == "inconclusive" and "too few" in few.reason
    one_user_each = msprt(
        ArmStats.of([0.0, 1.0] * 40, units=["a"] * 80),
        ArmStats.of([1.0, 2.0] * 40, units=["b"] * 80),
        **kwargs,
    )
    assert one_user_each.decision == "inconclusive" and "too few users" in one_user_each.reason
    assert msprt(ArmStats(), ArmStats(), **kwargs).decision == "inconclusive"
    assert few.as_dict()["ci_low"] is None  # JSON-safe for the store


def test_harm_margin_delays_a_rollback_until_harm_is_sure() -> None:
    control, treatment = ArmStats.of([0.0, 1.0] * 500), ArmStats.of([-0.1, 0.9] * 500)
    kwargs = {"alpha": ALPHA, "tau2": TAU2, "min_samples": MIN}
    assert msprt(control, treatment, **kwargs).decision == "rollback"
    assert msprt(control, treatment, harm_margin=0.2, **kwargs).decision == "continue"


def test_arm_stats_merge_running_and_of_agree_with_the_whole_sample() -> None:
    values = np.random.default_rng(5).normal(3.0, 2.0, 101)
    whole, merged = ArmStats.of(values), ArmStats.of(values[:40]).merge(ArmStats.of(values[40:]))
    running = ArmStats.running(values)
    assert merged == whole and whole.units == whole.n == 101
    assert running.n[-1] == 101 and math.isclose(running.spread()[-1], whole.spread())
    # One answer per unit: the cluster-robust variance is the textbook s²/n.
    assert math.isclose(whole.mean, values.mean()) and math.isclose(whole.spread(), np.var(values, ddof=1))


def test_the_variance_of_a_clustered_mean_is_the_delta_method_one() -> None:
    rng = np.random.default_rng(6)
    users = rng.integers(0, 40, 500)
    values = rng.normal(0.0, 1.0, 40)[users] + rng.normal(0.0, 0.5, 500)
    stats = ArmStats.of(values, units=users.astype(str))
    y, n = np.bincount(users, weights=values), np.bincount(users).astype(float)
    y, n = y[n > 0], n[n > 0]
    mean = y.sum() / n.sum()
    expected = np.var(y - mean * n, ddof=1) / (len(n) * n.mean() ** 2)
    assert stats.units == len(n) and stats.n == 500 and math.isclose(stats.mean, mean)
    assert math.isclose(stats.spread() / stats.n, expected)
    assert stats.spread() > 3 * ArmStats.of(values).spread()  # correlated answers: a large design effect


def test_cuped_removes_the_variance_a_pre_experiment_covariate_explains() -> None:
    rng = np.random.default_rng(7)
    users = np.arange(400).repeat(3)
    level = rng.normal(0.0, 1.0, 400)
    covariate = (level + rng.normal(0.0, 0.3, 400))[users]  # a noisy pre-period reading of the user
    values = level[users] + rng.normal(0.0, 0.5, users.size)
    treated = (users % 2).astype(bool)
    arms = [
        ArmStats.of(values[m], units=users[m], covariate=covariate[m] - covariate.mean())
        for m in (~treated, treated)
    ]
    plain = [ArmStats.of(values[m], units=users[m]) for m in (~treated, treated)]
    theta = cuped_theta(*arms)
    assert 0.8 < theta < 1.0  # the regression slope of the outcome on its noisy pre-period reading
    assert arms[1].spread(theta) < 0.3 * plain[1].spread()
    adjusted = confidence_sequence(*arms, alpha=ALPHA, tau2=TAU2)
    unadjusted = confidence_sequence(*plain, alpha=ALPHA, tau2=TAU2)
    assert adjusted.variance < 0.3 * unadjusted.variance
    # Without a varying covariate CUPED is a no-op.
    assert cuped_theta(*plain) == 0 and confidence_sequence(*plain, alpha=ALPHA, tau2=TAU2) == unadjusted


def test_the_one_sided_bound_lies_where_the_p_value_reaches_alpha() -> None:
    variances = np.array([1e-4, 0.01, 0.04, 0.5])
    for alpha in (0.01, 0.05, 0.2):
        margin = one_sided_margin(variances, TAU2, alpha)
        assert np.allclose(mixture_p_value(margin, variances, TAU2), alpha)
        assert np.all(mixture_p_value(0.99 * margin, variances, TAU2) > alpha)
