"""A/A and power simulations with repeat users: canary statistics must be per user, the unit randomised.

Users' request counts are heavy-tailed and each user has their own thumbs-up and escalation propensity, so
one user's answers are correlated. The per-request analysis (every answer its own unit) is what the
controller did before it grouped answers by user; on the same data it promotes A/A canaries far above α.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from tuneloop.rollout.design import MIN_UNITS
from tuneloop.rollout.guardrails import rate_guardrail
from tuneloop.rollout.sequential import ArmStats, confidence_sequence

ALPHA, TAU2, MIN = 0.05, 0.04, 30
SIMS, LOOKS = 200, 20


@dataclass(frozen=True)
class Traffic:
    """Simulated experiments; (sims, users, looks) arrays are each user's running sums at each look."""

    thumbs: np.ndarray  # sum of ±1 thumbs
    escalated: np.ndarray  # count of escalated answers
    answers: np.ndarray
    treated: np.ndarray  # (sims, users)
    covariate: np.ndarray  # (sims, users): pre-period mean thumbs less the pooled mean; 0 without history


def _traffic(
    rng: np.random.Generator, *, users: int, share: float, lift: float = 0.0, balanced: bool = False
) -> Traffic:
    """`lift` raises the treatment's thumbs-up probability; every request lands at a uniform random look.
    `balanced`: exactly `share` of the users treated, as a key chosen for its split gives (a completely
    randomised design), rather than each user on their own coin."""
    shape = (SIMS, users)
    answers = np.minimum(np.floor(rng.pareto(1.2, shape) * 2) + 1, 150).astype(int)  # median 2, tail 150
    p_up, p_escalate = rng.beta(2, 2, shape), rng.beta(0.3, 5.7, shape)
    if balanced:
        treated = rng.permuted(np.arange(users) < round(share * users) * np.ones(shape, bool), axis=1)
    else:
        treated = rng.random(shape) < share
    owner = np.repeat(np.arange(SIMS * users), answers.ravel())
    up = rng.random(owner.size) < np.clip(p_up + lift * treated, 0, 1).ravel()[owner]
    escalated = rng.random(owner.size) < p_escalate.ravel()[owner]
    cell = owner * LOOKS + rng.integers(0, LOOKS, owner.size)

    def running(weights: np.ndarray | None) -> np.ndarray:
        counts = np.bincount(cell, weights=weights, minlength=SIMS * users * LOOKS)
        return counts.reshape(SIMS, users, LOOKS).cumsum(axis=-1)

    history = rng.poisson(3.0, shape)  # answers before the experiment; some users have none
    ups = rng.binomial(history, p_up)
    pooled = (2 * ups - history).sum(-1, keepdims=True) / history.sum(-1, keepdims=True)
    covariate = np.where(history > 0, (2 * ups - history) / np.maximum(history, 1) - pooled, 0.0)
    return Traffic(
        running(np.where(up, 1.0, -1.0)),
        running(escalated.astype(float)),
        running(None),
        treated,
        covariate,
    )


def _per_user(traffic: Traffic, values: np.ndarray, arm: np.ndarray, cuped: bool = False) -> ArmStats:
    keep = arm[..., None]
    n = traffic.answers * keep
    w = traffic.covariate[..., None] * n if cuped else 0.0
    return ArmStats.from_units(values * keep, n, w, axis=1)


def _per_request(traffic: Traffic, values: np.ndarray, squares: np.ndarray, arm: np.ndarray) -> ArmStats:
    keep = arm[..., None]
    n, total = (traffic.answers * keep).sum(1), (values * keep).sum(1)
    return ArmStats(units=n, n=n, total=total, yy=(squares * keep).sum(1), yn=total, nn=n)


def _promoted(control: ArmStats, treatment: ArmStats, minimum: int = MIN) -> np.ndarray:
    """Per experiment: whether the first decision over the looks is a promotion."""
    bounds = confidence_sequence(control, treatment, alpha=ALPHA, tau2=TAU2)
    ready = np.minimum(control.units, treatment.units) >= minimum
    promote, rollback = ready & (bounds.low > 0), ready & (bounds.high < 0)
    first = [np.where(m.any(-1), m.argmax(-1), LOOKS) for m in (promote, rollback)]
    return first[0] < first[1]


def _thumbs_promotions(traffic: Traffic, minimum: int = MIN) -> dict[str, float]:
    arms = (~traffic.treated, traffic.treated)
    thumbs = traffic.thumbs
    per_request = [_per_request(traffic, thumbs, traffic.answers, a) for a in arms]
    per_user = [_per_user(traffic, thumbs, a) for a in arms]
    cuped = [_per_user(traffic, thumbs, a, cuped=True) for a in arms]
    return {
        name: float(_promoted(*stats, minimum=minimum).mean())
        for name, stats in (("request", per_request), ("user", per_user), ("cuped", cuped))
    }


def test_aa_canaries_with_repeat_users_promote_at_most_alpha_only_when_analysed_per_user() -> None:
    for seed, share, users in ((0, 0.5, 300), (1, 0.2, 500)):
        traffic = _traffic(np.random.default_rng(seed), users=users, share=share)
        assert ((traffic.answers[..., -1] >= 20).sum(1) >= 5).all()  # every experiment has heavy users
        rates = _thumbs_promotions(traffic)
        assert rates["user"] <= ALPHA and rates["cuped"] <= ALPHA
        assert rates["request"] > 2 * ALPHA  # the old per-request analysis is overconfident


def test_aa_canaries_of_a_few_dozen_users_promote_at_most_alpha_at_the_designed_floor() -> None:
    for seed, users in ((4, 40), (5, 60), (6, 100)):
        traffic = _traffic(np.random.default_rng(seed), users=users, share=0.5)
        rates = _thumbs_promotions(traffic, minimum=MIN_UNITS)
        assert rates["user"] <= ALPHA and rates["cuped"] <= ALPHA, rates


def test_aa_canaries_of_twenty_odd_users_split_by_a_balanced_key_promote_at_most_alpha() -> None:
    for seed, users in ((7, 20), (8, 24), (9, 31)):
        traffic = _traffic(np.random.default_rng(seed), users=users, share=0.5, balanced=True)
        assert (traffic.treated.sum(1) == round(users / 2)).all()
        rates = _thumbs_promotions(traffic, minimum=MIN_UNITS)
        assert rates["user"] <= ALPHA and rates["cuped"] <= ALPHA, rates


def _at(stats: ArmStats, sim: int, look: int) -> ArmStats:
    """One experiment at one look, out of the vectorised statistics."""
    values = (getattr(stats, f.name) for f in fields(stats))
    return ArmStats(*(v[sim, look] if np.ndim(v) else v for v in values))


def test_aa_escalation_guardrail_with_repeat_users_breaches_at_most_alpha_only_per_user() -> None:
    traffic = _traffic(np.random.default_rng(2), users=300, share=0.5)
    arms = (~traffic.treated, traffic.treated)
    flags = traffic.escalated
    analyses = {
        "request": [_per_request(traffic, flags, flags, a) for a in arms],
        "user": [_per_user(traffic, flags, a) for a in arms],
    }
    rates = {}
    for name, (control, treatment) in analyses.items():
        breached = [
            any(
                rate_guardrail(
                    "escalation_rate",
                    _at(control, sim, look),
                    _at(treatment, sim, look),
                    tolerance=0.0,
                    alpha=ALPHA,
                    tau2=TAU2,
                    min_samples=MIN,
                ).breached
                for look in range(LOOKS)
            )
            for sim in range(SIMS)
        ]
        rates[name] = np.mean(breached)
    assert rates["user"] <= ALPHA < rates["request"]


def test_a_real_effect_is_still_promoted_and_cuped_promotes_it_more_often() -> None:
    traffic = _traffic(np.random.default_rng(3), users=1000, share=0.5, lift=0.15)
    rates = _thumbs_promotions(traffic)
    assert rates["user"] >= 0.6
    assert rates["cuped"] >= rates["user"] + 0.1
