"""What each stage of a turn does. A stage reads the turn's report so far, does its work, and returns the
`Step` to take — the next stage and what to add to the report — or None while it has to wait.

Each stage is idempotent, so a turn resumed after a crash repeats at most the stage it was in: snapshots
are content-addressed, training jobs are keyed by their spec, a gated version is not gated twice, and a
live canary is picked up rather than started again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tuneloop.clock import now_utc
from tuneloop.config import Settings, TenantPolicy, tenant_policy
from tuneloop.errors import BadRequest
from tuneloop.evaluate.gate import run_gate
from tuneloop.evaluate.judge import appoint_judge
from tuneloop.evaluate.policy import GatePolicy
from tuneloop.learn.job_config import DEFAULT_LORA
from tuneloop.learn.launchers import JobFailed
from tuneloop.learn.privacy import dp_trainer_args
from tuneloop.learn.runs import train_version
from tuneloop.loop import light as light_candidates
from tuneloop.loop.backoff import adapter_held_back
from tuneloop.loop.policy import LoopPolicy
from tuneloop.loop.turns import DONE, Turn
from tuneloop.registry.versions import Registry, Version
from tuneloop.retrieve.training import retrain as retrain_reranker
from tuneloop.rollout import controller
from tuneloop.rollout.experiments import LIVE_STATES, active_experiment, get_experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot, get_snapshot
from tuneloop.store.repository import TenantStore

# The re-ranker (seconds of training) and light candidates (loop/light.py) need no model training,
# so they go first: rerank → light → snapshot → reward → adapter → light_trial → gate → approval → canary.
# The light trial runs while the adapter trains, and the adapter is gated with whatever light parts won.
FIRST = "rerank"
# The trial's test is always valid, so looking more often costs no error rate, only a read of its rewards;
# looking every minute shipped a winner up to a minute (120 feedback events in the demo) after it had won.
TRIAL_LOOK_SECONDS = 15.0
TRAINING_STAGES = ("snapshot", "reward", "adapter")  # what runs between a light trial's start and its stage
log = logging.getLogger("tuneloop.loop")
P = TypeVar("P", bound=TenantPolicy)
# What a turn keeps of the training metrics in its report.
TRAIN_METRICS = (
    "train_loss",
    "final_loss",
    "first_loss",
    "human_pairs",
    "amplified_pairs",
    "train_runtime",
    "rows",
)


def _silent(line: str) -> None:
    pass


@dataclass(frozen=True)
class TurnContext:
    """What every stage works with: the tenant, the service settings and the tenant's loop policy; `say`
    hears what happens inside a long stage (a training's progress, a trial decided beside it)."""

    tenant: TenantStore
    settings: Settings
    policy: LoopPolicy
    say: Callable[[str], None] = _silent

    def tenant_policy(self, model: type[P]) -> P:
        return tenant_policy(self.settings.home, self.tenant.tenant.name, model)


@dataclass(frozen=True)
class Step:
    """Where a stage sends the turn: `stage` next (DONE ends it with `outcome`), with `report` merged in."""

    stage: str
    report: dict[str, Any]
    outcome: str | None = None


def end(outcome: str, report: dict[str, Any]) -> Step:
    return Step(DONE, report, outcome)


def snapshot(ctx: TurnContext, turn: Turn) -> Step:
    """Freeze the tenant's feedback (the light stage's snapshot, when it took one this turn); too few
    training rows, or an adapter held back after the last showed no lift (loop/backoff.py), end the turn as
    skipped, once its light trial has decided."""
    light_snapshot = turn.report.get("light", {}).get("snapshot")
    rewards = ctx.tenant_policy(RewardPolicy)  # outside the try: a broken policy file fails the turn
    try:
        snap = (
            get_snapshot(ctx.tenant, light_snapshot)
            if light_snapshot
            else create_snapshot(ctx.tenant, ctx.settings.home, rewards, actor="loop")
        )
    except BadRequest as exc:  # no feedback at all
        return _nothing_to_train(turn, {"reason": str(exc)})
    rows = {"dpo": snap.counts["pairs_train"], "kto": snap.counts["kto_train"]}
    allowed = ("dpo", "kto") if ctx.policy.adapter_method == "auto" else (ctx.policy.adapter_method,)
    method = next((m for m in allowed if rows[m] >= ctx.policy.min_rows), None)
    report = {"snapshot": snap.hash, "counts": snap.counts}
    if method is None:
        have = " and ".join(f"{rows[m]} {m.upper()} rows" for m in allowed)
        return _nothing_to_train(turn, {**report, "reason": f"{have} < min_rows {ctx.policy.min_rows}"})
    if held := adapter_held_back(ctx.tenant):
        return _nothing_to_train(turn, {**report, "reason": held})
    return Step("reward", {**report, "method": method})


def _nothing_to_train(turn: Turn, report: dict[str, Any]) -> Step:
    """The turn ends as skipped, once its light trial (if any) has decided."""
    return Step("light_trial", report) if _light_trial(turn) else end("skipped", report)


def reward(ctx: TurnContext, turn: Turn) -> Step:
    """Train a reward model; it becomes the judge when it passes the gate's own judge check. The light stage
    may have trained one on this snapshot already, before gating its candidates. With no
    judge, and a gate that requires one, the turn trains no adapter."""
    judged = turn.report.get("light", {}).get("reward_model")
    if not judged:
        try:
            judged = _train_judge(ctx, turn.report["snapshot"])
        except BadRequest as exc:  # too few pairs for a reward model (labels alone can train a KTO adapter)
            judged = {"skipped": str(exc)}
    elif judged.get("fallback_due"):  # the light stage tried only the fast one, to start its trial sooner
        judged = _fall_back(ctx, turn.report["snapshot"], judged)
    if "skipped" in judged:  # the light stage's try on this snapshot, or this one: whoever sat still judges
        sitting = Registry(ctx.tenant).production("reward_model")
        judged = {**judged, "judge": sitting.id if sitting else None}
    report = {"reward_model": judged}
    rule = ctx.tenant_policy(GatePolicy).suites.reward_model
    if judged["judge"] is None and rule.required and rule.version is None:
        # The gate fails an adapter closed without a judge: training one now would spend minutes of CPU
        # beside users' traffic on a candidate bound to be blocked. The next turn, on more feedback, tries
        # for a judge again.
        why = "no reward model is fit to judge an adapter yet; the next turn trains one on more feedback"
        return _nothing_to_train(turn, {**report, "reason": why})
    return Step("adapter", report)


def _train_judge(ctx: TurnContext, snapshot_hash: str, *, fall_back: bool = True) -> dict[str, Any]:
    """Train a reward model on the snapshot (by DP-SGD under the policy's `reward_dp`) and appoint it judge
    if fit; what was measured and who judges now. With `reward_method: auto`, a fast reward model that is
    unfit while no judge sits is followed by the LoRA one (minutes): without a judge the gate blocks every
    adapter. Without `fall_back` the report says `fallback_due` instead, for `_fall_back` later."""
    method = ctx.policy.reward_method
    appointed = _train_and_appoint(ctx, snapshot_hash, "reward_embedding" if method == "auto" else method)
    # DP-SGD trains the fast reward model only: where the judge must be private there is nothing to fall on.
    capped = ctx.tenant_policy(GatePolicy).suites.judge_privacy.caps_epsilon
    private = ctx.policy.reward_dp is not None or capped
    if method == "auto" and appointed["judge"] is None and not private:
        return _fall_back(ctx, snapshot_hash, appointed) if fall_back else {**appointed, "fallback_due": True}
    return appointed


def _fall_back(ctx: TurnContext, snapshot_hash: str, first: dict[str, Any]) -> dict[str, Any]:
    """Train and measure the LoRA reward model after the fast one (`first`'s report) proved unfit. One that
    cannot train leaves the turn as an unfit one would (the judge is one input of the gate): the turn goes on,
    and its report says why, rather than failing beside a light trial it started."""
    first = {k: v for k, v in first.items() if k != "fallback_due"}
    try:
        return {**_train_and_appoint(ctx, snapshot_hash, "reward"), "first_try": first}
    except (BadRequest, JobFailed) as exc:
        log.warning("tenant %s: the LoRA reward model did not train: %s", ctx.tenant.tenant.name, exc)
        return {**first, "fallback_failed": str(exc)}


def _train_and_appoint(
    ctx: TurnContext, snapshot_hash: str, method: Literal["reward_embedding", "reward"]
) -> dict[str, Any]:
    rm = train_version(
        ctx.tenant,
        ctx.settings,
        snapshot_hash,
        method,
        trainer_args=dp_trainer_args(ctx.policy.reward_dp),
        actor="loop",
    )
    assert rm is not None  # no cancel event was given
    return {**appoint_judge(ctx.tenant, ctx.settings, rm, actor="loop"), "method": method}


def adapter(ctx: TurnContext, turn: Turn) -> Step:
    """Train the candidate adapter, warm-started from production's when the policy allows."""
    production = Registry(ctx.tenant).production("adapter")
    init_adapter = _warm_start_from(ctx.policy, production)
    trainer_args = dict(ctx.policy.trainer_args)
    if init_adapter and ctx.policy.warm_start_learning_rate:
        trainer_args["learning_rate"] = ctx.policy.warm_start_learning_rate
    method = turn.report.get("method", "dpo")  # a turn begun before methods were chosen per snapshot: DPO
    said: set[int] = set()

    def progress(step: int, total: int, eta: float | None) -> None:
        # A quarter at a time: a turn's training beside live traffic runs for many minutes.
        quarter = 4 * step // max(total, 1)
        if quarter not in said:
            said.add(quarter)
            left = f", about {math.ceil(eta / 60)} min left" if eta is not None and step < total else ""
            ctx.say(f"turn {turn.turn}: {method} step {step}/{total}{left}")

    version = train_version(
        ctx.tenant,
        ctx.settings,
        turn.report["snapshot"],
        method,
        trainer_args=trainer_args,
        lora=ctx.policy.lora,
        repeat=ctx.policy.repeat,
        init_adapter=init_adapter,
        amplify_k=ctx.policy.amplify_k,
        actor="loop",
        progress=progress,
        # The candidate serves as production does but for its adapter: the same prompt and decoding.
        system_prompt=production.system_prompt if production else None,
        decoding=production.decoding if production else None,
    )
    assert version is not None  # no cancel event was given
    train = {k: v for k, v in version.metrics.items() if k in TRAIN_METRICS}
    return Step("light_trial", {"candidate": version.id, "train": train})


@contextmanager
def watching_trial(ctx: TurnContext, turn: Turn) -> Iterator[None]:
    """While a stage that trains beside the turn's light trial runs, look at the trial every
    TRIAL_LOOK_SECONDS from a thread, so that a guardrail stops a harmful arm and a winner ships while the
    models train, not after (looks made from training's step reports missed minutes: a job reports no step
    while it loads and computes its reference log-probabilities). `ctx.say` hears the decision then."""
    experiment = _light_trial(turn)
    if turn.stage not in TRAINING_STAGES or experiment is None:
        yield
        return
    stop = threading.Event()

    def look() -> None:
        while not stop.wait(TRIAL_LOOK_SECONDS):
            try:
                outcome = light_candidates.trial_outcome(ctx.tenant, ctx.settings, experiment)
            except Exception:  # the trial is looked at again next time; training must not fail for it
                log.exception("light trial review failed for tenant %s", ctx.tenant.tenant.name)
                continue
            if outcome is not None:
                _tell_trial(ctx, turn, outcome)
                return

    watcher = threading.Thread(target=look, name="tuneloop-trial-look", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _warm_start_from(policy: LoopPolicy, production: Version | None) -> str | None:
    """The production adapter to continue from, if the policy wants that, its LoRA rank matches and it was
    not trained on an erased user (continuing from it would carry what it learned of them on)."""
    if not policy.warm_start or production is None or not production.artifact_path or production.erased_at:
        return None
    rank = {**DEFAULT_LORA, **policy.lora}["r"]
    same_rank = (production.job_spec or {}).get("lora", {}).get("r") == rank
    return production.artifact_path if same_rank else None


def gate(ctx: TurnContext, turn: Turn) -> Step:
    """Run the offline gate; a gated candidate goes on the canary, a blocked one ends the turn."""
    candidate = Registry(ctx.tenant).get(turn.report["candidate"])
    if candidate.state == "candidate":
        result = run_gate(
            ctx.tenant, candidate.id, home=ctx.settings.home, actor="loop", engine=ctx.settings.engine
        )
        decision, reasons, report = result.decision, result.reasons, str(result.report_html)
    else:  # gated (or blocked) before a restart
        decision, reasons, report = candidate.state, [], candidate.gate_report
    verdict = {"gate": {"decision": decision, "reasons": reasons, "report": report}}
    if decision != "gated":
        return end("blocked", verdict)
    if ctx.policy.require_approval:
        return Step("approval", verdict)
    return _to_canary(ctx, candidate.id, verdict)


def _to_canary(ctx: TurnContext, candidate: str, report: dict[str, Any]) -> Step:
    """Put the gated candidate on the canary (or pick up the one already running it)."""
    exp = active_experiment(ctx.tenant)
    if exp is None or exp.treatment_version != candidate:
        exp = controller.start_canary(
            ctx.tenant,
            candidate,
            ctx.tenant_policy(RolloutPolicy),
            reward_policy=ctx.tenant_policy(RewardPolicy),
            actor="loop",
        )
    return Step("canary", {**report, "experiment": exp.id})


def approval(ctx: TurnContext, turn: Turn) -> Step | None:
    """Hold the gated candidate as pending_approval until a named person approves it (it goes on the
    canary) or rejects it (the turn ends rejected); wait meanwhile."""
    registry = Registry(ctx.tenant)
    candidate = registry.get(turn.report["candidate"])
    if "approval" not in turn.report:
        if candidate.state == "gated":
            registry.move(candidate.id, "pending_approval", actor="loop", reason="require_approval")
        return Step("approval", {"approval": {"requested_at": now_utc().isoformat()}})
    if candidate.state == "pending_approval":
        return None
    decision = {"gated": "approved", "blocked": "rejected"}.get(candidate.state, candidate.state)
    decided = {"approval": {**turn.report["approval"], "decision": decision}}
    if decision == "approved":
        return _to_canary(ctx, candidate.id, decided)
    return end(decision, decided)


def canary(ctx: TurnContext, turn: Turn) -> Step | None:
    """Look at the canary once; the turn ends with its outcome, or waits for more traffic."""
    controller.review(ctx.tenant, ctx.tenant_policy(RewardPolicy), actor="loop")
    exp = get_experiment(ctx.tenant, turn.report["experiment"])
    if exp.state in LIVE_STATES:
        return None
    test = (exp.decision or {}).get("test", {})
    return end(
        exp.state,
        {
            "canary": {
                "outcome": exp.state,
                "reason": (exp.decision or {}).get("reason"),
                "effect": test.get("effect"),
                "interval": [test.get("ci_low"), test.get("ci_high")],
                "n": [test.get("n_control"), test.get("n_treatment")],
            }
        },
    )


def rerank(ctx: TurnContext, turn: Turn) -> Step:
    """Retrain the tenant's re-ranker on its source feedback when any came since the last one."""
    try:
        report = retrain_reranker(ctx.tenant, ctx.settings.home, actor="loop")
    except Exception as exc:  # retrieval is one layer: its failure is recorded, the adapter still learns
        log.exception("re-ranker training failed for tenant %s", ctx.tenant.tenant.name)
        report = {"failed": f"{type(exc).__name__}: {exc}"}
    return Step("light", {"reranker": report})


def light(ctx: TurnContext, turn: Turn) -> Step:
    """Compose light candidates from production, gate them, put the gated ones on a multi-arm trial; the
    turn trains meanwhile."""
    report = light_candidates.start_trial(
        ctx.tenant,
        ctx.settings,
        approval=ctx.policy.require_approval,
        # The LoRA fallback, minutes of CPU, waits for the reward stage, which runs beside the trial: a light
        # candidate that keeps production's weights needs no judge to reach its trial.
        train_judge=lambda snapshot_hash: _train_judge(ctx, snapshot_hash, fall_back=False),
    )
    # What the turn tries without training, said when it starts: the trial then runs for minutes.
    started = report["light"]
    if started.get("skipped"):
        ctx.say(f"turn {turn.turn}: no light trial: {started['skipped']}")
    elif not started.get("picked_up"):
        tried = "; ".join(c["reason"] for c in started.get("candidates", []) if "version" in c)
        ctx.say(f"turn {turn.turn}: light trial {started['experiment']} started: {tried}")
    return Step("snapshot", report)


def light_trial(ctx: TurnContext, turn: Turn) -> Step | None:
    """Wait for the turn's light trial to decide, or with the adapter trained, until its expected decision
    time (`light.cut_short`); the adapter candidate then takes production's light parts (a winner's prompt
    and decoding) and goes to the gate. A turn with nothing to train ends here."""
    done: dict[str, Any] = {}
    if (experiment := _light_trial(turn)) is not None:
        outcome = light_candidates.trial_outcome(ctx.tenant, ctx.settings, experiment)
        if outcome is None and "candidate" in turn.report:
            outcome = light_candidates.cut_short(ctx.tenant, experiment)
        if outcome is None:
            return None
        _tell_trial(ctx, turn, outcome)  # unless the watcher told it during training
        done = outcome
    if "candidate" not in turn.report:
        return end("skipped", done)
    candidate = light_candidates.carry_light_parts(ctx.tenant, turn.report["candidate"])
    return Step("gate", {**done, "candidate": candidate})


def _light_trial(turn: Turn) -> str | None:
    return turn.report.get("light", {}).get("experiment")


def _tell_trial(ctx: TurnContext, turn: Turn, outcome: dict[str, Any]) -> None:
    ctx.say(f"turn {turn.turn}: {light_candidates.trial_words(outcome['light_trial'])}")


def once_each(say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` passing each line once: a trial decided beside training is told by the watcher, and the
    light_trial stage after it in the same look finds it decided."""
    told: set[str] = set()

    def tell(line: str) -> None:
        if line not in told:
            told.add(line)
            say(line)

    return tell


STAGES: dict[str, Callable[[TurnContext, Turn], Step | None]] = {
    "rerank": rerank,
    "light": light,
    "light_trial": light_trial,
    "snapshot": snapshot,
    "reward": reward,
    "adapter": adapter,
    "gate": gate,
    "approval": approval,
    "canary": canary,
}
