"""Light candidates, tried before any training: versions composed from production that change only its
decoding, in-context examples, system prompt or best-of-N, gated like any candidate and put on one
multi-arm experiment together (rollout.arms). On by default; `enabled: false` in a tenant's
`light_policy.yaml` turns them off.

What a turn composes from production:
- what its feedback calls for, as one candidate (`bundle`): in-context examples (the policy's
  `examples`), when production shows none and the snapshot holds MIN_EXAMPLES answers fit to show, with
  learn.light_changes' proposals (an instruction to keep under the length users point to, a cap that binds,
  a temperature users keep regenerating, fewer of the sources a re-ranker orders); each on its own once
  users turned the bundle down;
- each system prompt an operator listed in `prompt_variants`;
- best-of-N (the policy's `best_of_n`), when production has none and a reward model can judge.

A turn whose feedback calls for none of these skips the stage before it trains a judge or gates anything.
A trial holds no more candidates than the last week's users can give each arm its minimum of users
(rollout.design.trial_candidates), and none starts when they cannot fill two arms: an arm short of users
never decides, and the turn's adapter would wait out the trial's horizon.

The turn trains while the trial runs; once it has decided, the adapter candidate takes production's prompt
and decoding (`carry_light_parts`) before its gate — so an adapter carries the winning light parts on. A
trial still undecided when the adapter is trained and the time its design expected to decide by has passed
is ended (`cut_short`): it could not show the lift it was sized for in that time, and its horizon (three
times as long) would hold the adapter back; its candidates are tried again on a later turn.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from tuneloop.clock import now_utc
from tuneloop.config import Settings, TenantPolicy, tenant_policy
from tuneloop.errors import BadRequest, Conflict
from tuneloop.evaluate.gate import run_gates
from tuneloop.learn.light_changes import Proposal, fewer_sources, propose_changes
from tuneloop.registry.composition import (
    BestOfN,
    Decoding,
    ExamplePolicy,
    compose,
    composed_parts,
    version_decoding,
)
from tuneloop.registry.versions import Registry, Version
from tuneloop.retrieve.policy import retrieval_policy
from tuneloop.retrieve.serving import KIND as RERANKER
from tuneloop.rollout import arms, controller
from tuneloop.rollout.controller import recent_traffic
from tuneloop.rollout.design import LOOKBACK_DAYS, MIN_UNITS, trial_candidates
from tuneloop.rollout.experiments import LIVE_STATES, active_experiment, get_experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.rollout.sequential import FUTILE
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import TenantStore
from tuneloop.store.schema import interactions

ACTOR = "loop"
CUT_SHORT = "undecided by its expected decision time, when the turn's adapter was ready"
# Fewer rated or edited answers rarely include one similar enough to a request to be shown, and a
# candidate that shows no example is production under another name, on a trial users pay for.
MIN_EXAMPLES = 16
ID_BATCH = 500  # interaction ids per query: well inside every engine's limit on bound parameters


class LightPolicy(TenantPolicy):
    """Which light candidates a tenant's turns try before training (those its feedback calls for)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filename: ClassVar[str] = "light_policy.yaml"

    enabled: bool = Field(
        True, description="Each turn first tries light candidates on a multi-arm experiment, then trains."
    )
    prompt_variants: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="System prompts to try, each composed on production's adapter and decoding.",
    )
    examples: ExamplePolicy | None = Field(
        default_factory=ExamplePolicy,
        description="The in-context example policy a candidate tries when production shows none; null: none.",
    )
    best_of_n: BestOfN | None = Field(
        None, description="A best-of-N candidate to try when production has none (needs a reward model)."
    )
    max_candidates: int = Field(3, ge=1, le=6, description="Most light candidates on one experiment.")


@dataclass(frozen=True)
class Feedback:
    """What a turn's light changes are read from: the snapshot's preference pairs and KTO labels on answers
    production wrote (`on_production`), the answers it holds fit to show as examples, and how many sources
    production shows in the order of a re-ranker users' source feedback trained (None: no such order)."""

    pairs: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    rated: int
    ranked_sources: int | None = None


def ranked_sources(tenant: TenantStore, home: Path, production: Version | None) -> int | None:
    """How many retrieved sources `production` shows when the tenant's production re-ranker orders them;
    None when retrieval or re-ranking is off, or no re-ranker is in production."""
    policy = retrieval_policy(home, tenant.tenant.name)
    if not (policy.enabled and policy.rerank) or Registry(tenant).production(RERANKER) is None:
        return None
    return min(policy.k, Decoding.parse(version_decoding(production)).sources or policy.k)


def on_production(tenant: TenantStore, production: Version | None, rows: list[dict]) -> list[dict]:
    """The snapshot `rows` whose every answer `production` served: what users say of the answers it gives
    now. A later turn's snapshot still holds the pairs that asked an older production for what this one
    already carries; read again, they asked it for "under 20 words" where it wrote 24."""
    served = interactions.c.adapter_version
    by_production = served.is_(None) if production is None else served == production.id
    wanted = sorted({iid for row in rows for iid in row.get("interaction_ids", ())})
    ids: set[str] = set()
    for start in range(0, len(wanted), ID_BATCH):
        found = tenant.all(
            interactions,
            by_production,
            interactions.c.id.in_(wanted[start : start + ID_BATCH]),
            columns=(interactions.c.id,),
        )
        ids.update(r.id for r in found)
    return [row for row in rows if row.get("interaction_ids") and ids.issuperset(row["interaction_ids"])]


def start_trial(
    tenant: TenantStore,
    settings: Settings,
    *,
    approval: bool,
    train_judge: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Compose, gate and put on trial the tenant's light candidates; the turn report's `light` entry.

    A trial already live (a restarted turn) is picked up; nothing starts while another experiment runs or
    when candidates must wait for a person's approval, nor when the feedback calls for no candidate. A
    judge is trained on the snapshot first (`train_judge`) unless the sitting one was, as the gate's
    reward-model suite checks its judge on this snapshot's held-out pairs.
    """
    policy = tenant_policy(settings.home, tenant.tenant.name, LightPolicy)
    live = active_experiment(tenant)
    if live is not None and live.arms:
        return {"light": {"experiment": live.id, "picked_up": True}}
    if not policy.enabled or live is not None or approval:
        why = "off" if not policy.enabled else "another experiment is live" if live else "require_approval"
        return {"light": {"skipped": why}}
    rewards = tenant_policy(settings.home, tenant.tenant.name, RewardPolicy)
    try:
        snapshot = create_snapshot(tenant, settings.home, rewards, actor=ACTOR)
    except BadRequest as exc:  # no feedback at all: the snapshot stage ends the turn as skipped
        return {"light": {"skipped": str(exc)}}
    counts = snapshot.counts  # users' rows only, counted before the snapshot's planted canaries
    rated = counts["sft_train"] + counts["sft_heldout"]
    production = Registry(tenant).production("adapter")
    feedback = Feedback(
        on_production(tenant, production, snapshot.rows("pairs")),
        on_production(tenant, production, snapshot.rows("kto")),
        rated,
        ranked_sources(tenant, settings.home, production),
    )
    if not _changes(Registry(tenant), policy, feedback, judged=True):
        why = (
            f"nothing new to try: {counts['pairs_train'] + counts['pairs_heldout']} preference pairs "
            f"({len(feedback.pairs)} on production's answers), {rated} answers fit to show as examples, and "
            "no change users already turned down on this production"
        )
        return {"light": {"snapshot": snapshot.hash, "skipped": why}}
    rollout = tenant_policy(settings.home, tenant.tenant.name, RolloutPolicy)
    users = recent_traffic(tenant, rollout, rewards, now_utc()).users
    if (room := trial_candidates(users)) == 0:
        why = (
            f"{users} users with feedback in the last {LOOKBACK_DAYS:g} days: too few for a trial to give "
            f"production and a candidate {MIN_UNITS} users each"
        )
        return {"light": {"snapshot": snapshot.hash, "skipped": why}}
    judged: dict[str, Any] = {}
    sitting = Registry(tenant).production("reward_model")
    if sitting is None or sitting.snapshot_hash != snapshot.hash:
        # Light candidates come before the turn's training, so the judge that sits was trained on older
        # feedback (or, for a new tenant, none does): the gate checks it on this snapshot's held-out pairs,
        # and one that drifted from them would block every candidate a minute before the reward stage
        # trained a fit one. The reward stage takes this one over.
        try:
            judged = {"reward_model": train_judge(snapshot.hash)}
        except BadRequest as exc:  # too few pairs for a reward model: the gate says what is missing
            judged = {"reward_model": {"skipped": str(exc)}}
    # Each arm must be able to reach its minimum of users, or the trial cannot decide before its horizon.
    fitting = policy.model_copy(update={"max_candidates": min(policy.max_candidates, room)})
    composed = compose_candidates(tenant, settings, snapshot.hash, feedback, fitting)
    versions = [c for c in composed if "version" in c]
    results = run_gates(
        tenant, [c["version"] for c in versions], home=settings.home, actor=ACTOR, engine=settings.engine
    )
    for candidate, result in zip(versions, results, strict=True):
        candidate["decision"] = result.decision
    gated = [c["version"] for c in composed if c.get("decision") == "gated"]
    report: dict[str, Any] = {"snapshot": snapshot.hash, **judged, "candidates": composed}
    if not gated:
        return {"light": {**report, "skipped": "no light candidate passed the gate"}}
    exp = arms.start_arms(
        tenant,
        gated,
        rollout,
        reward_policy=rewards,
        actor=ACTOR,
        reason="a light candidate that passed the gate",
    )
    return {"light": {**report, "experiment": exp.id}}


def trial_outcome(tenant: TenantStore, settings: Settings, experiment_id: str) -> dict[str, Any] | None:
    """Look at the light trial once: None while it runs, else the report's `light_trial` entry."""
    arms.review(tenant, tenant_policy(settings.home, tenant.tenant.name, RewardPolicy), actor=ACTOR)
    return _ended(tenant, experiment_id)


def _ended(tenant: TenantStore, experiment_id: str) -> dict[str, Any] | None:
    """How the light trial ended, as the report's `light_trial` entry; None while it runs."""
    exp = get_experiment(tenant, experiment_id)
    if exp.state in LIVE_STATES:
        return None
    decision = exp.decision or {}
    winner = None
    if exp.state == "promoted":  # by the controller (its decision names the arm) or by hand (it does not)
        arm = decision.get("winner")
        registry = Registry(tenant)
        served = (v for v in exp.candidates if registry.get(v).state in ("production", "retired"))
        winner = exp.version_of(arm) if arm else next(served, None)
    decided = {
        "outcome": exp.state,
        "winner": winner,
        # Ended by hand, the trial keeps its last look's statistics, whose reason said "undecided".
        "reason": decision.get("reason") if decision.get("action") != "continue" else None,
        "ended_at": exp.ended_at.isoformat() if exp.ended_at else None,
    }
    return {"light_trial": decided}


def cut_short(tenant: TenantStore, experiment_id: str) -> dict[str, Any] | None:
    """End the running light trial, undecided, once the time its design expected it to decide by has passed
    (the turn's adapter waits for it): `trial_outcome`'s entry then, None while that time is ahead."""
    exp = get_experiment(tenant, experiment_id)
    due = ((exp.decision or {}).get("design") or {}).get("expected_decision_at")
    if exp.state in LIVE_STATES and due is not None and now_utc() >= datetime.fromisoformat(due):
        last = exp.decision or {}
        said = " ".join(str(last.get("reason") or "").split())
        reason = CUT_SHORT + (f" ({said})" if said else "")
        stats = {**last, "action": "cut_short", "reason": reason}
        with contextlib.suppress(Conflict):  # the controller decided it meanwhile: its decision stands
            controller.finish(tenant, "rolled_back", actor=ACTOR, reason=reason, stats=stats)
    return _ended(tenant, experiment_id)


def trial_words(outcome: dict[str, Any]) -> str:
    """A decided light trial (`trial_outcome`'s entry) in words: "light trial promoted v-…: <reason>"."""
    winner = f" {outcome['winner']}" if outcome.get("winner") else ""
    reason = " ".join(str(outcome.get("reason") or "").split())
    return f"light trial {outcome['outcome']}{winner}" + (f": {reason}" if reason else "")


def _changes(registry: Registry, policy: LightPolicy, feedback: Feedback, *, judged: bool) -> list[Proposal]:
    """Every light change to try on production: what the feedback calls for (examples of what users rated
    best, what its pairs, or with few pairs its labels, ask for, fewer of the sources users' feedback
    ordered) bundled into one, then the operator's prompts and best-of-N (when `judged`, or a reward model
    in production, can pick its answer); none users turned down."""
    production = registry.production("adapter")
    current = Decoding.parse(version_decoding(production))
    learned = []
    if policy.examples is not None and current.examples is None and feedback.rated >= MIN_EXAMPLES:
        learned.append(Proposal("in-context examples", decoding=Decoding(examples=policy.examples)))
    prompt = production.system_prompt if production else None
    learned += propose_changes(feedback.pairs, current, prompt, feedback.labels)
    if (sources := fewer_sources(feedback.ranked_sources)) is not None:
        learned.append(sources)
    variants = enumerate(policy.prompt_variants, 1)
    chosen = [Proposal(f"operator prompt variant {i}", prompt=text) for i, text in variants]
    judged = judged or registry.production("reward_model") is not None
    if policy.best_of_n is not None and current.best_of_n is None and judged:
        chosen.append(Proposal("best-of-N", decoding=Decoding(best_of_n=policy.best_of_n)))
    lost = _turned_down(registry, production.id if production else None)

    def fresh(change: Proposal) -> bool:
        return _parts_key(*composed_parts(production, change.prompt, change.decoding)) not in lost

    together = bundle(learned)
    first = [together] if together is not None and fresh(together) else learned
    return [c for c in first + chosen if fresh(c)]


def bundle(changes: list[Proposal]) -> Proposal | None:
    """The changes the feedback calls for as one candidate, or None for fewer than two (or two prompts).

    Each is read from the same users' feedback, so together they usually help more than the best alone; and
    one arm beside control gets half the users, not a third, at α rather than α/2, so it decides on about
    two thirds of the users three arms need, fewer still as the lifts add up. A bundle users turned down is
    split: the next turn tries its changes on their own arms."""
    prompts = [c.prompt for c in changes if c.prompt is not None]
    if len(changes) < 2 or len(prompts) > 1:
        return None
    decoding: dict[str, Any] = {}
    for change in changes:
        decoding |= change.decoding.values() if change.decoding else {}
    reason = " + ".join(c.reason for c in changes)
    return Proposal(reason, decoding=Decoding.parse(decoding), prompt=prompts[0] if prompts else None)


def _turned_down(registry: Registry, parent: str | None) -> set[tuple[str | None, str]]:
    """The light parts users turned down against production `parent`: each turn would put such a loser on
    a trial again and hold the turn's adapter back until it lost once more. A candidate whose one trial
    ended futile or was cut short (it could not show the lift the trial was sized for, which a small tenant's
    trial often cannot) was not turned down: the next turn tries it once more, on more feedback."""
    rolled_back = [v for v in registry.list("adapter", "rolled_back") if v.parent_id == parent]
    tries = Counter(_light_parts(v) for v in rolled_back)
    history = registry.history() if rolled_back else {}
    lost = set()
    for version in rolled_back:
        why = registry.reason(version.id, "rolled_back", history)
        if not why.startswith((FUTILE, CUT_SHORT)) or tries[_light_parts(version)] > 1:
            lost.add(_light_parts(version))
    return lost


def compose_candidates(
    tenant: TenantStore, settings: Settings, snapshot: str, feedback: Feedback, policy: LightPolicy
) -> list[dict[str, Any]]:
    """Register the light candidates production's `feedback` and the policy call for, not yet gated: each
    one's version and reason, or why it was skipped."""
    registry = Registry(tenant)
    production = registry.production("adapter")
    composed: list[dict[str, Any]] = []
    for change in _changes(registry, policy, feedback, judged=False)[: policy.max_candidates]:
        try:
            version = _compose(registry, production, settings, snapshot, change)
            composed.append({"version": version.id, "reason": change.reason})
        except (BadRequest, Conflict) as exc:  # as production, an invalid prompt, an erased production
            composed.append({"reason": change.reason, "skipped": str(exc)})
    return composed


def _compose(
    registry: Registry, production: Version | None, settings: Settings, snapshot: str, change: Proposal
) -> Version:
    return compose(
        registry,
        parent=production,
        base_model=production.base_model if production else settings.model,
        actor=ACTOR,
        reason=change.reason,
        system_prompt=change.prompt,
        decoding=change.decoding,
        # A version with no adapter of its own is held out on this turn's snapshot, not its parent's.
        snapshot_hash=None if production is not None and production.artifact_path else snapshot,
    )


def carry_light_parts(tenant: TenantStore, candidate_id: str) -> str:
    """The adapter candidate to gate: `candidate_id` itself when it serves with production's prompt and
    decoding, else its composition with them (the candidate, trained while a light trial changed
    production, is set aside as blocked)."""
    registry = Registry(tenant)
    candidate, production = registry.get(candidate_id), registry.production("adapter")
    if production is None or _light_parts(candidate) == _light_parts(production):
        return candidate.id
    # A composition made before a restart is picked up, not made twice.
    children = [v for v in registry.list("adapter") if v.parent_id == candidate.id]
    if children:
        carried = children[-1]
    else:
        try:
            carried = compose(
                registry,
                parent=candidate,
                base_model=candidate.base_model,
                actor=ACTOR,
                reason=f"{candidate.id} with production {production.id}'s prompt and decoding",
                system_prompt=production.system_prompt,
                decoding=Decoding.parse(version_decoding(production)),
            )
        except (BadRequest, Conflict):  # nothing it can take (production serves no prompt): gate it as is
            return candidate.id
    if candidate.state == "candidate":
        # Not a verdict on it: its weights go on in `carried`, which is gated instead.
        why = f"not gated itself: its weights carry production's prompt and decoding as {carried.id}"
        registry.move(candidate.id, "blocked", actor=ACTOR, reason=why)
    return carried.id


def _light_parts(version: Version) -> tuple[str | None, str]:
    return _parts_key(version.system_prompt, version_decoding(version))


def _parts_key(prompt: str | None, decoding: dict[str, Any]) -> tuple[str | None, str]:
    return prompt, json.dumps(decoding, sort_keys=True)  # hashable, so parts can be looked up in a set
