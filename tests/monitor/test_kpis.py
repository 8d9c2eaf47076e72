"""KPIs per version and time bucket, computed from data seeded through the tenant-scoped store API."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.monitor.seed import give, log
from tuneloop.clock import now_utc
from tuneloop.monitor.kpis import BASE, kpis
from tuneloop.signals.policy import RewardPolicy


def test_kpis_are_computed_per_version_from_feedback_and_metadata(store) -> None:
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    start = now_utc() - timedelta(hours=2)
    ids = [
        log(tenant, prompt="q", response="Sure, here it is.", created_at=start, version="v1", latency_ms=ms)
        for ms in (100, 200, 300, 400)
    ]
    log(tenant, prompt="q", response="I'm sorry, but I can't help with that.", created_at=start,
                  version="v1", latency_ms=500, metadata={"error": "upstream timeout"})  # fmt: skip
    flagged = log(tenant, prompt="q", response="ok", created_at=start, metadata={"safety_flag": True})
    at = start + timedelta(minutes=1)
    give(tenant, ids[0], "thumbs", 1, at)
    give(tenant, ids[1], "thumbs", 1, at)
    give(tenant, ids[2], "thumbs", -1, at)
    give(tenant, ids[2], "escalated", True, at)
    give(tenant, flagged, "outcome", {"name": "unsafe", "value": True}, at)

    by_version = {k.version: k for k in kpis(tenant, RewardPolicy(), since=start - timedelta(minutes=1))}

    v1 = by_version["v1"]
    assert (v1.volume, v1.rated) == (5, 3)
    assert v1.positive_rate == pytest.approx(2 / 3)
    assert v1.negative_rate == pytest.approx(1 / 3)
    assert v1.mean_reward is not None and 0 < v1.mean_reward < 1
    assert v1.escalation_rate == pytest.approx(1 / 5)
    assert v1.latency_p50_ms == pytest.approx(300)
    assert v1.latency_p95_ms == pytest.approx(480)
    assert v1.error_rate == pytest.approx(1 / 5)
    assert v1.refusal_rate == pytest.approx(1 / 5)
    assert v1.safety_flags == 0
    base = by_version[BASE]
    assert (base.volume, base.safety_flags, base.positive_rate) == (1, 1, None)


def test_kpis_split_into_time_buckets_from_the_window_start(store) -> None:
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    since = now_utc() - timedelta(hours=3)
    for hour, count in ((0, 2), (2, 3)):
        for _ in range(count):
            log(
                tenant,
                prompt="q",
                response="a",
                created_at=since + timedelta(hours=hour, minutes=5),
                version="v1",
            )

    found = kpis(tenant, RewardPolicy(), since=since, bucket=timedelta(hours=1))

    assert [(k.start - since, k.volume) for k in found] == [(timedelta(0), 2), (timedelta(hours=2), 3)]


def test_kpis_never_count_another_tenants_traffic(store) -> None:
    acme = store.for_tenant(store.create_tenant("acme")[0])
    globex = store.for_tenant(store.create_tenant("globex")[0])
    since = now_utc() - timedelta(hours=1)
    log(acme, prompt="q", response="a", created_at=since + timedelta(minutes=1), version="v1")
    other = log(globex, prompt="q", response="a", created_at=since + timedelta(minutes=1), version="v1")
    give(globex, other, "thumbs", 1, since + timedelta(minutes=2))

    [only] = kpis(acme, RewardPolicy(), since=since)

    assert (only.volume, only.rated) == (1, 0)


def test_session_kpis_appear_per_version_from_sessions_dwell_and_outcomes(store) -> None:
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    start = now_utc() - timedelta(hours=1)

    def ask(prompt: str, user: str, session: str, minutes: float, version: str = "v1") -> str:
        at = start + timedelta(minutes=minutes)
        return log(
            tenant, prompt=prompt, response="a", created_at=at, version=version, user=user, session=session
        )

    ask("Why was my card declined at Zara?", "u1", "s1", 0)
    second = ask("And what about Uber?", "u1", "s1", 1)  # a follow-up question in the same session
    give(tenant, second, "dwell_ms", 30_000, start + timedelta(minutes=2))
    give(tenant, second, "accepted", True, start + timedelta(minutes=2))
    again = ask("My card was declined at Zara, why?", "u1", "s2", 30)  # the same issue, a new session
    give(tenant, again, "outcome", {"name": "resolved", "value": True}, start + timedelta(minutes=32))
    other = ask("How do I reset my password?", "u2", "s3", 5, version="v2")
    give(tenant, other, "escalated", True, start + timedelta(minutes=6))

    by_version = {k.version: k for k in kpis(tenant, RewardPolicy(), since=start - timedelta(minutes=1))}
    v1, v2 = by_version["v1"], by_version["v2"]
    assert v1.sessions == 2 and v1.resolution_rate == 1.0
    assert v1.resolution_p50_s == pytest.approx((90 + 120) / 2)  # s1: 60 s in + 30 s dwell; s2: 2 min
    assert v1.first_action_p50_s == pytest.approx(105)
    assert v1.followup_rate == pytest.approx(1 / 3) and v1.repeat_contact_rate == pytest.approx(1 / 2)
    assert (v2.sessions, v2.resolution_rate, v2.resolution_p50_s, v2.repeat_contact_rate) == (
        1,
        0.0,
        None,
        0.0,
    )


def test_kpis_read_rewards_under_the_tenants_reward_policy(store) -> None:
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    start = now_utc() - timedelta(hours=1)
    sold = log(tenant, prompt="q", response="a", created_at=start, version="v1")
    give(tenant, sold, "outcome", {"name": "sale", "value": True}, start + timedelta(minutes=1))
    since = start - timedelta(minutes=1)

    [unweighted] = kpis(tenant, RewardPolicy(), since=since)
    [weighted] = kpis(tenant, RewardPolicy(outcomes={"sale": 1.0}), since=since)

    assert (unweighted.rated, weighted.rated, weighted.positive_rate) == (0, 1, 1.0)
