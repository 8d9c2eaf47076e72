"""Multi-arm experiments: production and several candidates at once, sticky per user, with an always-valid
best-arm procedure (successive elimination) that moves traffic to the better arms and stops when confident.

Assignment is weighted rendezvous hashing over the arms still live: each arm a scores a user
−ln(u_a) / w_a, with u_a = assignment.uniform(f"{experiment_key}:{a}", user) (the first 8 bytes of
SHA-256(f"{experiment_key}:{a}:{user}") mapped into (0, 1)), and the user goes to the lowest score. The
same user always lands on the same arm; dropping an arm moves only its own users, and raising one arm's
weight only moves users into it — as the canary's ramp does.

Each look compares every live candidate with production by the canary's own statistics (sequential.msprt and
the guardrails, per user, CUPED), at α/m for m candidates so that the chance of promoting any candidate that
is not better than production stays ≤ α (a union bound) however often the experiment is looked at:

- a candidate whose sequence lies below −harm_margin, or that breaches a guardrail, is eliminated;
- a candidate surely worse than the leader (the live candidate with the highest mean) is eliminated;
- a candidate whose sequence lies wholly below the design effect τ = √τ² is eliminated as futile: the trial
  was sized to find τ, and waiting to the horizon for an effect the sequence already rules out holds the
  turn's adapter back (a trial of a useless candidate ends about when a good one would have won, not at
  three times that). It promotes nothing, so α is untouched; a candidate as good as τ is dropped with
  chance at most α, one with a smaller real effect may be, and the next turn tries it once more;
- the leader, once surely better than production, is promoted and the rest are rolled back. Waiting until it
  is also surely better than every other live candidate would never end when two candidates help about
  equally (a simulation with lifts of 0.3 and 0.25 promoted in 2 of 40 experiments); the rule's promise is
  that what ships beats production, and a later turn may try a rolled-back candidate again;
- with every candidate eliminated, production stays; at the sample or time limit, the best candidate surely
  better than production is promoted, else production stays.

Eliminated arms get weight 0, so their traffic moves to the arms still in the running. The sample-ratio
check is the canary's χ² over every live arm's users since the last change of weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from scipy.stats import chisquare

from tuneloop.rollout.assignment import uniform
from tuneloop.rollout.guardrails import arm_guardrails
from tuneloop.rollout.sequential import ArmStats, futility, msprt

CONTROL = "control"


def assign_arm(experiment_key: str, user_id: str, arms: Sequence[Mapping[str, Any]]) -> str:
    """The user's arm among those with positive weight (weighted rendezvous hashing)."""
    best, best_score = CONTROL, math.inf
    for arm in arms:
        if arm["weight"] <= 0:
            continue
        score = -math.log(uniform(f"{experiment_key}:{arm['arm']}", user_id)) / arm["weight"]
        if score < best_score:
            best, best_score = arm["arm"], score
    return best


def live_arms(arms: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The arms still in the running, control first."""
    return [dict(a) for a in arms if a["state"] == "live"]


def reweigh(arms: Sequence[Mapping[str, Any]], eliminated: Mapping[str, str]) -> list[dict[str, Any]]:
    """The arms with `eliminated` (arm → reason) out, and equal weights over control and the live rest."""
    out = []
    for arm in arms:
        arm = dict(arm)
        if arm["arm"] in eliminated:
            arm.update(state="eliminated", reason=eliminated[arm["arm"]])
        out.append(arm)
    live = [a for a in out if a["state"] == "live"]
    for arm in out:
        arm["weight"] = 1 / len(live) if arm["state"] == "live" else 0.0
    return out


def sample_ratio_p(counts: Sequence[int], weights: Sequence[float]) -> float:
    """χ² goodness-of-fit p-value of the arms' user counts against their planned weights."""
    total, mass = sum(counts), sum(weights)
    if total == 0 or len(counts) < 2 or mass <= 0:
        return 1.0
    expected = [total * w / mass for w in weights]
    return float(chisquare(list(counts), f_exp=expected).pvalue)


def decide_arms(
    arms: Sequence[Mapping[str, Any]],
    data: Mapping[str, Any],
    policy: Any,
    *,
    step_counts: Mapping[str, int],
    exhausted: str | None = None,
) -> dict[str, Any]:
    """One look: the statistics and the action (halt, promote, eliminate, rollback or continue).

    `data` maps each arm to its observations (controller.ArmData); `step_counts` each live arm's users since
    the weights last changed; `exhausted` says why the experiment must end now (sample or time limit).
    """
    live = live_arms(arms)
    candidates = [a["arm"] for a in live if a["arm"] != CONTROL]
    m = max(len([a for a in arms if a["arm"] != CONTROL]), 1)
    common = {"alpha": policy.alpha / m, "tau2": policy.tau2, "min_samples": policy.min_samples}
    srm = sample_ratio_p([step_counts.get(a["arm"], 0) for a in live], [a["weight"] for a in live])
    stats = {name: _kpi_stats(data[name]) for name in [CONTROL, *candidates]}
    tests = {c: msprt(stats[CONTROL], stats[c], harm_margin=policy.harm_margin, **common) for c in candidates}
    eliminated: dict[str, str] = {}
    for c in candidates:
        guards = arm_guardrails(data[CONTROL], data[c], policy.guardrails, **common)
        breached = [g.name for g in guards if g.breached]
        if breached:
            eliminated[c] = f"guardrail breached: {', '.join(breached)}"
        elif tests[c].decision == "rollback":
            eliminated[c] = tests[c].reason
    leader = max(candidates, key=lambda c: _finite(tests[c].effect), default=None)
    versus_leader = {
        c: msprt(stats[leader], stats[c], **common) for c in candidates if leader and c != leader
    }
    for c, test in versus_leader.items():
        if test.decision == "rollback" and c not in eliminated:
            eliminated[c] = f"surely worse than {leader}: {test.reason}"
    for c in candidates:
        if c not in eliminated and (why := futility(tests[c], policy.tau2)):
            eliminated[c] = why
    better = [c for c in candidates if c not in eliminated and tests[c].decision == "promote"]
    still = [c for c in candidates if c not in eliminated]
    winner = leader if leader in better else None
    look = {
        "alpha_per_arm": common["alpha"],
        "tests": {c: t.as_dict() for c, t in tests.items()},
        "versus_leader": {"leader": leader, **{c: t.as_dict() for c, t in versus_leader.items()}},
        "srm_p": srm,
        "step_counts": dict(step_counts),
    }
    if srm < policy.srm_p:
        return {**look, "action": "halt", "reason": f"sample ratio mismatch across arms: p={srm:.2g}"}
    if winner is not None:
        return {**look, "action": "promote", "winner": winner, "reason": tests[winner].reason}
    if not still:
        return {
            **look,
            "action": "rollback",
            "eliminated": eliminated,
            "reason": "every candidate eliminated",
        }
    if exhausted:
        best = max(better, key=lambda c: tests[c].effect, default=None)
        if best is not None:
            return {**look, "action": "promote", "winner": best, "reason": f"{exhausted}; best of {better}"}
        return {**look, "action": "rollback", "reason": f"{exhausted}: no candidate surely better"}
    if eliminated:
        return {**look, "action": "eliminate", "eliminated": eliminated, "reason": "; ".join(eliminated)}
    return {**look, "action": "continue", "reason": f"undecided among {still}"}


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _kpi_stats(arm: Any) -> ArmStats:
    return ArmStats.of(arm.kpi, arm.kpi_units, arm.kpi_covariate)
