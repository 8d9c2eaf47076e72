"""Temperature scaling: fit on validation margins, judged on test margins."""

from __future__ import annotations

import numpy as np

from tuneloop.learn.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    train_val_test_split,
)


def _overconfident_margins(n: int, seed: int) -> np.ndarray:
    # True preference logits z; a model that reports 5z is overconfident by a factor of 5.
    rng = np.random.default_rng(seed)
    z = rng.normal(1.0, 1.5, n)
    chosen_wins = rng.random(n) < 1 / (1 + np.exp(-z))
    return np.where(chosen_wins, 5 * z, -5 * z)


def test_temperature_fit_on_validation_undoes_overconfidence():
    val, test = _overconfident_margins(2000, seed=1), _overconfident_margins(2000, seed=2)
    temperature = fit_temperature(val)
    assert 3.5 < temperature < 7.0
    assert expected_calibration_error(test, temperature) < expected_calibration_error(test, 1.0) / 2


def test_calibration_report_never_fits_on_the_test_split():
    val, test = _overconfident_margins(500, seed=3), -_overconfident_margins(500, seed=4)
    report = calibration_report(val, test)
    assert report["temperature"] == fit_temperature(val)
    assert report["test_accuracy"] < 0.5  # the flipped test set is judged as it is, not refit


def test_train_val_test_split_is_deterministic_and_disjoint():
    rows = [{"i": i} for i in range(20)]
    train, val, test = train_val_test_split(rows, seed=7)
    assert (train, val, test) == train_val_test_split(rows, seed=7)
    assert sorted(r["i"] for r in train + val + test) == list(range(20))
    assert len(val) == len(test) == 3
