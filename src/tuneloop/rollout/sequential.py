"""An always-valid test on a difference of means: one-sided normal-mixture SPRTs and their bounds.

Johari, Koomen, Pekelis & Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests" (Operations
Research 70(3), 2022; arXiv:1512.04922), section 4, the mixture SPRT for a difference of two means, taken
one-sided: each decision asks one question (is the treatment better? is it worse?), so each mixes only over
effects on its own side. With Δ̂ = mean_T − mean_C, V its variance and a half-normal mixture of scale τ over
effects above θ₀, the likelihood ratio against θ₀ is

    Λ⁺(θ₀) = 2 sqrt(V / (V + τ²)) · exp(u² / 2) · Φ(u),     u = (Δ̂ − θ₀) τ / sqrt(V (V + τ²)).

Λ⁺ is a nonnegative supermartingale under every effect ≤ θ₀, so by Ville's inequality rejecting once
Λ⁺(θ₀) ≥ 1/α keeps the error ≤ α however often the data is looked at: the test may be checked after every
event. Λ⁺ rises with Δ̂, so the θ₀ it rejects are those below the lower bound Δ̂ − r, where
r = u*·sqrt(V(V+τ²)/τ²) and u* is the root of u²/2 + ln Φ(u) = ln(1/(2α)) + ½ ln((V+τ²)/V); the upper
bound Δ̂ + r is the mirror image. Promote once the lower bound lies above 0 (a false promotion has chance
≤ α), roll back once the upper one lies below −harm_margin (a false rollback: ≤ α). A symmetric mixture
would spend each decision's α on both sides and need about a quarter more users (ln(1/α) where this has
ln(1/(2α))). The always-valid p-value is the running minimum of 1/Λ⁺(0): that of "the treatment is better".

The test needs only V, and V must be that of the unit that was randomised. Users are assigned to arms, and
one user's answers are correlated, so an arm is summarised per unit u (its KPI sum y_u over n_u answers)
and its mean m = Σy_u / Σn_u gets the delta-method (cluster-robust) variance

    Var(m) ≈ U/(U−1) · Σ_u (y_u − m·n_u)² / N²,     U units, N = Σn_u answers,

which is s²/N when every unit has one answer. Treating answers as independent instead makes the sequence
too narrow whenever users return, and A/A canaries get promoted far more often than α.

CUPED (Deng, Xu, Kohavi & Walker, WSDM 2013) subtracts θ × each answer's pre-experiment covariate (its
user's mean KPI before the experiment, centred; 0 without history), with θ the pooled within-arm regression
of the linearised residuals y_u − m·n_u on those of the covariate sums w_u. The covariate predates
assignment, so the adjusted difference estimates the same effect with the variance it explains removed.

The variance is plugged in from the data (the paper's large-sample approximation), which is why a minimum
number of units per arm is required before any decision, and both arms use the larger of the two per-answer
variances (N × Var(m), the design effect included): a small canary arm with a rare outcome underestimates its
own (thirty thumbs-up in a row have variance 0), and with each arm's own estimate A/A canaries at a 5% share
with 90% thumbs-up promoted 11% of the time (alpha 0.05, 2,000 runs, a look after every event). Under the
null both arms estimate the same per-answer variance, and the larger one can only widen the sequence — the
same as testing a shrunk effect — so the guarantee holds; there that false-promotion rate fell to 0.1%.

Every function here accepts numpy arrays as well as floats, so a simulation can run many experiments at
every look at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.special import log_ndtr

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
Decision = Literal["promote", "rollback", "continue", "inconclusive"]


def _scalar(value: Any) -> Any:
    """Plain floats for scalar inputs (JSON, reprs), arrays untouched."""
    return float(value) if np.ndim(value) == 0 else value


def _ratio(numerator: Any, denominator: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(numerator, denominator, dtype=float)


@dataclass
class ArmStats:
    """Sums over one arm's randomisation units (floats or numpy arrays).

    A unit u has KPI sum y_u and covariate sum w_u over its n_u answers; `yy` is Σy_u², `yn` Σy_u·n_u, etc.
    """

    units: Any = 0
    n: Any = 0
    total: Any = 0.0
    covariate: Any = 0.0
    yy: Any = 0.0
    yn: Any = 0.0
    nn: Any = 0.0
    ww: Any = 0.0
    wn: Any = 0.0
    yw: Any = 0.0

    @classmethod
    def from_units(cls, y: Any, n: Any, w: Any = 0.0, *, axis: int = -1) -> ArmStats:
        """Statistics of per-unit sums laid out along `axis`; units with n = 0 are absent."""
        y, n = np.asarray(y, dtype=float), np.asarray(n, dtype=float)
        w = np.broadcast_to(np.asarray(w, dtype=float), y.shape)
        return cls(
            _scalar((n > 0).sum(axis=axis)),
            _scalar(n.sum(axis=axis)),
            _scalar(y.sum(axis=axis)),
            _scalar(w.sum(axis=axis)),
            _scalar((y * y).sum(axis=axis)),
            _scalar((y * n).sum(axis=axis)),
            _scalar((n * n).sum(axis=axis)),
            _scalar((w * w).sum(axis=axis)),
            _scalar((w * n).sum(axis=axis)),
            _scalar((y * w).sum(axis=axis)),
        )

    @classmethod
    def of(cls, values: Any, units: Any = None, covariate: Any = None) -> ArmStats:
        """A finished sample: each value's unit (None: every value is its own) and covariate (None: 0)."""
        y = np.asarray(values, dtype=float)
        w = np.zeros_like(y) if covariate is None else np.asarray(covariate, dtype=float)
        if units is None or y.size == 0:
            return cls.from_units(y, np.ones_like(y), w)
        _, index = np.unique(np.asarray(units), return_inverse=True)
        return cls.from_units(
            np.bincount(index, weights=y), np.bincount(index).astype(float), np.bincount(index, weights=w)
        )

    @classmethod
    def running(cls, values: Any, member: Any = None) -> ArmStats:
        """After each value along the last axis, each its own unit; `member` (0/1) keeps this arm's."""
        array = np.asarray(values, dtype=float)
        mask = np.ones_like(array) if member is None else np.asarray(member, dtype=float)
        kept = np.where(mask > 0, array, 0.0)
        count, total = np.cumsum(mask, axis=-1), np.cumsum(kept, axis=-1)
        return cls(count, count, total, 0.0, np.cumsum(kept * kept, axis=-1), total, count)

    def merge(self, other: ArmStats) -> ArmStats:
        """The statistics of both samples together; their units must be disjoint (e.g. two shards)."""
        return ArmStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def mean(self) -> Any:
        return _scalar(_ratio(self.total, self.n))

    def residual_sums(self) -> tuple[Any, Any, Any]:
        """Σa², Σab and Σb² of the linearised residuals a_u = y_u − m·n_u and b_u = w_u − (W/N)·n_u."""
        m, k = _ratio(self.total, self.n), _ratio(self.covariate, self.n)
        aa = self.yy - 2 * m * self.yn + m * m * self.nn
        bb = self.ww - 2 * k * self.wn + k * k * self.nn
        ab = self.yw - m * self.wn - k * self.yn + m * k * self.nn
        return np.maximum(aa, 0.0), ab, np.maximum(bb, 0.0)

    def adjusted_mean(self, theta: Any = 0.0) -> Any:
        """The mean answer less θ × the mean covariate (CUPED); θ = 0 gives the plain mean."""
        return _scalar(_ratio(self.total - theta * self.covariate, self.n))

    def spread(self, theta: Any = 0.0) -> Any:
        """N × the cluster-robust variance of adjusted_mean: per-answer variance times the design effect."""
        aa, ab, bb = self.residual_sums()
        units = np.asarray(self.units, dtype=float)
        centred = np.maximum(aa - 2 * theta * ab + np.square(theta) * bb, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _scalar(np.where(units >= 2, units / (units - 1) * centred / self.n, np.nan))


def cuped_theta(control: ArmStats, treatment: ArmStats) -> Any:
    """θ of CUPED, pooled within arms; 0 where no unit's covariate varies."""
    _, ab_c, bb_c = control.residual_sums()
    _, ab_t, bb_t = treatment.residual_sums()
    bb = bb_c + bb_t
    # Relative to Σw²: a covariate constant per answer leaves only rounding noise in Σb².
    varies = bb > 1e-9 * (np.asarray(control.ww) + np.asarray(treatment.ww))
    return _scalar(np.where(varies, _ratio(ab_c + ab_t, bb), 0.0))


class Bounds(NamedTuple):
    """One look: effect, its variance, the one-sided bounds (each at α) and this look's 1/Λ⁺(0)."""

    effect: Any
    variance: Any
    low: Any
    high: Any
    p_value: Any


@dataclass(frozen=True)
class SequentialResult:
    """The decision at one look, with the statistics that justify it (p_value is always-valid)."""

    decision: Decision
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_control: int  # answers with a KPI value
    n_treatment: int
    reason: str
    users_control: int = 0  # randomisation units among them
    users_treatment: int = 0
    theta: float = 0.0  # the CUPED coefficient; 0 without pre-experiment covariates

    def as_dict(self) -> dict:
        """JSON-safe: non-finite numbers become None."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.__dict__.items()
        }


def _log_lr(u: Any, ratio: Any) -> Any:
    """ln Λ⁺ at standardised distance u = (Δ̂ − θ₀) τ / sqrt(V (V + τ²)), with ratio = (V + τ²) / V."""
    return math.log(2) - 0.5 * np.log(ratio) + 0.5 * u * u + log_ndtr(u)


def one_sided_margin(variance: Any, tau2: float, alpha: float) -> Any:
    """How far the always-valid one-sided bound at `alpha` lies from an estimate of variance `variance`."""
    variance = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = (variance + tau2) / variance
        # Solve ln Λ⁺(u) = ln(1/α). u²/2 + ln Φ(u) is convex and rising, and ln Φ ≥ ln ½ for u ≥ 0, so
        # this start lies above the root and Newton's steps fall onto it monotonically; eight reach double
        # precision.
        u = np.sqrt(2 * math.log(1 / alpha) + np.log(ratio))
        for _ in range(8):
            mills = np.exp(-0.5 * u * u - LOG_SQRT_2PI - log_ndtr(u))  # φ(u) / Φ(u), the slope less u
            u = u - (_log_lr(u, ratio) - math.log(1 / alpha)) / (u + mills)
        return _scalar(u * np.sqrt(variance * (variance + tau2) / tau2))


def mixture_p_value(effect: Any, variance: Any, tau2: float) -> Any:
    """1/Λ⁺(0), capped at 1: this look's contribution to the always-valid p-value of "treatment better"."""
    variance = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = np.asarray(effect, dtype=float) * math.sqrt(tau2) / np.sqrt(variance * (variance + tau2))
        return _scalar(np.minimum(1.0, np.exp(-_log_lr(u, (variance + tau2) / variance))))


def confidence_sequence(control: ArmStats, treatment: ArmStats, *, alpha: float, tau2: float) -> Bounds:
    """Effect (treatment − control, CUPED-adjusted), its always-valid one-sided bounds and 1/Λ⁺(0) here."""
    theta = cuped_theta(control, treatment)
    effect = _scalar(treatment.adjusted_mean(theta) - control.adjusted_mean(theta))
    # The larger per-answer variance for both arms: see the module docstring for why.
    spread = np.fmax(control.spread(theta), treatment.spread(theta))
    variance = _scalar(_ratio(spread, treatment.n) + _ratio(spread, control.n))
    margin = one_sided_margin(variance, tau2, alpha)
    return Bounds(effect, variance, effect - margin, effect + margin, mixture_p_value(effect, variance, tau2))


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
    """Decide on treatment − control: promote once the sequence lies above 0, roll back once below.

    `min_samples` counts units per arm; `previous_p` is the last look's always-valid p-value (1.0 at the
    start). What cannot be judged (too few units, NaN, zero variance) is "inconclusive", never a pass.
    """
    n_c, n_t, u_c, u_t = int(control.n), int(treatment.n), int(control.units), int(treatment.units)
    theta = float(cuped_theta(control, treatment))

    def result(decision: Decision, low: float, high: float, p: float, reason: str) -> SequentialResult:
        return SequentialResult(
            decision, float(effect), float(low), float(high), float(p), n_c, n_t, reason, u_c, u_t, theta
        )

    effect = treatment.adjusted_mean(theta) - control.adjusted_mean(theta) if min(n_c, n_t) else math.nan
    needed = max(min_samples, 2)
    if min(u_c, u_t) < needed:
        reason = f"too few users: {u_c} control, {u_t} treatment; {needed} per arm needed"
        return result("inconclusive", -math.inf, math.inf, previous_p, reason)
    bounds = confidence_sequence(control, treatment, alpha=alpha, tau2=tau2)
    if not (math.isfinite(bounds.effect) and math.isfinite(bounds.variance)):
        return result("inconclusive", math.nan, math.nan, previous_p, "missing or non-finite KPI values")
    if bounds.variance == 0:
        reason = "zero variance: the KPI does not vary, nothing can be concluded"
        return result("inconclusive", effect, effect, previous_p, reason)
    low, high = bounds.low, bounds.high
    p_value = min(previous_p, bounds.p_value)
    interval = f"effect {effect:+.3f}, always-valid bounds [{low:+.3f}, {high:+.3f}], each at alpha {alpha}"
    if low > 0:
        return result("promote", low, high, p_value, f"treatment better: {interval}")
    if high < -harm_margin:
        return result("rollback", low, high, p_value, f"treatment worse: {interval}")
    return result("continue", low, high, p_value, f"undecided: {interval}")


FUTILE = "futile"  # how the reason of an experiment or arm ended as futile begins (loop.light reads it)


def futility(test: SequentialResult, tau2: float) -> str | None:
    """Why an undecided test is futile, or None: its interval lies wholly below the design effect √τ² the
    experiment was sized to find, so waiting would only hold the users and the next candidate back. It
    promotes nothing, so α is untouched; an effect as large as √τ² is given up with chance at most α."""
    effect = math.sqrt(tau2)
    if test.decision == "continue" and test.ci_high < effect:
        return f"{FUTILE}, cannot reach the design effect {effect:+.3f}: {test.reason}"
    return None
