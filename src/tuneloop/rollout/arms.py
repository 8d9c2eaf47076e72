"""Multi-arm experiments as stored state: start one (production against several gated candidates), and look
at it once, acting on what rollout.multi_arm decides. Each change is one transaction with its audit row, as
the canary controller's are; pause, resume, rollback and promote by hand are the controller's own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tuneloop.clock import now_utc
from tuneloop.errors import BadRequest, Conflict
from tuneloop.registry.versions import Registry
from tuneloop.rollout import controller
from tuneloop.rollout.experiments import Experiment, active_experiment, get_experiment
from tuneloop.rollout.multi_arm import CONTROL, assign_arm, decide_arms, live_arms, reweigh
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import experiments

MAX_CANDIDATES = 6  # every arm splits the traffic; more arms, slower decisions


def start_arms(
    tenant: TenantStore,
    version_ids: list[str],
    policy: RolloutPolicy,
    *,
    reward_policy: RewardPolicy,
    actor: str,
    reason: str = "passed the gate",
    experiment_id: str | None = None,
) -> Experiment:
    """Put gated candidates on trial together against production (or the base model), in equal shares."""
    if not 1 <= len(version_ids) <= MAX_CANDIDATES or len(set(version_ids)) != len(version_ids):
        raise BadRequest(f"a multi-arm experiment takes 1 to {MAX_CANDIDATES} distinct candidates")
    registry = Registry(tenant)
    for version_id in version_ids:
        if (state := registry.get(version_id).state) != "gated":
            raise Conflict(f"version {version_id} is {state}; only gated versions can go on trial")
    production = registry.production("adapter")
    now = now_utc()
    policy, design, traffic = controller.designed(tenant, policy, reward_policy, now, len(version_ids) + 1)
    arms = reweigh(
        [
            {"arm": CONTROL, "version": production.id if production else None, "state": "live"},
            *({"arm": f"arm-{i}", "version": v, "state": "live"} for i, v in enumerate(version_ids, 1)),
        ],
        {},
    )
    exp_id = experiment_id or controller.keyed(
        design,
        traffic,
        lambda key, unit: assign_arm(key, unit, arms),
        {a["arm"]: a["weight"] for a in arms},
    )

    return controller.begin(
        tenant,
        exp_id,
        control=arms[0]["version"],
        candidates=version_ids,
        share=1.0,  # every arm's weight applies; pausing sets 0, which sends everyone to control
        policy=policy,
        design=design,
        now=now,
        actor=actor,
        reason=reason,
        details={"arms": arms},
        arms=arms,
    )


def review(
    tenant: TenantStore, reward_policy: RewardPolicy, *, actor: str = "controller"
) -> Experiment | None:
    """Look at the live experiment once, a canary or a multi-arm one, and act on what its test decides."""
    exp = active_experiment(tenant)
    if exp is None or exp.state != "running" or not exp.arms:
        return controller.review(tenant, reward_policy, actor=actor)
    registry = Registry(tenant)
    erased = {
        a["arm"]: "trained on data of an erased user"
        for a in live_arms(exp.arms)
        if a["arm"] != CONTROL and registry.get(a["version"]).erased_at is not None
    }
    if erased:  # before any statistics: such a version must leave users at once
        stats = {"action": "eliminate", "eliminated": erased, "design": (exp.decision or {}).get("design")}
        return _eliminate(tenant, exp, erased, actor=actor, stats=stats)
    policy = RolloutPolicy.model_validate(exp.policy)
    data = controller.arm_data(tenant, exp, reward_policy, policy.primary_kpi)
    live = live_arms(exp.arms)
    # Users are what is randomised, so the sample-ratio check counts users, as the canary's does.
    step_counts = {a["arm"]: _users_since(data[a["arm"]], exp.step_started_at) for a in live}
    users = [len(set(data[a["arm"]].kpi_units)) for a in live]
    exhausted = None
    if min(users) >= policy.max_samples:
        exhausted = f"inconclusive after {policy.max_samples} users per arm"
    elif policy.out_of_time(exp.started_at, now_utc()):
        exhausted = f"inconclusive after {policy.max_duration_hours} hours"
    verdict = decide_arms(exp.arms, data, policy, step_counts=step_counts, exhausted=exhausted)
    stats = {**verdict, "design": (exp.decision or {}).get("design"), "checked_at": now_utc().isoformat()}
    action, reason = verdict["action"], verdict["reason"]
    if action == "promote":
        winner = exp.version_of(verdict["winner"])
        return controller.finish(tenant, "promoted", actor=actor, reason=reason, stats=stats, winner=winner)
    if action in ("rollback", "halt"):
        outcome = "rolled_back" if action == "rollback" else "halted"
        return controller.finish(tenant, outcome, actor=actor, reason=reason, stats=stats)
    if action == "eliminate":
        return _eliminate(tenant, exp, verdict["eliminated"], actor=actor, stats=stats)
    return controller._update(tenant, exp, actor=actor, action=None, reason=reason, stats=stats)


def _eliminate(
    tenant: TenantStore, exp: Experiment, eliminated: dict[str, str], *, actor: str, stats: dict[str, Any]
) -> Experiment:
    """Drop arms from the trial (their versions → rolled_back) and share the traffic among the rest."""
    arms = reweigh(exp.arms or [], eliminated)
    registry = Registry(tenant)

    def apply(tx: TenantTx) -> None:
        now = now_utc()
        tx.update(
            experiments,
            experiments.c.id == exp.id,
            arms=arms,
            step_started_at=now,  # the sample-ratio check starts over under the new weights
            decision=stats,
            updated_at=now,
        )
        for arm, why in eliminated.items():
            version_id = exp.version_of(arm)
            assert version_id is not None  # only candidates are eliminated, never production
            details = {"experiment": exp.id}
            registry.move(version_id, "rolled_back", actor=actor, reason=why, details=details, tx=tx)
        tx.audit(
            actor=actor,
            action="experiment.eliminate",
            subject=exp.id,
            details={"eliminated": eliminated, "arms": arms, "stats": stats},
        )

    tenant.transaction(apply)
    return get_experiment(tenant, exp.id)


def _users_since(arm: controller.ArmData, since: datetime) -> int:
    return len({u for u, t in zip(arm.units, arm.created, strict=True) if t >= since})
