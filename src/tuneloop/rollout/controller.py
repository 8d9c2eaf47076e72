"""The canary controller: start an experiment, judge it after every batch of events, promote or roll back.

All state lives in the `experiments` table and every transition is one transaction that moves the
version, updates the experiment and appends the audit row with the statistics that justified it, so a
restarted process carries on where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tuneloop.clock import now_utc
from tuneloop.errors import Conflict, NotFound
from tuneloop.monitor.kpis import errors, escalations, group_events, safety_flagged
from tuneloop.registry.versions import Registry, State, check_approver
from tuneloop.rollout.assignment import assign, balanced_key
from tuneloop.rollout.design import LOOKBACK_DAYS, Traffic, design_canary, traffic_of
from tuneloop.rollout.experiments import Experiment, active_experiment, get_experiment
from tuneloop.rollout.guardrails import arm_guardrails, sample_ratio_check
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.rollout.sequential import ArmStats, futility, msprt
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.rewards import compute_rewards
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import experiments

ARMS = ("control", "treatment")
AWAIT_APPROVAL = "await_approval"  # a look's action when the canary won but `approve_promotion` holds it


@dataclass
class ArmData:
    """What one arm's traffic showed: KPI values of rewarded answers and 0/1 guardrail indicators."""

    kpi: list[float] = field(default_factory=list)
    kpi_units: list[str] = field(default_factory=list)  # the unit of each KPI value
    # Each KPI value's covariate: its user's pre-experiment mean KPI less the pooled one (0 without history).
    kpi_covariate: list[float] = field(default_factory=list)
    escalated: list[float] = field(default_factory=list)
    unsafe: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    created: list[datetime] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # each answer's randomisation unit: user, else request


def start_canary(
    tenant: TenantStore,
    version_id: str,
    policy: RolloutPolicy,
    *,
    reward_policy: RewardPolicy,
    actor: str,
    reason: str = "passed the gate",
    experiment_id: str | None = None,
) -> Experiment:
    """Put a gated version on the canary against the current production (or the base model), under the
    policy's fields as set and the rest designed from the tenant's recent traffic (rollout.design)."""
    registry = Registry(tenant)
    version = registry.get(version_id)
    if version.state != "gated":
        raise Conflict(f"version {version_id} is {version.state}; only gated versions can be canaried")
    production = registry.production("adapter")
    now = now_utc()
    policy, design, traffic = designed(tenant, policy, reward_policy, now)
    share = policy.ramp[0]
    # The id is the assignment hash key: a fixed one replays the same split (tests, re-runs).
    exp_id = experiment_id or keyed(
        design,
        traffic,
        lambda key, unit: assign(key, unit, share),
        {"treatment": share, "control": 1 - share},
    )

    control = production.id if production else None
    return begin(
        tenant,
        exp_id,
        control=control,
        candidates=[version_id],
        share=share,
        policy=policy,
        design=design,
        now=now,
        actor=actor,
        reason=reason,
        details={"treatment": version_id, "control": control, "share": share},
    )


def begin(
    tenant: TenantStore,
    exp_id: str,
    *,
    control: str | None,
    candidates: list[str],
    share: float,
    policy: RolloutPolicy,
    design: dict[str, Any],
    now: datetime,
    actor: str,
    reason: str,
    details: dict[str, Any],
    arms: list[dict[str, Any]] | None = None,
) -> Experiment:
    """Record a running experiment of `candidates` against `control` and move them to canary, in one
    transaction; Conflict when the tenant already has a live experiment."""
    registry = Registry(tenant)

    def apply(tx: TenantTx) -> None:
        tx.serialize()  # two starts at once: the second sees the first's experiment
        if active_experiment(tx) is not None:
            raise Conflict(
                "this tenant already has a live experiment; finish it first (`tuneloop rollout status`)"
            )
        tx.insert(
            experiments,
            id=exp_id,
            control_version=control,
            treatment_version=candidates[0],
            state="running",
            share=share,
            step=0,
            step_started_at=now,
            policy=policy.model_dump(mode="json"),
            decision={"design": design},
            started_at=now,
            updated_at=now,
            arms=arms,
        )
        for version_id in candidates:
            registry.move(
                version_id, "canary", actor=actor, reason=reason, details={"experiment": exp_id}, tx=tx
            )
        tx.audit(
            actor=actor, action="experiment.start", subject=exp_id, details={**details, "design": design}
        )

    tenant.transaction(apply)
    return get_experiment(tenant, exp_id)


def designed(
    tenant: TenantStore,
    policy: RolloutPolicy,
    reward_policy: RewardPolicy,
    now: datetime,
    trial_arms: int | None = None,
) -> tuple[RolloutPolicy, dict[str, Any], Traffic]:
    """The policy a canary (or a trial of `trial_arms` arms, control included) starting `now` runs under,
    designed from the last week's traffic, and that traffic."""
    traffic = recent_traffic(tenant, policy, reward_policy, now)
    return (*design_canary(policy, traffic, now, trial_arms), traffic)


def keyed(
    design: dict[str, Any],
    traffic: Traffic,
    arm_of: Callable[[str, str], str],
    shares: dict[str, float],
) -> str:
    """A new experiment's id, chosen so that the users seen lately fill its arms as planned; the design
    records how many the smallest arm holds."""
    key, smallest = balanced_key(traffic.units, arm_of, shares)
    design["recent_users_in_smallest_arm"] = smallest
    return key


def recent_traffic(
    tenant: TenantStore, policy: RolloutPolicy, reward_policy: RewardPolicy, now: datetime
) -> Traffic:
    """The last week's users with a KPI value, their span and spread, and how many came in its later half
    (rollout/design.py)."""
    since = now - timedelta(days=LOOKBACK_DAYS)
    by_user, first_seen, latest = user_kpis(
        tenant, reward_policy, policy.primary_kpi, since, now, anonymous=True
    )
    if first_seen is None:
        return traffic_of(by_user, LOOKBACK_DAYS * 24)
    hours = max((now - first_seen).total_seconds() / 3600, 1 / 60)
    later = now - (now - first_seen) / 2
    return traffic_of(by_user, hours, sum(1 for at in latest.values() if at >= later))


def _kpi(reward: float, primary_kpi: str) -> float:
    return reward if primary_kpi == "mean_reward" else float(reward > 0)


def user_kpis(
    tenant: TenantStore,
    reward_policy: RewardPolicy,
    primary_kpi: str,
    since: datetime,
    until: datetime,
    *,
    anonymous: bool,
) -> tuple[dict[str, list[float]], datetime | None, dict[str, datetime]]:
    """Each user's KPI values from answers and evidence between `since` and `until`, the first such
    answer's time (None without any) and each user's latest. With `anonymous`, an answer to no named user is
    a unit of its own, as the experiment's analysis counts it; without, it is left out."""
    rows = [
        r for r in tenant.interactions(since=since) if r["created_at"] < until and (anonymous or r["user"])
    ]
    ids = {r["id"] for r in rows}
    events = [
        e for e in tenant.feedback(since=since) if e["interaction_id"] in ids and e["received_at"] < until
    ]
    if not events:
        return {}, None, {}
    rewards = compute_rewards(rows, events, reward_policy, until)
    by_user: dict[str, list[float]] = {}
    latest: dict[str, datetime] = {}
    first = None
    for row in rows:
        if row["id"] in rewards:
            unit = row["user"] or row["id"]
            by_user.setdefault(unit, []).append(_kpi(rewards[row["id"]].reward, primary_kpi))
            first = first or row["created_at"]
            latest[unit] = max(latest.get(unit, row["created_at"]), row["created_at"])
    return by_user, first, latest


def pre_period_kpi(
    tenant: TenantStore, exp: Experiment, reward_policy: RewardPolicy, primary_kpi: str, days: float
) -> tuple[dict[str, float], float]:
    """Each user's mean KPI over the `days` before the experiment, and the mean over all those answers.

    Only evidence received before the start counts, so no covariate can reflect the treatment.
    """
    since = exp.started_at - timedelta(days=days)
    by_user, _, _ = user_kpis(tenant, reward_policy, primary_kpi, since, exp.started_at, anonymous=False)
    values = [v for user_values in by_user.values() for v in user_values]
    pooled = sum(values) / len(values) if values else 0.0
    return {user: sum(v) / len(v) for user, v in by_user.items()}, pooled


def arm_data(
    tenant: TenantStore, exp: Experiment, reward_policy: RewardPolicy, primary_kpi: str
) -> dict[str, ArmData]:
    """Each arm's observations: KPI values with their users' covariates, and guardrail indicators."""
    rows = tenant.interactions(experiment_id=exp.id)
    ids = {r["id"] for r in rows}
    events = [e for e in tenant.feedback(since=exp.started_at) if e["interaction_id"] in ids]
    now = max([now_utc(), *(e["created_at"] for e in events)])
    rewards = compute_rewards(rows, events, reward_policy, now) if events else {}
    # The dashboard's KPI definitions, so a guardrail and the chart it is read against count the same things.
    by_interaction = group_events(events)
    flags = zip(escalations(rows, by_interaction), errors(rows), strict=True)
    lookback = RolloutPolicy.model_validate(exp.policy).cuped_lookback_days
    history, pooled = (
        pre_period_kpi(tenant, exp, reward_policy, primary_kpi, lookback)
        if lookback and rewards
        else ({}, 0.0)
    )
    data = {arm: ArmData() for arm in ([a["arm"] for a in exp.arms] if exp.arms else ARMS)}
    for row, (escalated, failed) in zip(rows, flags, strict=True):
        arm = data.get(row["arm"] or "")
        if arm is None:
            continue
        unit = row["user"] or row["id"]
        if row["id"] in rewards:
            arm.kpi.append(_kpi(rewards[row["id"]].reward, primary_kpi))
            arm.kpi_units.append(unit)
            arm.kpi_covariate.append(history[row["user"]] - pooled if row["user"] in history else 0.0)
        arm.escalated.append(float(escalated))
        arm.unsafe.append(float(safety_flagged(row, by_interaction.get(row["id"], ()))))
        arm.errors.append(float(failed))
        arm.latency.append(row["latency_ms"] or 0.0)
        arm.created.append(row["created_at"])
        arm.units.append(unit)
    return data


def decide(exp: Experiment, data: dict[str, ArmData], policy: RolloutPolicy) -> dict[str, Any]:
    """The statistics of one look and what they call for: promote, rollback, halt, ramp or continue."""
    control, treatment = data["control"], data["treatment"]
    # Users are what is randomised, so the sample-ratio check counts users, not their (clustered) requests.
    step_counts = [
        len({u for u, t in zip(arm.units, arm.created, strict=True) if t >= exp.step_started_at})
        for arm in (control, treatment)
    ]
    srm = sample_ratio_check(step_counts[0], step_counts[1], exp.share, threshold=policy.srm_p)
    previous_p = (exp.decision or {}).get("test", {}).get("p_value") or 1.0
    common = {"alpha": policy.alpha, "tau2": policy.tau2, "min_samples": policy.min_samples}
    # Statistics per user, the unit that was randomised; a user moved to treatment by a ramp counts in
    # both arms, which only adds positive covariance between them and so widens the sequence.
    test = msprt(
        ArmStats.of(control.kpi, control.kpi_units, control.kpi_covariate),
        ArmStats.of(treatment.kpi, treatment.kpi_units, treatment.kpi_covariate),
        harm_margin=policy.harm_margin,
        previous_p=previous_p,
        **common,
    )
    guards = arm_guardrails(control, treatment, policy.guardrails, **common)
    result = test.as_dict()
    stats = {
        "metric": policy.primary_kpi,
        "interval": [result["ci_low"], result["ci_high"]],
        "test": result,
        "guardrails": {g.name: g.as_dict() for g in guards},
        "srm_p": srm.p_value,
        "step_counts": step_counts,
        "share": exp.share,
        "checked_at": now_utc().isoformat(),
        "design": (exp.decision or {}).get("design"),
    }
    breached = [g.name for g in guards if g.breached]
    if srm.halt:
        action, reason = "halt", srm.reason
    elif breached:
        action, reason = "rollback", f"guardrail breached: {', '.join(breached)}"
    elif test.decision in ("promote", "rollback"):
        action, reason = test.decision, test.reason
    elif why := futility(test, policy.tau2):
        action, reason = "rollback", why
    elif min(test.users_control, test.users_treatment) >= policy.max_samples:
        action, reason = (
            "rollback",
            f"inconclusive after {policy.max_samples} users per arm: {test.reason}",
        )
    elif policy.out_of_time(exp.started_at, now_utc()):
        action, reason = "rollback", f"inconclusive after {policy.max_duration_hours} hours: {test.reason}"
    elif exp.step + 1 < len(policy.ramp) and min(step_counts) >= policy.min_samples_per_step:
        action, reason = "ramp", f"step {exp.step} healthy with {min(step_counts)} users per arm"
    else:
        action, reason = "continue", test.reason
    return {**stats, "action": action, "reason": reason}


def review(
    tenant: TenantStore, reward_policy: RewardPolicy, *, actor: str = "controller"
) -> Experiment | None:
    """Look at the live experiment once and act on it; returns the experiment as it stands afterwards."""
    exp = active_experiment(tenant)
    if exp is None or exp.state != "running" or exp.arms:  # a multi-arm one is rollout.arms.review's
        return exp
    policy = RolloutPolicy.model_validate(exp.policy)
    verdict = decide(exp, arm_data(tenant, exp, reward_policy, policy.primary_kpi), policy)
    action = verdict["action"]
    if action == "promote" and policy.approve_promotion:
        reason = f"{verdict['reason']}; waits for a named approver to promote it"
        stats = {**verdict, "action": AWAIT_APPROVAL, "reason": reason}
        audit = None if _awaits_approval(exp) else "experiment.awaiting_approval"
        return _update(tenant, exp, actor=actor, action=audit, reason=reason, stats=stats)
    if action == "promote":
        return finish(tenant, "promoted", actor=actor, reason=verdict["reason"], stats=verdict)
    if action in ("rollback", "halt"):
        return finish(
            tenant,
            "rolled_back" if action == "rollback" else "halted",
            actor=actor,
            reason=verdict["reason"],
            stats=verdict,
        )
    if action == "ramp":
        share = policy.ramp[exp.step + 1]
        return _update(
            tenant,
            exp,
            actor=actor,
            action="experiment.ramp",
            reason=verdict["reason"],
            stats=verdict,
            share=share,
            step=exp.step + 1,
            step_started_at=now_utc(),
        )
    return _update(tenant, exp, actor=actor, action=None, reason=verdict["reason"], stats=verdict)


def finish(
    tenant: TenantStore,
    outcome: str,
    *,
    actor: str,
    reason: str,
    stats: dict | None = None,
    winner: str | None = None,
) -> Experiment:
    """End the live experiment: promoted (the winner — by default the treatment, or a multi-arm experiment's
    leading arm — → production; any other candidate → rolled_back) or rolled_back/halted (every candidate
    → rolled_back)."""
    exp = _live(tenant)
    # Ended by hand: the last look's statistics stay the experiment's (Progress showed "not measured yet").
    stats = stats if stats is not None else exp.decision
    if outcome == "promoted" and winner is None and exp.arms:  # by hand: the arm leading at the last look
        leader = ((exp.decision or {}).get("versus_leader") or {}).get("leader")
        if leader is None:
            raise Conflict("no look has ranked the arms yet; promote after the controller's first look")
        winner = exp.version_of(leader)
    winner = (winner or exp.treatment_version) if outcome == "promoted" else None
    registry = Registry(tenant)

    def apply(tx: TenantTx) -> None:
        tx.serialize()
        ended = active_experiment(tx)
        if ended is None or ended.id != exp.id:  # the controller and an operator ended it at once
            raise Conflict(f"experiment {exp.id} has ended meanwhile; see `tuneloop rollout status`")
        now = now_utc()
        tx.update(
            experiments,
            experiments.c.id == exp.id,
            state=outcome,
            share=1.0 if outcome == "promoted" else 0.0,
            decision=stats,
            updated_at=now,
            ended_at=now,
        )
        # A trial's candidate goes with its own arm's elimination reason if any (loop.light reads it).
        own = {exp.version_of(arm): why for arm, why in (stats or {}).get("eliminated", {}).items()}
        for version_id in exp.candidates:
            to: State = "production" if version_id == winner else "rolled_back"
            why = own.get(version_id, reason)
            registry.move(version_id, to, actor=actor, reason=why, details={"experiment": exp.id}, tx=tx)
        tx.audit(
            actor=actor,
            action=f"experiment.{outcome}",
            subject=exp.id,
            details={"reason": reason, "stats": stats},
        )

    tenant.transaction(apply)
    return get_experiment(tenant, exp.id)


def approve(tenant: TenantStore, version_id: str, *, by: str, reason: str, via: str) -> State:
    """A named approver lets a version go on: one pending approval to the canary, or a winning canary
    that waits for them to production. Returns the version's state afterwards."""
    return _decide(tenant, version_id, approve=True, by=by, reason=reason, via=via)


def reject(tenant: TenantStore, version_id: str, *, by: str, reason: str, via: str) -> State:
    """A named approver turns a version down: one pending approval is blocked, a canary rolled back."""
    return _decide(tenant, version_id, approve=False, by=by, reason=reason, via=via)


def waiting_for_approval(tenant: TenantStore) -> Experiment | None:
    """The live canary that won and waits for a named approver (`approve_promotion`), if there is one."""
    exp = active_experiment(tenant)
    return exp if exp is not None and _awaits_approval(exp) else None


def _awaits_approval(exp: Experiment) -> bool:
    return (exp.decision or {}).get("action") == AWAIT_APPROVAL


def _decide(tenant: TenantStore, version_id: str, *, approve: bool, by: str, reason: str, via: str) -> State:
    registry = Registry(tenant)
    exp = waiting_for_approval(tenant)
    if exp is None or exp.treatment_version != version_id:
        decide = registry.approve if approve else registry.reject
        return decide(version_id, by=by, reason=reason, via=via).state
    check_approver(by)
    stats = {**(exp.decision or {}), "approver": by, "via": via}
    finish(tenant, "promoted" if approve else "rolled_back", actor=by, reason=reason, stats=stats)
    return registry.get(version_id).state


def pause(tenant: TenantStore, *, actor: str, reason: str) -> Experiment:
    """Send all traffic back to control at once, keeping the experiment to resume later."""
    exp = _live(tenant)
    return _update(
        tenant, exp, actor=actor, action="experiment.pause", reason=reason, state="paused", share=0.0
    )


def resume(tenant: TenantStore, *, actor: str, reason: str) -> Experiment:
    exp = _live(tenant)
    policy = RolloutPolicy.model_validate(exp.policy)
    return _update(
        tenant,
        exp,
        actor=actor,
        action="experiment.resume",
        reason=reason,
        state="running",
        share=policy.ramp[exp.step],
        step_started_at=now_utc(),
    )


def _update(
    tenant: TenantStore,
    exp: Experiment,
    *,
    actor: str,
    action: str | None,
    reason: str,
    stats: dict | None = None,
    **values: Any,
) -> Experiment:
    def apply(tx: TenantTx) -> None:
        tx.update(
            experiments,
            experiments.c.id == exp.id,
            updated_at=now_utc(),
            **({"decision": stats} if stats else {}),
            **values,
        )
        if action:  # routine looks are kept on the row; only changes of course go to the audit log
            tx.audit(
                actor=actor,
                action=action,
                subject=exp.id,
                details={"reason": reason, "stats": stats, **{k: str(v) for k, v in values.items()}},
            )

    tenant.transaction(apply)
    return get_experiment(tenant, exp.id)


def _live(tenant: TenantStore) -> Experiment:
    exp = active_experiment(tenant)
    if exp is None:
        raise NotFound(f"tenant {tenant.tenant.name} has no live experiment")
    return exp
