"""Drift checks and alerts on prompt streams seeded through the store API, with the real MiniLM embedder."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import numpy as np
import pytest

from tests.monitor.seed import cooking_prompt, stream, tax_prompt
from tuneloop.clock import now_utc
from tuneloop.monitor.alerts import latest_check, pending_alerts, resolve_alerts, run_checks
from tuneloop.monitor.drift import (
    AUC_THRESHOLD,
    DriftKind,
    check_drift,
    domain_classifier_auc,
    two_proportion_test,
)
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store

N = 40  # per window: above the tests' minimum of 30, small enough to embed in seconds


@pytest.fixture
def tenant(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield store.for_tenant(store.create_tenant("acme")[0])
    store.close()


def seed_windows(tenant, now, *, current_prompt, positive=0.7, words=20) -> None:
    """A week of cooking questions as reference, then the last day's traffic as the current window."""
    stream(tenant, start=now - timedelta(days=8) + timedelta(hours=1), hours=24 * 7 - 2, count=N,
           prompt=cooking_prompt, version="v1", seed=1)  # fmt: skip
    stream(tenant, start=now - timedelta(hours=23), hours=22, count=N, prompt=current_prompt, version="v1",
           positive=positive, response_words=words, seed=2)  # fmt: skip


def test_input_drift_alert_fires_on_a_shifted_prompt_stream_and_is_raised_once(tenant) -> None:
    now = now_utc()
    seed_windows(tenant, now, current_prompt=tax_prompt)

    report, raised = run_checks(tenant, RewardPolicy(), now=now)

    assert [t.kind for t in report.drifted] == ["input_drift"]
    [alert] = pending_alerts(tenant)
    assert alert.kind == "input_drift" and [a.id for a in raised] == [alert.id]
    assert alert.statistic > AUC_THRESHOLD
    assert latest_check(tenant)["tests"][0]["drifted"] is True
    # The drift lasts: a second check finds it again but does not pile up a second open alert.
    _, again = run_checks(tenant, RewardPolicy(), now=now)
    assert again == [] and len(pending_alerts(tenant)) == 1
    assert resolve_alerts(tenant, [alert.id], actor="loop", reason="turn started") == 1
    assert pending_alerts(tenant) == []


def test_drift_stays_quiet_on_an_unshifted_prompt_stream(tenant) -> None:
    now = now_utc()
    seed_windows(tenant, now, current_prompt=cooking_prompt)

    report, raised = run_checks(tenant, RewardPolicy(), now=now)

    assert {t.kind for t in report.tests} == set(get_args(DriftKind))
    assert report.drifted == [] and raised == [] and pending_alerts(tenant) == []


def test_feedback_and_length_drift_fire_when_ratings_fall_and_answers_grow(tenant) -> None:
    now = now_utc()
    seed_windows(tenant, now, current_prompt=cooking_prompt, positive=0.2, words=60)

    report = check_drift(tenant, RewardPolicy(), now=now)

    assert {t.kind for t in report.drifted} == {"feedback_drift", "length_drift"}


def test_too_little_traffic_skips_the_tests_instead_of_alerting(tenant) -> None:
    now = now_utc()
    stream(tenant, start=now - timedelta(hours=5), hours=4, count=5, prompt=tax_prompt)

    report, raised = run_checks(tenant, RewardPolicy(), now=now)

    assert report.tests == [] and raised == []
    assert set(report.skipped) == set(get_args(DriftKind))


def test_two_proportion_test_matches_the_textbook_value() -> None:
    z, p = two_proportion_test(50, 100, 65, 100)

    assert z == pytest.approx(2.1456, abs=1e-3)
    assert p == pytest.approx(0.0319, abs=1e-3)


def test_domain_classifier_separates_shifted_vectors_only() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 16))

    same_auc, random_q95 = domain_classifier_auc(reference, rng.normal(size=(200, 16)))
    shifted_auc, _ = domain_classifier_auc(reference, rng.normal(loc=0.5, size=(200, 16)))

    assert same_auc < max(AUC_THRESHOLD, random_q95) < shifted_auc
    assert shifted_auc > 0.9


def test_a_rise_in_errors_or_escalations_raises_a_kpi_alert(tenant) -> None:
    now = now_utc()
    stream(tenant, start=now - timedelta(days=8) + timedelta(hours=1), hours=24 * 7 - 2, count=N,
           prompt=cooking_prompt, seed=1)  # fmt: skip
    stream(tenant, start=now - timedelta(hours=23), hours=22, count=N, prompt=cooking_prompt, seed=2,
           error_rate=0.3, escalation_rate=0.4)  # fmt: skip

    _, raised = run_checks(tenant, RewardPolicy(), now=now)

    assert {"error_rise", "escalation_rise"} <= {
        a.kind for a in raised
    }  # escalations also read as negative feedback
