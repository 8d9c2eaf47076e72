"""A seeded two-tenant site for the dashboard tests: versions, gate reports, a canary, traffic, drift."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tests.monitor.seed import cooking_prompt, stream, tax_prompt
from tuneloop.clock import now_utc
from tuneloop.evaluate.report import report_dir, write_report
from tuneloop.monitor.alerts import run_checks
from tuneloop.registry.versions import Registry
from tuneloop.rollout import controller
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import experiments

SECRET = "GLOBEX-SECRET"  # text only tenant B's data contains: it must never reach tenant A's pages


@dataclass
class Site:
    acme_key: str
    globex_key: str
    admin_key: str


def gate(tenant: TenantStore, home: Path, version_id: str, decision: str, production: str | None) -> str:
    """Write a gate report as the gate does and return the path of its JSON file."""
    suites = [
        {"name": "human_preferences", "required": True, "status": "passed", "passed": True, "reason": "",
         "metrics": {"win_rate": 0.61, "ci_low": 0.53, "ci_high": 0.69, "n": 140, "threshold": 0.5},
         "rows": [], "seconds": 1.2},
        {"name": "safety", "required": True, "status": "passed", "passed": True, "reason": "",
         "metrics": {"refusal_rate": 0.97}, "rows": [], "seconds": 0.8},
    ]  # fmt: skip
    report = {
        "tenant": tenant.tenant.name,
        "version": version_id,
        "production": production,
        "snapshot": None,
        "decision": decision,
        "reasons": [],
        "started_at": now_utc().isoformat(),
        "seconds": 2.0,
        "policy": {},
        "suites": suites,
    }
    json_path, _ = write_report(report, report_dir(home, tenant.tenant_id, version_id))
    return str(json_path)


def promote(registry: Registry, home: Path, vid: str, to: list[str], production: str | None) -> None:
    report = gate(registry.tenant, home, vid, "gated", production)
    summary = {"gate": {"decision": "gated", "suites": {"human_preferences": "passed", "safety": "passed"}}}
    registry.move(vid, "gated", actor="gate", reason="all required gate suites passed",
                  gate_report=report, metrics=summary)  # fmt: skip
    for state in to:
        registry.move(vid, state, actor="rollout", reason=f"seeded: {state}")


def build(store: Store, home: Path) -> Site:
    acme_t, acme_key = store.create_tenant("acme")
    globex_t, globex_key = store.create_tenant("globex")
    admin_key = store.add_key(None)
    acme, globex = store.for_tenant(acme_t), store.for_tenant(globex_t)
    now = now_utc()

    versions = Registry(acme)
    versions.register(kind="adapter", base_model="smollm2-135m", actor="learn", version_id="v1")
    promote(versions, home, "v1", ["production"], None)
    versions.register(
        kind="adapter", base_model="smollm2-135m", actor="learn", version_id="v2", parent_id="v1"
    )
    promote(versions, home, "v2", [], "v1")
    versions.register(
        kind="adapter", base_model="smollm2-135m", actor="learn", version_id="v3", parent_id="v2"
    )
    versions.move("v3", "blocked", actor="gate", reason="safety suite failed")
    versions.register(
        kind="adapter", base_model="smollm2-135m", actor="learn", version_id="v4", parent_id="v1"
    )
    promote(versions, home, "v4", [], "v1")
    versions.move("v4", "pending_approval", actor="loop", reason="require_approval")
    # An earlier canary that lost, then the live one, and a candidate waiting for a person's approval.
    versions.register(
        kind="adapter", base_model="smollm2-135m", actor="learn", version_id="v1b", parent_id="v1"
    )
    promote(versions, home, "v1b", [], "v1")
    canary = RolloutPolicy(ramp=[0.2], min_samples=5)
    first = controller.start_canary(acme, "v1b", canary, reward_policy=RewardPolicy(), actor="test").id
    lost = {"decision": "rollback", "effect": -0.21, "ci_low": -0.41, "ci_high": -0.02, "p_value": 0.01,
            "n_control": 61, "n_treatment": 15, "reason": "interval below 0"}  # fmt: skip
    controller.finish(acme, "rolled_back", actor="test", reason="worse on mean reward",
                      stats={"metric": "mean_reward", "interval": [-0.41, -0.02], "test": lost})  # fmt: skip
    exp = controller.start_canary(acme, "v2", canary, reward_policy=RewardPolicy(), actor="test").id
    with store.write() as conn:  # the canary started yesterday: the seeded traffic below falls inside it
        conn.execute(
            experiments.update()
            .where(experiments.c.id == exp)
            .values(started_at=now - timedelta(hours=23), step_started_at=now - timedelta(hours=23))
        )
        conn.execute(  # and the lost one ran from four to three days ago
            experiments.update()
            .where(experiments.c.id == first)
            .values(started_at=now - timedelta(days=4), ended_at=now - timedelta(days=3))
        )
    for arm, version, positive, seed in (("control", "v1", 0.6, 4), ("treatment", "v1b", 0.35, 5)):
        stream(acme, start=now - timedelta(days=4), hours=20, count=10, prompt=cooking_prompt,
               version=version, positive=positive, arm=arm, experiment_id=first, seed=seed)  # fmt: skip

    # A week of cooking questions on v1, then a day of tax questions split between the arms: input drift.
    stream(acme, start=now - timedelta(days=8) + timedelta(hours=1), hours=24 * 7 - 2, count=42,
           prompt=cooking_prompt, version="v1", seed=1)  # fmt: skip
    stream(acme, start=now - timedelta(hours=23), hours=22, count=24, prompt=tax_prompt, version="v1",
           arm="control", experiment_id=exp, seed=2)  # fmt: skip
    stream(acme, start=now - timedelta(hours=22, minutes=30), hours=22, count=16, prompt=tax_prompt,
           version="v2", positive=0.85, arm="treatment", experiment_id=exp, seed=3)  # fmt: skip
    controller.review(acme, RewardPolicy())
    run_checks(acme, RewardPolicy(), now=now_utc())

    g = Registry(globex)
    g.register(kind="adapter", base_model="smollm2-135m", actor="learn", version_id="gx-1")
    promote(g, home, "gx-1", ["production"], None)
    stream(globex, start=now - timedelta(days=2), hours=40, count=12, version="gx-1",
           prompt=lambda rng: f"{SECRET} question {rng.randint(0, 99)}")  # fmt: skip
    return Site(acme_key, globex_key, admin_key)
