"""Canary fixtures shared by the rollout and dashboard tests: a gated version and simulated arm traffic."""

from __future__ import annotations

import random

from tuneloop.registry.versions import Registry
from tuneloop.rollout.assignment import assign
from tuneloop.rollout.experiments import Experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore, payload_hash

POLICY = RolloutPolicy(ramp=[0.2, 0.5], min_samples=20, min_samples_per_step=40, max_samples=2000)
REWARDS = RewardPolicy(near_duplicate_threshold=1.0)


def gated_version(tenant: TenantStore, production: bool = True) -> str:
    """A gated adapter version (after a production one unless `production` is False); its id."""
    registry = Registry(tenant)
    if production:
        old = registry.register(kind="adapter", base_model="base", actor="t")
        registry.move(old.id, "gated", actor="t", reason="t")
        registry.move(old.id, "production", actor="t", reason="t")
    new = registry.register(kind="adapter", base_model="base", actor="t")
    registry.move(new.id, "gated", actor="t", reason="t")
    return new.id


def log_arm_interaction(
    tenant: TenantStore, experiment_id: str, i: int, arm: str, version: str | None
) -> str:
    """User `u{i}`'s interaction on an experiment's arm, logged as the gateway records it; its id."""
    iid = f"{experiment_id}-{i}"
    row = {
        "id": iid,
        "user_id": f"u{i}",
        "messages": [{"role": "user", "content": f"q{i}"}],
        "response": "a",
        "choices": ["a"],
        "arm": arm,
        "experiment_id": experiment_id,
        "adapter_version": version,
        "latency_ms": 100.0,
    }
    tenant.log_interaction(row, iid)
    return iid


def canary_traffic(
    tenant: TenantStore,
    exp: Experiment,
    n: int,
    p_up: dict[str, float],
    *,
    escalate: dict | None = None,
    force_arm: str | None = None,
    seed: int = 0,
    start: int = 0,
) -> None:
    """`n` users' interactions on `exp`, each with a thumbs (up with `p_up[arm]`) and maybe an escalation."""
    rng = random.Random(seed)
    for i in range(start, start + n):
        arm = force_arm or assign(exp.id, f"u{i}", exp.share)
        version = exp.treatment_version if arm == "treatment" else exp.control_version
        iid = log_arm_interaction(tenant, exp.id, i, arm, version)
        events = [
            {
                "id": f"t-{iid}",
                "interaction_id": iid,
                "kind": "thumbs",
                "value": 1 if rng.random() < p_up[arm] else -1,
                "source": "user",
            }
        ]
        if escalate and rng.random() < escalate[arm]:
            events.append(
                {
                    "id": f"x-{iid}",
                    "interaction_id": iid,
                    "kind": "escalated",
                    "value": True,
                    "source": "user",
                }
            )
        tenant.add_feedback([(e, payload_hash(e)) for e in events])
