"""An always-valid test on a difference of means: the normal-mixture SPRT and its confidence sequence.

Johari, Koomen, Pekelis & Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests" (Operations
Research, 2022), section 4: with Δ̂ = mean_T − mean_C, V = s²_T/n_T + s²_C/n_C and a N(0, τ²) mixture over
the effect, the mixture likelihood ratio against effect θ₀ is

    Λ(θ₀) = sqrt(V / (V + τ²)) · exp( τ² (Δ̂ − θ₀)² / (2 V (V + τ²)) ).

Rejecting θ₀ once Λ(θ₀) ≥ 1/α keeps the error ≤ α however often the data is looked at, so the test may be
checked after every event. The always-valid p-value is the running minimum of 1/Λ(0), and the values of θ₀
not yet rejected form the confidence sequence Δ̂ ± sqrt( 2V(V+τ²)/τ² · (ln(1/α) + ½ ln((V+τ²)/V)) ).
The variance is plugged in from the data, which is why a minimum sample per arm is required first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Decision = Literal["promote", "rollback", "continue", "inconclusive"]


@dataclass
class ArmStats:
    """Running sufficient statistics of one arm: count, sum and sum of squares."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.total_sq += x * x

    @classmethod
    def of(cls, values: list[float]) -> ArmStats:
        stats = cls()
        for x in values:
            stats.add(x)
        return stats

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        if self.n < 2:
            return math.nan
        return max(self.total_sq - self.total * self.total / self.n, 0.0) / (self.n - 1)


@dataclass(frozen=True)
class SequentialResult:
    decision: Decision
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_control: int
    n_treatment: int
    reason: str

    def as_dict(self) -> dict:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.__dict__.items()
        }


def mixture_half_width(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the confidence sequence for a difference whose estimate has variance `variance`."""
    return math.sqrt(
        2
        * variance
        * (variance + tau2)
        / tau2
        * (math.log(1 / alpha) + 0.5 * math.log((variance + tau2) / variance))
    )


def mixture_p_value(effect: float, variance: float, tau2: float) -> float:
    """1/Λ(0), capped at 1: this look's contribution to the always-valid p-value."""
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + tau2 * effect**2 / (
        2 * variance * (variance + tau2)
    )
    return min(1.0, math.exp(-log_lr))


def msprt(
    control: ArmStats,
    treatment: ArmStats,
    *,
    alpha: float,
    tau2: float,
    min_samples: int,
    harm_margin: float = 0.0,
    previous_p: float = 1.0,
) -> SequentialResult:
    """Decide on treatment − control: promote once the sequence lies above 0, roll back once below."""
    effect = treatment.mean - control.mean
    base = {"effect": effect, "n_control": control.n, "n_treatment": treatment.n}
    if min(control.n, treatment.n) < max(min_samples, 2):
        return SequentialResult(
            "continue",
            ci_low=-math.inf,
            ci_high=math.inf,
            p_value=previous_p,
            reason=f"waiting for {min_samples} observations per arm",
            **base,
        )
    variance = treatment.variance / treatment.n + control.variance / control.n
    if not math.isfinite(effect) or not math.isfinite(variance):
        return SequentialResult(
            "inconclusive",
            ci_low=math.nan,
            ci_high=math.nan,
            p_value=previous_p,
            reason="missing or non-finite data",
            **base,
        )
    if variance == 0:
        return SequentialResult(
            "inconclusive",
            ci_low=effect,
            ci_high=effect,
            p_value=previous_p,
            reason="zero variance: the KPI does not vary, nothing can be concluded",
            **base,
        )
    half = mixture_half_width(variance, tau2, alpha)
    p_value = min(previous_p, mixture_p_value(effect, variance, tau2))
    low, high = effect - half, effect + half
    if low > 0:
        return SequentialResult(
            "promote",
            ci_low=low,
            ci_high=high,
            p_value=p_value,
            reason=f"treatment better: effect {effect:+.3f}, interval [{low:+.3f}, {high:+.3f}]",
            **base,
        )
    if high < -harm_margin:
        return SequentialResult(
            "rollback",
            ci_low=low,
            ci_high=high,
            p_value=p_value,
            reason=f"treatment worse: effect {effect:+.3f}, interval [{low:+.3f}, {high:+.3f}]",
            **base,
        )
    return SequentialResult(
        "continue",
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        reason=f"interval [{low:+.3f}, {high:+.3f}] still holds 0",
        **base,
    )
