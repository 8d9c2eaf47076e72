"""The canary's design from recent traffic: share, τ and horizon adapt; what the tenant set is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuneloop.clock import now_utc
from tuneloop.config import load_policy_file
from tuneloop.rollout.design import (
    MIN_TRIAL_HOURS,
    Traffic,
    design_canary,
    traffic_of,
    trial_candidates,
    users_needed,
)
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.rollout.sequential import ArmStats, msprt

NOW = now_utc()


def test_a_few_hundred_users_get_a_half_and_half_canary_sized_to_what_they_can_show() -> None:
    policy, design = design_canary(RolloutPolicy(), Traffic(users=250, hours=24, sd=0.6), NOW)
    assert policy.ramp == [0.5] and policy.canary_share == 0.5
    assert 0.2 < design["effect"] <= 0.5 and policy.tau2 > RolloutPolicy().tau2
    assert design["enough_users"] and design["expected_decision_at"]
    assert (
        policy.max_samples < RolloutPolicy().max_samples
    )  # an undecided canary ends in this tenant's lifetime


def test_a_busy_tenant_keeps_a_small_canary_and_the_default_effect_scale() -> None:
    policy, design = design_canary(RolloutPolicy(), Traffic(users=40_000, hours=168, sd=0.6), NOW)
    assert policy.ramp == [0.05, 0.2, 0.5] and policy.tau2 == RolloutPolicy().tau2
    assert design["expected_hours"] < 72


def test_a_slow_tenant_is_given_a_larger_share_and_a_longer_horizon() -> None:
    busy, _ = design_canary(RolloutPolicy(), Traffic(users=5_000, hours=1, sd=0.6), NOW)
    slow, design = design_canary(RolloutPolicy(), Traffic(users=5_000, hours=168, sd=0.6), NOW)
    assert slow.canary_share > busy.canary_share
    assert design["expected_hours"] > 0 and slow.max_duration_hours >= RolloutPolicy().max_duration_hours


def test_fields_the_tenant_set_are_kept(tmp_path) -> None:
    path = tmp_path / "rollout_policy.yaml"
    path.write_text("canary_share: 0.1\ntau2: 0.09\n")
    policy, design = design_canary(
        load_policy_file(path, RolloutPolicy), Traffic(users=250, hours=24, sd=0.6), NOW
    )
    assert policy.canary_share == 0.1 and policy.tau2 == 0.09
    assert "ramp" not in design["adapted"] and "tau2" not in design["adapted"]


def test_a_tenant_with_a_few_dozen_users_still_gets_a_canary_that_can_decide() -> None:
    policy, design = design_canary(RolloutPolicy(), Traffic(users=40, hours=24, sd=0.6), NOW)
    assert policy.canary_share == 0.5 and policy.tau2 == 0.25 and not design["enough_users"]
    assert design["expected_hours"] > 24  # it needs more users than the last day brought
    # 30 users per arm out of 40 could never be reached, nor 16 by the smaller half of a random split
    # (13 of 40 users in one half: the helpdesk trial waited out its horizon); 13 it can count on.
    assert policy.min_samples == 13 and "min_samples" in design["adapted"]


def test_a_canary_share_is_never_one_whose_treatment_arm_cannot_reach_its_minimum() -> None:
    # The rag benchmark's tenant: 20 % of 60 users expects 12 in treatment, and 10 came in the run.
    policy, design = design_canary(RolloutPolicy(), Traffic(users=60, hours=0.47, sd=0.14), NOW)
    assert policy.canary_share == 0.3 and policy.min_samples <= 10
    assert design["expected_hours"] < 0.3


def test_sixty_users_split_in_half_need_fewer_than_thirty_per_arm_and_hundreds_keep_thirty() -> None:
    small, _ = design_canary(RolloutPolicy(), Traffic(users=60, hours=24, sd=0.6), NOW)
    large, design = design_canary(RolloutPolicy(), Traffic(users=250, hours=24, sd=0.6), NOW)
    assert small.min_samples == 22 <= small.max_samples
    assert large.min_samples == RolloutPolicy().min_samples and "min_samples" not in design["adapted"]


def test_each_arm_of_a_trial_among_sixty_users_can_reach_its_minimum() -> None:
    """Designed as a canary, three arms of sixty users each needed 24, and got about 20: the trial could
    never decide, and the turn's adapter waited on it."""
    _, canary = design_canary(RolloutPolicy(), Traffic(users=60, hours=24, sd=0.6), NOW)
    trial, design = design_canary(RolloutPolicy(), Traffic(users=60, hours=24, sd=0.6), NOW, trial_arms=3)
    assert trial.min_samples == 13 <= trial.max_samples  # 2 sd short of the 20 users an arm expects
    assert "ramp" not in design["adapted"]  # a trial keeps equal weights
    # Each comparison sees two thirds of the users and is tested at α/2: the trial needs more of them.
    assert design["users_needed"] > canary["users_needed"]


def test_a_trial_ends_at_three_times_its_expected_time_while_a_canary_keeps_the_policy_limit() -> None:
    """A trial whose candidates help too little to show would hold the turn's adapter for the policy's
    14 days; it ends at its own horizon instead."""
    traffic = Traffic(users=150, hours=0.5, sd=0.6)
    canary, _ = design_canary(RolloutPolicy(), traffic, NOW)
    trial, design = design_canary(RolloutPolicy(), traffic, NOW, trial_arms=3)
    assert canary.max_duration_hours == RolloutPolicy().max_duration_hours
    horizon = max(MIN_TRIAL_HOURS, 3 * design["expected_hours"])
    assert abs(trial.max_duration_hours - horizon) < 0.02 and trial.max_duration_hours < 24
    fixed, _ = design_canary(RolloutPolicy(max_duration_hours=48), traffic, NOW, trial_arms=3)
    assert fixed.max_duration_hours == 48  # a limit the tenant wrote is kept
    # A trial of one candidate has a canary's two arms, and is still a trial: equal weights, its horizon.
    single, design = design_canary(RolloutPolicy(), traffic, NOW, trial_arms=2)
    assert single.max_duration_hours < 24 and "ramp" not in design["adapted"]


def test_without_enough_users_with_feedback_the_policy_is_used_as_set() -> None:
    policy, design = design_canary(RolloutPolicy(), traffic_of({"u1": [1.0], "u2": [-1.0]}, 2.0), NOW)
    assert policy == RolloutPolicy() and design["adapted"] == []


def test_traffic_summarises_the_spread_of_users_means() -> None:
    traffic = traffic_of({"a": [1.0, 1.0], "b": [-1.0], "c": [0.0, 0.0, 0.0]}, 5.0)
    assert traffic.users == 3 and traffic.hours == 5.0 and abs(traffic.sd - 1.0) < 1e-9


def test_the_designed_canary_decides_for_a_candidate_as_good_as_the_design_effect() -> None:
    traffic = Traffic(users=300, hours=24, sd=0.6)
    policy, design = design_canary(RolloutPolicy(), traffic, NOW)
    share, effect = policy.canary_share, design["effect"]
    needed = users_needed(effect, traffic.sd, share, policy.tau2, policy.alpha)
    rng = np.random.default_rng(0)
    promoted = 0
    runs = 200
    for _ in range(runs):
        treatment = rng.random(int(needed)) < share
        kpi = rng.normal(0.0, traffic.sd, int(needed)) + effect * treatment
        result = msprt(
            ArmStats.of(kpi[~treatment]),
            ArmStats.of(kpi[treatment]),
            alpha=policy.alpha,
            tau2=policy.tau2,
            min_samples=policy.min_samples,
        )
        promoted += result.decision == "promote"
    assert promoted / runs >= 0.7  # planned for 80 % power at the design effect


def test_a_trial_holds_only_as_many_candidates_as_its_users_give_each_arm_its_minimum() -> None:
    # The most even split (a user short with three or more arms) must give every arm MIN_UNITS (10) users.
    users = (0, 19, 20, 32, 33, 43, 44, 1000)
    assert [trial_candidates(n) for n in users] == [0, 0, 1, 1, 2, 2, 3, 89]


def test_a_canary_among_too_few_users_to_decide_says_a_person_decides() -> None:
    _, tiny = design_canary(RolloutPolicy(), Traffic(users=8, hours=2, sd=0.5), NOW)
    _, few = design_canary(RolloutPolicy(), Traffic(users=15, hours=2, sd=0.5), NOW)
    _, enough = design_canary(RolloutPolicy(), Traffic(users=32, hours=2, sd=0.5), NOW)
    assert "`tuneloop rollout promote` or `rollback` decides" in tiny["note"]
    assert few["note"].startswith("an arm may reach 3 of the 10 users the test needs")
    assert "note" not in enough


def test_an_arm_counts_on_the_users_who_came_back_lately_not_on_those_seen_once() -> None:
    """A canary of 60 users, 30 of whom had come once, waited at +0.54 for 22 users per arm while 14 and 16
    came back."""
    everyone, _ = design_canary(RolloutPolicy(), Traffic(users=60, hours=0.45, sd=0.6), NOW)
    lately, design = design_canary(RolloutPolicy(), Traffic(users=60, hours=0.45, sd=0.6, returning=30), NOW)
    assert everyone.min_samples == 22 and lately.min_samples == 10 and design["traffic"]["returning"] == 30


def test_the_traffic_a_design_reads_counts_the_users_seen_in_its_later_half(tmp_path: Path) -> None:
    from datetime import timedelta

    from tests.monitor.seed import give, log
    from tuneloop.rollout.controller import recent_traffic
    from tuneloop.signals.policy import RewardPolicy
    from tuneloop.store.repository import Store

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    for user, minutes_ago in [*((f"once-{i}", 50) for i in range(6)), ("back", 50), ("back", 5), ("new", 5)]:
        at = NOW - timedelta(minutes=minutes_ago)
        give(tenant, log(tenant, prompt="q", response="a", created_at=at, user=user), "thumbs", 1, at)
    traffic = recent_traffic(tenant, RolloutPolicy(), RewardPolicy(), now_utc())
    assert (traffic.users, traffic.returning, traffic.active) == (8, 2, 2)
    store.close()
