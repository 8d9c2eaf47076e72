"""Guardrails that stop a canary early (one-sided, always-valid) and the sample-ratio-mismatch check.

Rates (escalations, safety flags, errors — Bernoulli indicators) use the same one-sided normal-mixture
bound as the primary KPI (sequential.py) on rate_T − rate_C, with the same cluster-robust variance per
randomisation unit (one user's answers are correlated): a guardrail is breached once the lower bound lies
above its tolerance, i.e. the treatment is surely worse than tolerated. Each arm's per-answer variance
is floored at one pseudo-event (1/N) so that two arms with no events yet cannot look certain.

Latency is not a mean, so it is not tested as one. "p95_T ≤ ratio · p95_C" is tested through an indicator:
the threshold is ratio × the control arm's empirical p95, and while the hypothesis holds at most 5% of
treatment answers exceed it; the guardrail is breached once the sequence for the treatment's share of
answers above the threshold lies wholly above 5%. This is approximate: the control p95 is plugged in as if
it were known, not treated as random — a ratio above 1 (1.25 by default) absorbs that noise.

Sample-ratio mismatch: a chi-square goodness-of-fit test of the arm counts against the planned split; a
p-value below the policy's threshold (0.001) means assignment or logging is broken, and the run halts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chisquare

from tuneloop.rollout.sequential import ArmStats, one_sided_margin
from tuneloop.store.audit import json_safe

P95_SHARE = 0.05  # share of answers above a p95, by definition


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail at one look; `lower_bound` is the always-valid lower bound compared to `tolerance`."""

    name: str
    breached: bool
    control_rate: float
    treatment_rate: float
    lower_bound: float  # rates: of rate_T − rate_C; latency: of the treatment's share above the threshold
    tolerance: float
    reason: str = ""

    def as_dict(self) -> dict:
        """JSON-safe: non-finite numbers become None."""
        return json_safe(dict(self.__dict__))


def _rate_variance(stats: ArmStats) -> float:
    """Cluster-robust variance of the arm's rate, floored at one pseudo-event."""
    # A rate of exactly 0 (or 1) has no sample variance; one pseudo-event keeps the bound honest.
    return max(float(stats.spread()), 1 / stats.n) / stats.n


def rate_guardrail(
    name: str,
    control: ArmStats,
    treatment: ArmStats,
    *,
    tolerance: float,
    alpha: float,
    tau2: float,
    min_samples: int,
) -> GuardrailResult:
    """Breached once treatment's rate surely exceeds control's by more than `tolerance` (at `alpha`).

    `min_samples` counts units (users) per arm, as the primary test does.
    """
    c_rate, t_rate = float(control.mean), float(treatment.mean)
    if min(control.units, treatment.units) < max(min_samples, 2):
        return GuardrailResult(name, False, c_rate, t_rate, -math.inf, tolerance, "too few samples")
    if not (math.isfinite(c_rate) and math.isfinite(t_rate)):
        return GuardrailResult(name, False, c_rate, t_rate, math.nan, tolerance, "non-finite indicators")
    variance = _rate_variance(treatment) + _rate_variance(control)
    low = (t_rate - c_rate) - float(one_sided_margin(variance, tau2, alpha))
    breached = low > tolerance
    reason = (
        f"{name} breached: treatment {t_rate:.3f} vs control {c_rate:.3f}, "
        f"rise at least {low:+.3f} > tolerated {tolerance:+.3f}"
        if breached
        else f"{name} within tolerance (rise at least {low:+.3f}, tolerated {tolerance:+.3f})"
    )
    return GuardrailResult(name, breached, c_rate, t_rate, low, tolerance, reason)


def p95(values: Sequence[float]) -> float:
    """Empirical 95th percentile (the smallest value with at least 95% of the sample at or below it)."""
    if len(values) == 0:
        return math.inf
    ordered = np.sort(np.asarray(values, dtype=float))
    return float(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)])


def latency_guardrail(
    control_ms: Sequence[float],
    treatment_ms: Sequence[float],
    *,
    control_units: Sequence[str] | None = None,
    treatment_units: Sequence[str] | None = None,
    ratio: float,
    alpha: float,
    tau2: float,
    min_samples: int,
) -> GuardrailResult:
    """Breached once the treatment's p95 latency surely exceeds `ratio` × control's (see module docstring).

    The units are each answer's randomisation unit (None: every answer is its own); `min_samples` counts
    units per arm.
    """
    threshold = ratio * p95(control_ms)
    slow_t = ArmStats.of(np.asarray(treatment_ms, dtype=float) > threshold, treatment_units)
    control_count = len(control_ms) if control_units is None else len(set(control_units))
    if min(control_count, slow_t.units) < max(min_samples, 2):
        return GuardrailResult(
            "p95_latency", False, math.nan, math.nan, -math.inf, P95_SHARE, "too few samples"
        )
    if not math.isfinite(threshold) or not np.all(np.isfinite(treatment_ms)):
        return GuardrailResult(
            "p95_latency", False, math.nan, math.nan, math.nan, P95_SHARE, "non-finite latencies"
        )
    share = float(slow_t.mean)
    low = share - float(one_sided_margin(_rate_variance(slow_t), tau2, alpha))
    breached = low > P95_SHARE
    reason = (
        f"p95_latency breached: at least {low:.1%} of treatment answers are slower than {ratio}× "
        f"control's p95 ({threshold:.0f} ms), more than {P95_SHARE:.0%}"
        if breached
        else f"p95_latency within {ratio}× control's p95 ({threshold:.0f} ms)"
    )
    slow_c = float(np.mean(np.asarray(control_ms, dtype=float) > threshold))
    return GuardrailResult("p95_latency", breached, slow_c, share, low, P95_SHARE, reason)


@dataclass(frozen=True)
class SampleRatioCheck:
    """The sample-ratio-mismatch check at one look; `halt` when the split is implausible."""

    halt: bool
    p_value: float
    n_control: int
    n_treatment: int
    share: float
    reason: str


def sample_ratio_p(n_control: int, n_treatment: int, share: float) -> float:
    """Chi-square goodness-of-fit p-value of the arm counts against the planned treatment share."""
    total = n_control + n_treatment
    if total == 0 or not 0 < share < 1:
        return 1.0
    return float(chisquare([n_control, n_treatment], f_exp=[total * (1 - share), total * share]).pvalue)


def sample_ratio_check(
    n_control: int, n_treatment: int, share: float, *, threshold: float = 0.001
) -> SampleRatioCheck:
    """Halt when the observed split is implausible under the planned one (p < `threshold`)."""
    p = sample_ratio_p(n_control, n_treatment, share)
    halt = p < threshold
    reason = (
        f"sample ratio mismatch: p={p:.2g} for {n_control} control / {n_treatment} treatment at planned "
        f"share {share}; check assignment and logging before trusting any result"
        if halt
        else f"split consistent with share {share} (p={p:.2g})"
    )
    return SampleRatioCheck(halt, p, n_control, n_treatment, share, reason)


RATES = {"escalation_rate": "escalated", "safety_flag_rate": "unsafe", "error_rate": "errors"}


def arm_guardrails(
    control: Any, treatment: Any, guardrails: Any, *, alpha: float, tau2: float, min_samples: int
) -> list[GuardrailResult]:
    """Every guardrail of `treatment` against `control` (controller.ArmData) under the policy's tolerances."""
    common = {"alpha": alpha, "tau2": tau2, "min_samples": min_samples}
    guards = [
        rate_guardrail(
            name,
            ArmStats.of(getattr(control, field), control.units),
            ArmStats.of(getattr(treatment, field), treatment.units),
            tolerance=getattr(guardrails, name),
            **common,
        )
        for name, field in RATES.items()
    ]
    guards.append(
        latency_guardrail(
            control.latency,
            treatment.latency,
            control_units=control.units,
            treatment_units=treatment.units,
            ratio=guardrails.p95_latency_ratio,
            **common,
        )
    )
    return guards
