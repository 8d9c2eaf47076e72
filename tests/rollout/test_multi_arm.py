"""Multi-arm experiments: sticky weighted assignment, the best-arm procedure under continuous monitoring (A/A
simulation with repeat users), and the stored experiment's life (start, eliminate, promote) on SQLite."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import pytest

from tests.rollout.canary_traffic import log_arm_interaction
from tuneloop.clock import now_utc
from tuneloop.errors import Conflict
from tuneloop.registry.versions import Registry
from tuneloop.rollout import arms as multi
from tuneloop.rollout.controller import ArmData, finish
from tuneloop.rollout.experiments import get_experiment
from tuneloop.rollout.multi_arm import assign_arm, decide_arms, reweigh
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import versions

POLICY = RolloutPolicy(min_samples=20, max_samples=100_000)
ARMS = reweigh(
    [{"arm": a, "version": a, "state": "live"} for a in ("control", "arm-1", "arm-2", "arm-3")], {}
)
SIMS, LOOKS, NEW_USERS = 100, 8, 50
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_assignment_is_sticky_and_dropping_an_arm_moves_only_its_users() -> None:
    users = [f"u{i}" for i in range(4000)]
    before = {u: assign_arm("exp-1", u, ARMS) for u in users}
    assert before == {u: assign_arm("exp-1", u, ARMS) for u in users}
    shares = Counter(before.values())
    assert all(abs(shares[a["arm"]] / len(users) - 0.25) < 0.03 for a in ARMS)
    after = {u: assign_arm("exp-1", u, reweigh(ARMS, {"arm-2": "worse"})) for u in users}
    moved = {u for u in users if before[u] != after[u]}
    assert moved == {u for u in users if before[u] == "arm-2"}
    assert "arm-2" not in after.values()


class Ending(NamedTuple):
    winner: str | None  # the promoted arm
    look: int  # the look that ended it (looks: not ended)
    reasons: dict[str, str]  # each eliminated arm's reason


def _simulate(
    rng: np.random.Generator, lift: dict[str, float], start: list[dict] = ARMS, looks: int = LOOKS
) -> Ending:
    """One experiment with repeat users, looked at after every batch."""
    arms = [dict(a) for a in start]
    reasons: dict[str, str] = {}
    propensity: dict[str, float] = {}
    served: dict[str, str] = {}  # each user's arm under the current weights
    data = {a["arm"]: ArmData() for a in arms}
    for look in range(looks):
        for i in range(NEW_USERS):
            propensity[f"u{look}-{i}"] = rng.beta(2, 2)
        for user, count in zip(propensity, rng.poisson(0.7, len(propensity)), strict=True):
            if user not in served:
                served[user] = assign_arm("sim", user, arms)
            arm = served[user]
            p = min(1.0, propensity[user] + lift.get(arm, 0.0))
            for up in rng.random(count) < p:
                _observe(data[arm], user, 1.0 if up else -1.0)
        # Users on each live arm now (the store-backed review counts those since the weights changed).
        current = Counter(served.values())
        counts = {a["arm"]: current[a["arm"]] for a in arms if a["state"] == "live"}
        verdict = decide_arms(arms, data, POLICY, step_counts=counts)
        reasons.update(verdict.get("eliminated", {}))
        if verdict["action"] == "promote":
            return Ending(verdict["winner"], look, reasons)
        if verdict["action"] in ("rollback", "halt"):
            return Ending(None, look, reasons)
        if verdict["action"] == "eliminate":
            arms = reweigh(arms, verdict["eliminated"])
            served = {u: assign_arm("sim", u, arms) for u in served}
    return Ending(None, looks, reasons)


def _observe(arm: ArmData, user: str, thumbs: float) -> None:
    arm.kpi.append(thumbs)
    arm.kpi_units.append(user)
    arm.kpi_covariate.append(0.0)
    for field in ("escalated", "unsafe", "errors"):
        getattr(arm, field).append(0.0)
    arm.latency.append(100.0)
    arm.created.append(T0)
    arm.units.append(user)


def test_an_aa_multi_arm_experiment_picks_a_false_winner_at_most_alpha_of_the_time() -> None:
    rng = np.random.default_rng(7)
    winners = [_simulate(rng, {}).winner for _ in range(SIMS)]
    false_rate = sum(w is not None for w in winners) / SIMS
    assert false_rate <= POLICY.alpha, f"{false_rate:.1%} of A/A experiments promoted a candidate"


def test_the_clearly_best_arm_wins() -> None:
    rng = np.random.default_rng(1)
    winners = Counter(_simulate(rng, {"arm-2": 0.35, "arm-3": 0.1}).winner for _ in range(10))
    assert winners.most_common(1)[0][0] == "arm-2"


def test_two_arms_that_help_about_equally_still_ship_one_that_beats_production() -> None:
    # Waiting for one to beat the other as well never ended: 2 of 40 such experiments promoted.
    rng = np.random.default_rng(3)
    winners = Counter(_simulate(rng, {"arm-1": 0.3, "arm-2": 0.25}).winner for _ in range(10))
    assert set(winners) <= {"arm-1", "arm-2"} and winners["arm-1"] >= winners["arm-2"]


TRIAL = reweigh([{"arm": a, "version": a, "state": "live"} for a in ("control", "arm-1")], {})


def test_a_candidate_that_does_not_help_leaves_its_trial_as_futile_long_before_the_limit() -> None:
    rng = np.random.default_rng(5)
    endings = [_simulate(rng, {}, TRIAL, looks=40) for _ in range(40)]
    futile = [e for e in endings if e.reasons.get("arm-1", "").startswith("futile")]
    assert not any(e.winner for e in endings)
    assert len(futile) >= 0.9 * len(endings)
    assert np.median([e.look for e in futile]) < 20


def test_a_candidate_as_good_as_the_design_effect_is_rarely_given_up_as_futile() -> None:
    # Thumbs ±1, so 0.1 more thumbs-up is +0.2 on the KPI: POLICY's τ.
    rng = np.random.default_rng(6)
    endings = [_simulate(rng, {"arm-1": 0.1}, TRIAL, looks=40) for _ in range(SIMS)]
    futile = sum(e.reasons.get("arm-1", "").startswith("futile") for e in endings)
    assert futile / SIMS <= POLICY.alpha
    assert sum(e.winner == "arm-1" for e in endings) >= 0.8 * SIMS


@pytest.fixture
def tenant(tmp_path) -> TenantStore:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    row, _ = store.create_tenant("acme")
    return store.for_tenant(row)


def _gated(registry: Registry) -> str:
    version = registry.register(kind="adapter", base_model="base", actor="t")
    registry.move(version.id, "gated", actor="t", reason="t")
    return version.id


def test_a_stored_experiment_drops_a_worse_arm_then_promotes_the_best(tenant: TenantStore) -> None:
    registry = Registry(tenant)
    production = _gated(registry)
    registry.move(production, "production", actor="t", reason="t")
    a, b = _gated(registry), _gated(registry)
    exp = multi.start_arms(tenant, [a, b], POLICY, reward_policy=RewardPolicy(), actor="t")
    assert [arm["version"] for arm in exp.arms] == [production, a, b]
    assert {registry.get(v).state for v in (a, b)} == {"canary"}
    rng = np.random.default_rng(0)
    p_up = {"control": 0.5, "arm-1": 0.05, "arm-2": 0.95}
    for step in range(6):
        exp = get_experiment(tenant, exp.id)
        _log(tenant, exp, rng, p_up, start=step * 150)
        exp = multi.review(tenant, RewardPolicy(near_duplicate_threshold=1.0), actor="t")
        if exp.state != "running":
            break
    assert exp.state == "promoted"
    assert registry.get(b).state == "production" and registry.get(a).state == "rolled_back"
    assert registry.get(production).state == "retired"


def _log(tenant: TenantStore, exp, rng: np.random.Generator, p_up: dict, start: int) -> None:
    for i in range(start, start + 150):
        arm = assign_arm(exp.id, f"u{i}", exp.arms)
        iid = log_arm_interaction(tenant, exp.id, i, arm, exp.version_of(arm))
        value = 1 if rng.random() < p_up[arm] else -1
        event = {"id": f"t-{iid}", "interaction_id": iid, "kind": "thumbs", "value": value, "source": "user"}
        tenant.add_feedback([(event, f"t-{iid}")])


def test_an_arm_trained_on_an_erased_user_leaves_at_the_next_look(tenant: TenantStore) -> None:
    registry = Registry(tenant)
    a, b = _gated(registry), _gated(registry)
    exp = multi.start_arms(tenant, [a, b], POLICY, reward_policy=RewardPolicy(), actor="t")
    tenant.transaction(lambda tx: tx.update(versions, versions.c.id == a, erased_at=now_utc()))

    exp = multi.review(tenant, RewardPolicy(), actor="t")

    assert [arm["state"] for arm in exp.arms] == ["live", "eliminated", "live"]
    assert exp.state == "running" and exp.candidates == [b]
    assert registry.get(a).state == "rolled_back"


def test_promoting_by_hand_promotes_the_arm_leading_at_the_last_look(tenant: TenantStore) -> None:
    registry = Registry(tenant)
    a, b = _gated(registry), _gated(registry)
    exp = multi.start_arms(tenant, [a, b], POLICY, reward_policy=RewardPolicy(), actor="t")
    with pytest.raises(Conflict, match="no look has ranked the arms yet"):
        finish(tenant, "promoted", actor="t", reason="by hand")
    _log(tenant, exp, np.random.default_rng(0), {"control": 0.5, "arm-1": 0.4, "arm-2": 0.6}, start=0)
    multi.review(tenant, RewardPolicy(near_duplicate_threshold=1.0), actor="t")

    finish(tenant, "promoted", actor="t", reason="by hand")

    assert registry.get(b).state == "production" and registry.get(a).state == "rolled_back"
