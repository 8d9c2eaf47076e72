"""Drift of a tenant's traffic: the current window against the reference window just before it.

Three tests, each starting from Evidently's default drift rules
(docs-old.evidentlyai.com/reference/data-drift-algorithm and
docs.evidentlyai.com/user-guide/customization/embeddings-drift-parameters):
- input drift: a domain classifier (logistic regression) tells current prompts' MiniLM embeddings from
  reference ones; its cross-validated ROC AUC is the score. Evidently's default: drift when AUC > 0.55, and
  with <= 1000 rows it compares against the 95th percentile of a random classifier's AUC instead; we require
  both, so small windows do not alert on noise.
- feedback drift: the positive-feedback rate, by a two-proportion z-test, drift at p < 0.05 (Evidently's
  default for a binary column of <= 1000 rows).
- response-length drift: two-sample Kolmogorov-Smirnov, drift at p < 0.05 with <= 1000 rows; above that the
  normed Wasserstein distance, drift when > 0.1 (Evidently's defaults for numerical columns).

Two KPI checks ride along: a rise of the error rate or of the escalation rate (one-sided two-proportion
z-test, p < 0.05), as `monitor.kpis` defines them. Only a rise alerts: fewer errors is no incident.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from tuneloop.clock import now_utc
from tuneloop.monitor.kpis import errors, escalations, group_events, rewards_of
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore

DriftKind = Literal["input_drift", "feedback_drift", "length_drift", "error_rise", "escalation_rise"]
AUC_THRESHOLD = 0.55
RANDOM_AUC_QUANTILE = 0.95
P_THRESHOLD = 0.05
WASSERSTEIN_THRESHOLD = 0.1
SMALL_SAMPLE = 1000  # Evidently switches from tests to distances above this many reference rows
MAX_PROMPTS = 1000  # per window: embedding cost bounds the input-drift test
MIN_SAMPLES = 30
EmbedFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class DriftTest:
    """One test's verdict, with what a chart needs in `details`."""

    kind: DriftKind
    method: str
    statistic: float
    threshold: float
    p_value: float | None
    drifted: bool
    reference_n: int
    current_n: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftReport:
    reference: tuple[datetime, datetime]
    current: tuple[datetime, datetime]
    tests: list[DriftTest]
    skipped: dict[str, str]  # kind -> why it did not run (too little data)

    @property
    def drifted(self) -> list[DriftTest]:
        return [t for t in self.tests if t.drifted]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def domain_classifier_auc(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(cross-validated AUC of a reference-vs-current classifier, 95th percentile of a random one's AUC)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([reference, current])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[
        :, 1
    ]
    auc = float(roc_auc_score(y, scores))
    # Random scores give AUC ~ N(0.5, (n1 + n2 + 1) / (12 n1 n2)) (Mann-Whitney); Evidently samples it.
    n1, n2 = len(reference), len(current)
    sd = math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    return auc, 0.5 + _normal_quantile(RANDOM_AUC_QUANTILE) * sd


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) for p1 == p2; p = 1 when the pooled rate is 0 or 1."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k2 / n2 - k1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def length_test(
    reference: Sequence[float], current: Sequence[float]
) -> tuple[str, float, float, float | None]:
    """(method, statistic, threshold, p) for response lengths, by Evidently's numerical-column rule."""
    from scipy import stats

    if len(reference) <= SMALL_SAMPLE:
        result = stats.ks_2samp(reference, current)
        return "Kolmogorov-Smirnov", float(result.statistic), P_THRESHOLD, float(result.pvalue)
    # Normed as Evidently does: the distance in units of the reference's standard deviation.
    norm = float(np.std(reference)) or 1.0
    distance = stats.wasserstein_distance(reference, current) / norm
    return "Wasserstein distance (normed)", float(distance), WASSERSTEIN_THRESHOLD, None


def last_user_message(row: dict[str, Any]) -> str:
    for message in reversed(row["messages"]):
        if message["role"] == "user":
            return message["content"]
    return row["messages"][-1]["content"] if row["messages"] else ""


def check_drift(
    tenant: TenantStore,
    policy: RewardPolicy,
    *,
    now: datetime | None = None,
    current: timedelta = timedelta(days=1),
    reference: timedelta = timedelta(days=7),
    min_samples: int = MIN_SAMPLES,
    embed: EmbedFn | None = None,
    seed: int = 0,
) -> DriftReport:
    """Test the window [now - current, now) against the `reference` window just before it."""
    now = now or now_utc()
    cur_start = now - current
    ref_start = cur_start - reference
    ref_rows, ref_events = tenant.window(ref_start, cur_start)
    cur_rows, cur_events = tenant.window(cur_start, now)
    tests: list[DriftTest] = []
    skipped: dict[str, str] = {}

    def enough(kind: str, n_ref: int, n_cur: int, what: str) -> bool:
        if min(n_ref, n_cur) >= min_samples:
            return True
        skipped[kind] = f"{n_ref} reference and {n_cur} current {what}; the test needs {min_samples} of each"
        return False

    if enough("input_drift", len(ref_rows), len(cur_rows), "prompts"):
        tests.append(_input_drift(ref_rows, cur_rows, embed, seed))
    ref_rewards = rewards_of(ref_rows, ref_events, policy)
    cur_rewards = rewards_of(cur_rows, cur_events, policy)
    if enough("feedback_drift", len(ref_rewards), len(cur_rewards), "rated interactions"):
        tests.append(_feedback_drift(ref_rewards, cur_rewards))
    if enough("length_drift", len(ref_rows), len(cur_rows), "responses"):
        tests.append(_length_drift(ref_rows, cur_rows))
    if enough("error_rise", len(ref_rows), len(cur_rows), "interactions"):
        tests.append(_rate_rise("error_rise", "error rate", errors(ref_rows), errors(cur_rows)))
    if enough("escalation_rise", len(ref_rows), len(cur_rows), "interactions"):
        ref_esc, cur_esc = (
            escalations(ref_rows, group_events(ref_events)),
            escalations(cur_rows, group_events(cur_events)),
        )
        tests.append(_rate_rise("escalation_rise", "escalation rate", ref_esc, cur_esc))
    return DriftReport((ref_start, cur_start), (cur_start, now), tests, skipped)


def _sample(rows: list[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    prompts = [last_user_message(r) for r in rows]
    if len(prompts) > MAX_PROMPTS:
        prompts = [prompts[i] for i in sorted(rng.choice(len(prompts), MAX_PROMPTS, replace=False))]
    return prompts


def _input_drift(ref_rows: list, cur_rows: list, embed: EmbedFn | None, seed: int) -> DriftTest:
    if embed is None:
        from tuneloop.signals.embeddings import embed
    rng = np.random.default_rng(seed)
    ref_prompts, cur_prompts = _sample(ref_rows, rng), _sample(cur_rows, rng)
    vectors = embed(ref_prompts + cur_prompts)
    ref, cur = vectors[: len(ref_prompts)], vectors[len(ref_prompts) :]
    auc, random_q = domain_classifier_auc(ref, cur, seed)
    threshold = max(AUC_THRESHOLD, random_q) if len(ref) <= SMALL_SAMPLE else AUC_THRESHOLD
    drifted = auc > threshold
    verdict = "shifted" if drifted else "no shift"
    return DriftTest(
        kind="input_drift",
        method="domain classifier ROC AUC on MiniLM embeddings",
        statistic=auc,
        threshold=threshold,
        p_value=None,
        drifted=drifted,
        reference_n=len(ref),
        current_n=len(cur),
        message=f"prompts: {verdict} (classifier AUC {auc:.3f}, threshold {threshold:.3f})",
        details={"projection": _projection(ref, cur), "centroid_cosine": _centroid_cosine(ref, cur)},
    )


def _feedback_drift(ref: dict[str, float], cur: dict[str, float]) -> DriftTest:
    k1, k2 = sum(v > 0 for v in ref.values()), sum(v > 0 for v in cur.values())
    z, p = two_proportion_test(k1, len(ref), k2, len(cur))
    r1, r2 = k1 / len(ref), k2 / len(cur)
    drifted = p < P_THRESHOLD
    return DriftTest(
        kind="feedback_drift",
        method="two-proportion z-test on the positive-feedback rate",
        statistic=z,
        threshold=P_THRESHOLD,
        p_value=p,
        drifted=drifted,
        reference_n=len(ref),
        current_n=len(cur),
        message=f"positive rate {r1:.1%} -> {r2:.1%} (z {z:+.2f}, p {p:.3g})",
        details={"reference_rate": r1, "current_rate": r2},
    )


def _rate_rise(kind: DriftKind, what: str, ref: list[bool], cur: list[bool]) -> DriftTest:
    k1, k2 = sum(ref), sum(cur)
    z, p_two = two_proportion_test(k1, len(ref), k2, len(cur))
    p = p_two / 2 if z > 0 else 1 - p_two / 2  # one-sided: only a rise is an incident
    r1, r2 = k1 / len(ref), k2 / len(cur)
    return DriftTest(
        kind=kind,
        method=f"one-sided two-proportion z-test on the {what}",
        statistic=z,
        threshold=P_THRESHOLD,
        p_value=p,
        drifted=p < P_THRESHOLD,
        reference_n=len(ref),
        current_n=len(cur),
        message=f"{what} {r1:.1%} -> {r2:.1%} (z {z:+.2f}, p {p:.3g})",
        details={"reference_rate": r1, "current_rate": r2},
    )


def _length_drift(ref_rows: list, cur_rows: list) -> DriftTest:
    ref = [float(len(r["response"])) for r in ref_rows]
    cur = [float(len(r["response"])) for r in cur_rows]
    method, statistic, threshold, p = length_test(ref, cur)
    drifted = p < threshold if p is not None else statistic > threshold
    shown = f"p {p:.3g}" if p is not None else f"distance {statistic:.3f}"
    return DriftTest(
        kind="length_drift",
        method=f"{method} on response length (characters)",
        statistic=statistic,
        threshold=threshold,
        p_value=p,
        drifted=drifted,
        reference_n=len(ref),
        current_n=len(cur),
        message=f"median length {np.median(ref):.0f} -> {np.median(cur):.0f} chars ({shown})",
        details=_histograms(ref, cur),
    )


def _projection(ref: np.ndarray, cur: np.ndarray, limit: int = 300) -> dict[str, list[list[float]]]:
    """Both windows on the first two principal axes of their union, for a scatter plot."""
    both = np.vstack([ref, cur])
    centred = both - both.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    points = np.round(centred @ axes[:2].T, 4)
    return {"reference": points[: len(ref)][:limit].tolist(), "current": points[len(ref) :][:limit].tolist()}


def _centroid_cosine(ref: np.ndarray, cur: np.ndarray) -> float:
    a, b = ref.mean(axis=0), cur.mean(axis=0)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _histograms(ref: list[float], cur: list[float], bins: int = 12) -> dict[str, list[float]]:
    edges = np.histogram_bin_edges(ref + cur, bins=bins)
    ref_h = np.histogram(ref, edges)[0] / max(len(ref), 1)
    cur_h = np.histogram(cur, edges)[0] / max(len(cur), 1)
    return {
        "edges": edges.round(1).tolist(),
        "reference": ref_h.round(4).tolist(),
        "current": cur_h.round(4).tolist(),
    }


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))
