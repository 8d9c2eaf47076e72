"""Calibration of pairwise reward margins: temperature scaling and expected calibration error.

A reward model says P(a preferred over b) = sigmoid((r(a) - r(b)) / T). T is fit on a validation split and
judged on a separate test split; fitting it on the test split would flatter the ECE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2
# Written next to every reward artifact, whichever kind, so `load_reward_model` finds its temperature.
CALIBRATION_FILE = "reward_calibration.json"


def fit_temperature(margins: Sequence[float]) -> float:
    """The T minimising the log-loss of sigmoid(margin / T) on validation margins (chosen minus rejected)."""
    from scipy.optimize import minimize_scalar

    m = np.asarray(margins, dtype=np.float64)
    if m.size == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return float(np.logaddexp(0.0, -m / math.exp(log_t)).mean())

    # Bounded: a perfectly separated validation set drives T toward 0 (infinite confidence).
    found = minimize_scalar(
        nll, bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)), method="bounded"
    )
    return float(math.exp(found.x))


def expected_calibration_error(margins: Sequence[float], temperature: float = 1.0, n_bins: int = 10) -> float:
    """ECE of the pairwise predictions: |accuracy - confidence| per confidence bin, weighted by bin size."""
    m = np.asarray(margins, dtype=np.float64)
    if m.size == 0:
        return 0.0
    # Each pair predicts the side with the higher reward; its confidence is sigmoid(|margin| / T) in [0.5, 1].
    confidence = 1.0 / (1.0 + np.exp(-np.abs(m) / temperature))
    correct = (m > 0).astype(np.float64)
    bins = np.minimum(((confidence - 0.5) * 2 * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def pairwise_accuracy(margins: Sequence[float]) -> float:
    """Share of pairs where the chosen answer outscored the rejected one (ties count as wrong)."""
    m = np.asarray(margins, dtype=np.float64)
    return float((m > 0).mean()) if m.size else 0.0


def calibration_report(val_margins: Sequence[float], test_margins: Sequence[float]) -> dict[str, float]:
    """Fit T on validation margins; report test accuracy and ECE before and after scaling."""
    temperature = fit_temperature(val_margins)
    return {
        "temperature": temperature,
        "val_pairs": len(val_margins),
        "test_pairs": len(test_margins),
        "test_accuracy": pairwise_accuracy(test_margins),
        "test_ece_raw": expected_calibration_error(test_margins, 1.0),
        "test_ece": expected_calibration_error(test_margins, temperature),
    }


def train_val_test_split(
    rows: list[dict], seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[list[dict], list[dict], list[dict]]:
    """Shuffle with `seed` and cut into (train, val, test); val and test get at least one row each."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_test = max(1, round(len(rows) * test_fraction))
    n_val = max(1, round(len(rows) * val_fraction))
    test = [rows[i] for i in order[:n_test]]
    val = [rows[i] for i in order[n_test : n_test + n_val]]
    train = [rows[i] for i in order[n_test + n_val :]]
    return train, val, test
