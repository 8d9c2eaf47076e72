"""The canary's design, chosen from the tenant's own traffic before it starts: share, ramp, τ and horizon.

Assignment is sticky per user, so a canary's treatment arm holds `share × users`. A fixed 5% canary never
decides for a tenant with a few hundred users, and a τ sized for a large product's small effects wastes a
small one's users. Every field the tenant's rollout policy sets is kept; the others are chosen here from
traffic before the experiment, so the test's always-valid guarantee holds for the values chosen.

The design effect δ is the smallest effect the users seen recently can reveal on a half-and-half split,
never below the default policy's τ; the share is the smallest that expects a decision at δ within
`TARGET_HOURS` on the users seen. Users arrive as they did in the lookback window and, once its span has
passed, no new ones are counted: a tenant's user base is taken to be what it has shown. A tenant with a
few dozen users also gets a smaller minimum of users per arm (`min_samples`), one its smaller arm can reach.
A multi-arm trial is designed the same way for each candidate's comparison with control, on the users that
comparison sees, and ends at three times its expected time (or sooner, rollout.multi_arm's futility rule):
the turn's adapter waits for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tuneloop.rollout.policy import LATER_STEPS, RolloutPolicy
from tuneloop.rollout.sequential import one_sided_margin

SHARES = (0.05, 0.1, 0.2, 0.3, 0.5)
LOOKBACK_DAYS = 7.0
TARGET_HOURS = 72.0  # a canary should expect to decide within three days
POWER_Z = 0.84  # the test expects to decide at δ with 80 % power
MAX_EFFECT = 0.5  # on a KPI in [-1, 1] a larger design effect would make τ blind to real ones
MIN_USERS = 10  # fewer users with feedback say too little about the KPI's spread to design from
SAMPLES_MARGIN = 3.0  # an undecided canary ends after this many times the expected users and time
MIN_TRIAL_HOURS = 0.25  # a trial expected to decide in minutes still waits for its users to return
# A tenant with a few dozen users cannot give each arm the policy's 30. An experiment's key splits the users
# seen evenly (assignment.balanced_key), but not all of them come back while it runs: the test waits for
# what the smaller arm can be counted on to reach, its share less REACH_SDS binomial standard deviations,
# never fewer than MIN_UNITS, of the users seen in the window's later half (`Traffic.active`: a canary of
# 60 users, 30 of whom came once, waited 30 minutes at +0.54 for 22 users per arm while 14 and 16 came
# back). A trial starts only where every arm holds MIN_UNITS of the users seen. A/A
# canaries of 20-100 heavy-tailed users at 10 per arm still promote under α
# (tests/rollout/test_repeat_users.py), as the variance is the larger arm's.
REACH_SDS = 2.0
MIN_UNITS = 10
BY_HAND = "too few users for the test to decide on its own: `tuneloop rollout promote` or `rollback` decides"


@dataclass(frozen=True)
class Traffic:
    """What recent traffic says about the KPI: users with a KPI value, over how many hours, and its spread;
    those users (`units`), whom the experiment's key splits evenly; and how many of them came back in the
    window's later half (`returning`; None: all are taken to)."""

    users: int
    hours: float
    sd: float  # across users' mean KPI values
    units: tuple[str, ...] = field(default=(), repr=False)
    returning: int | None = None

    def summary(self) -> dict[str, Any]:
        """The figures a design reports (never the users themselves)."""
        return {"users": self.users, "hours": self.hours, "sd": self.sd, "returning": self.returning}

    @property
    def active(self) -> int:
        """The users an experiment starting now can expect back: a user seen once is not counted on."""
        return self.users if self.returning is None else min(self.users, self.returning)


def traffic_of(user_kpis: dict[str, list[float]], hours: float, returning: int | None = None) -> Traffic:
    """Summarise each user's KPI values (observed over `hours`) into what the design needs."""
    units = tuple(user for user, values in user_kpis.items() if values)
    means = [sum(v) / len(v) for v in user_kpis.values() if v]
    if len(means) < 2:
        return Traffic(len(means), hours, 1.0, units, returning)
    centre = sum(means) / len(means)
    sd = math.sqrt(sum((m - centre) ** 2 for m in means) / (len(means) - 1))
    # A KPI that hardly varied in the window still needs a nonzero spread to plan with.
    return Traffic(len(means), hours, max(sd, 0.1), units, returning)


def _variance(sd: float, users: float, share: float) -> float:
    return sd * sd / (users * share * (1 - share))


def _decides(effect: float, variance: float, tau2: float, alpha: float) -> bool:
    return effect >= one_sided_margin(variance, tau2, alpha) + POWER_Z * math.sqrt(variance)


def users_needed(effect: float, sd: float, share: float, tau2: float, alpha: float) -> float:
    """Users (both arms) after which the test expects to decide at `effect` (inf: never), by bisection."""
    low, high = 2.0, 2.0
    while not _decides(effect, _variance(sd, high, share), tau2, alpha):
        low, high = high, high * 2
        if high > 1e9:
            return math.inf
    while high - low > 1:
        mid = (low + high) / 2
        low, high = (low, mid) if _decides(effect, _variance(sd, mid, share), tau2, alpha) else (mid, high)
    return float(math.ceil(high))


def detectable_effect(sd: float, users: int, alpha: float, floor: float) -> float:
    """The smallest effect (≥ floor, ≤ MAX_EFFECT) `users` reveal on a half-and-half split."""
    if users < 2:
        return MAX_EFFECT
    effect = floor
    while effect < MAX_EFFECT and not _decides(effect, _variance(sd, users, 0.5), effect**2, alpha):
        effect = min(MAX_EFFECT, effect * 1.05)
    return effect


def _held(users: float, arms: int) -> int:
    """The users seen whom each of `arms` equal arms holds under the key that splits them most evenly (with
    three or more arms, one may be a user short)."""
    return max(0, math.floor(users / arms + 1e-9) - (arms > 2))


def _reachable(users: float, share: float) -> int:
    """The users an arm holding `share` of `users` can be counted on to reach (not all of them return)."""
    return max(0, math.floor(users * share - REACH_SDS * math.sqrt(users * share * (1 - share))))


def trial_candidates(users: int) -> int:
    """How many candidates a trial beside control can hold so that each arm holds MIN_UNITS of `users`
    (0: too few users for any trial to decide, and one would only hold the turn's adapter back)."""
    candidates = 0
    while _held(users, candidates + 2) >= MIN_UNITS:
        candidates += 1
    return candidates


def design_canary(
    policy: RolloutPolicy, traffic: Traffic, now: datetime, trial_arms: int | None = None
) -> tuple[RolloutPolicy, dict[str, Any]]:
    """The policy the experiment runs under (fields the tenant set are kept) and the design that chose it.

    `trial_arms` (control included) designs a multi-arm trial instead of a canary: it splits users equally
    among its arms and tests each candidate against control at α over the candidates (rollout.multi_arm),
    so one comparison sees 2/arms of the users, half on each side, and it ends at its own horizon."""
    fixed = policy.model_fields_set
    if traffic.users < MIN_USERS:
        users = f"{traffic.users} users with feedback in the last {LOOKBACK_DAYS:g} days"
        note = f"{users}: the policy as set; {BY_HAND}"
        return policy, {"traffic": traffic.summary(), "adapted": [], "note": note}
    trial = trial_arms is not None
    arms = trial_arms or 2
    seen = 2 / arms  # the share of users one candidate-against-control comparison sees
    alpha = policy.alpha / (arms - 1)
    floor = math.sqrt(RolloutPolicy.model_fields["tau2"].default)
    effect = (
        math.sqrt(policy.tau2)
        if "tau2" in fixed
        else detectable_effect(traffic.sd, int(traffic.users * seen), alpha, floor)
    )
    tau2 = effect**2
    if trial:
        share = 0.5  # within one comparison: control and the candidate keep equal weights
    elif fixed & {"ramp", "canary_share"}:
        share = policy.ramp[0]
    else:
        share = SHARES[-1]
        for candidate in SHARES:
            # Its treatment arm must be able to reach the minimum of users at all: a 20 % canary of 60
            # users expects 12 and may stop short of 10 for good.
            fills = _reachable(traffic.users, candidate) >= MIN_UNITS
            need = users_needed(effect, traffic.sd, candidate, tau2, alpha)
            if fills and need <= traffic.users and traffic.hours * need / traffic.users <= TARGET_HOURS:
                share = candidate
                break
    need = users_needed(effect, traffic.sd, share, tau2, alpha) / seen  # all arms' users
    hours = traffic.hours * need / traffic.users if math.isfinite(need) else math.inf
    chosen: dict[str, Any] = {"tau2": round(tau2, 4)}
    if not trial:  # a trial's arms keep equal weights; only a canary ramps
        chosen["ramp"] = [share, *(s for s in LATER_STEPS if s > share)]
    # Of users who each came once, few come back while it runs: an arm counts on those seen lately.
    reachable = _reachable(traffic.active * seen, min(share, 1 - share))
    min_samples = max(MIN_UNITS, min(policy.min_samples, reachable))
    if min_samples < policy.min_samples:
        chosen["min_samples"] = min_samples
    if math.isfinite(need):
        chosen["max_samples"] = max(min_samples, math.ceil(SAMPLES_MARGIN * need * seen * share))
        horizon = round(SAMPLES_MARGIN * hours, 2)
        # A canary keeps the policy's limit as a floor, so a slow afternoon does not cut it short. A trial
        # holds the turn's adapter back: one whose candidates help too little to show ends at its horizon.
        chosen["max_duration_hours"] = (
            max(MIN_TRIAL_HOURS, horizon) if trial else max(policy.max_duration_hours, horizon)
        )
    adapted = {k: v for k, v in chosen.items() if k not in fixed}
    designed = RolloutPolicy.model_validate({**policy.model_dump(exclude_unset=True), **adapted})
    design = {
        "traffic": traffic.summary(),
        "adapted": sorted(adapted),
        "effect": round(effect, 4),
        "users_needed": int(need) if math.isfinite(need) else None,
        "expected_hours": round(hours, 2) if math.isfinite(hours) else None,
        "expected_decision_at": (now + timedelta(hours=hours)).isoformat() if math.isfinite(hours) else None,
        "enough_users": bool(need <= traffic.users),
    }
    # A trial's arms hold their equal shares of the users seen (it starts only where each holds MIN_UNITS).
    if (held := _held(traffic.users, arms) if trial else reachable) < MIN_UNITS:
        design["note"] = f"an arm may reach {held} of the {MIN_UNITS} users the test needs; {BY_HAND}"
    return designed, design
