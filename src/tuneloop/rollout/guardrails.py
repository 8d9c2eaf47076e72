"""Guardrails that stop a canary early, one-sided, and the sample-ratio-mismatch check.

Rates (escalations, safety flags, errors, slow answers) are compared with the same always-valid mixture
sequence as the primary KPI (see sequential.py): a guardrail is breached once the whole sequence for
rate_T − rate_C lies above its tolerance. Latency is turned into a rate: the share of answers slower than
the control arm's p95 (5% in control by construction), so a slower treatment shows as a higher rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import chisquare

from tuneloop.rollout.sequential import ArmStats, mixture_half_width
from tuneloop.store.audit import json_safe


@dataclass(frozen=True)
class GuardrailResult:
    name: str
    breached: bool
    control_rate: float
    treatment_rate: float
    lower_bound: float  # of treatment − control; breached when above the tolerance
    tolerance: float

    def as_dict(self) -> dict:
        return json_safe(dict(self.__dict__))


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
    """Breached when treatment's rate exceeds control's by more than `tolerance`, always-valid at `alpha`."""
    c_rate, t_rate = control.mean, treatment.mean
    if min(control.n, treatment.n) < max(min_samples, 2):
        return GuardrailResult(name, False, c_rate, t_rate, float("-inf"), tolerance)
    # A rate of exactly 0 in both arms has no variance; one pseudo-observation keeps the bound honest.
    variance = (
        max(treatment.variance, 1 / treatment.n) / treatment.n
        + max(control.variance, 1 / control.n) / control.n
    )
    low = (t_rate - c_rate) - mixture_half_width(variance, tau2, alpha)
    return GuardrailResult(name, low > tolerance, c_rate, t_rate, low, tolerance)


def sample_ratio_p(n_control: int, n_treatment: int, share: float) -> float:
    """Chi-square goodness-of-fit p-value of the arm counts against the planned treatment share."""
    total = n_control + n_treatment
    if total == 0 or not 0 < share < 1:
        return 1.0
    return float(chisquare([n_control, n_treatment], f_exp=[total * (1 - share), total * share]).pvalue)
