"""A tenant's loop controller: decide when a turn starts, then run its stages until one has to wait."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

from tuneloop.clock import now_utc
from tuneloop.config import Settings, tenant_policy
from tuneloop.errors import BadRequest
from tuneloop.evaluate.policy import GatePolicy
from tuneloop.loop.light import LightPolicy
from tuneloop.loop.pause import paused
from tuneloop.loop.policy import LoopPolicy
from tuneloop.loop.stages import FIRST, STAGES, Step, TurnContext, end, once_each, watching_trial
from tuneloop.loop.turns import DONE, Turn, advance_turn, list_turns, open_turn, start_turn
from tuneloop.monitor.alerts import latest_check, pending_alerts, resolve_alerts, run_checks
from tuneloop.privacy.retention import apply_retention
from tuneloop.retrieve.policy import RetrievalPolicy
from tuneloop.retrieve.training import retrain_when_due, review_canary
from tuneloop.rollout import arms
from tuneloop.rollout.experiments import LIVE_STATES, Experiment, active_experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import TenantStore

log = logging.getLogger("tuneloop.loop")
ALERT = "alert:"  # the trigger prefix of a turn that alerts started
TURN_POLICIES = (RewardPolicy, LightPolicy, GatePolicy, RolloutPolicy, RetrievalPolicy)


class Loop:
    """One tenant's controller. `tick()` advances the open turn as far as it can without waiting."""

    def __init__(
        self,
        tenant: TenantStore,
        settings: Settings,
        policy: LoopPolicy | None = None,
        guard: Callable[[], bool] | None = None,
        around_stage: Callable[[Turn], AbstractContextManager[Any]] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """`guard` (a worker's lease check) is asked before each stage is recorded; False stops the tick.
        `around_stage(turn)` wraps each stage run (the CLI's stage lines); `say(line)` hears what happens
        inside a long stage (a training's progress, a light trial decided beside it)."""
        self.tenant = tenant
        self.settings = settings
        self.policy = policy or tenant_policy(settings.home, tenant.tenant.name, LoopPolicy)
        self.guard = guard
        self.around_stage = around_stage or (lambda turn: nullcontext())
        self.say = say or (lambda line: None)

    def turns(self) -> list[Turn]:
        return list_turns(self.tenant)

    def open_turn(self) -> Turn | None:
        return open_turn(self.tenant)

    def _new_events(self, turns: list[Turn]) -> int:
        """Feedback events since the last turn started (all of them before the first turn)."""
        return len(self.tenant.feedback(since=turns[-1].started_at if turns else None))

    def trigger(self) -> str | None:
        """Why a new turn should start now, or None."""
        turns = self.turns()
        new_events = self._new_events(turns)
        if new_events >= self.policy.min_new_events:
            return f"feedback:{new_events}"
        if self.policy.on_alerts and new_events and not self._alert_turn_cooling_down(turns):
            alerts = pending_alerts(self.tenant)
            if alerts:
                return f"{ALERT}{alerts[0].kind}"
        ended = turns[-1].ended_at if turns else None
        hours = self.policy.schedule_hours
        if hours and ended and new_events and now_utc() - ended >= timedelta(hours=hours):
            return "schedule"
        return None

    def idle_reason(self) -> str:
        """Why no turn runs now, in one phrase: a live experiment no turn started, or the new feedback against
        the count that starts a turn."""
        if (live := self.experiment_by_hand()) is not None:
            return (
                f"experiment {live.id}, started by hand, is live: each look decides it as the loop's own, "
                "and no turn starts beside it"
            )
        turns = self.turns()
        since = f"since turn {turns[-1].turn} started" if turns else "so far"
        return (
            f"{self._new_events(turns)} new feedback events {since}, and a turn starts at "
            f"{self.policy.min_new_events} (min_new_events)"
        )

    def _alert_turn_cooling_down(self, turns: list[Turn]) -> bool:
        last = next((t for t in reversed(turns) if t.trigger.startswith(ALERT)), None)
        cooldown = timedelta(hours=self.policy.alert_cooldown_hours)
        return last is not None and now_utc() - last.started_at < cooldown

    def start(self, trigger: str) -> Turn:
        """Open a new turn (an open turn is returned instead: one turn at a time per tenant).

        A turn started by alerts takes them up: they are resolved, and reopen if the next check still
        finds the condition."""
        turn = start_turn(self.tenant, trigger, FIRST)
        if trigger.startswith(ALERT) and turn.trigger == trigger:
            taken = [a.id for a in pending_alerts(self.tenant)]
            resolve_alerts(self.tenant, taken, actor="loop", reason=f"turn {turn.turn} started to address it")
        return turn

    def check_policies(self) -> None:
        """Read every policy file a turn's stages read, and the training arguments: a typo is a BadRequest
        naming its file now, not a turn failed twenty minutes in with a reward model already replaced."""
        from tuneloop.learn.job_config import typed_args

        for model in TURN_POLICIES:
            tenant_policy(self.settings.home, self.tenant.tenant.name, model)
        if not (self.policy.trainer_args or self.policy.lora):
            return  # nothing to check, and no reason to import TRL here
        methods = ("dpo", "kto") if self.policy.adapter_method == "auto" else (self.policy.adapter_method,)
        for method in methods:
            try:
                typed_args(method, self.policy.trainer_args, self.policy.lora)
            except BadRequest as exc:
                raise BadRequest(f"{LoopPolicy.filename}: {exc}", param=exc.param) from None

    def check(self) -> None:
        """Run the drift and KPI checks, then the tenant's retention, when the last check is older than
        `check_hours`."""
        last = latest_check(self.tenant)
        if last is None or now_utc() - last["checked_at"] >= timedelta(hours=self.policy.check_hours):
            reward_policy = tenant_policy(self.settings.home, self.tenant.tenant.name, RewardPolicy)
            run_checks(self.tenant, reward_policy, actor="loop")
            apply_retention(self.tenant, self.settings.home, actor="loop")

    def experiment_by_hand(self) -> Experiment | None:
        """The tenant's live experiment when no open turn started it (`tuneloop rollout start`), else None."""
        exp = active_experiment(self.tenant)
        if exp is None or exp.state not in LIVE_STATES:
            return None
        turn = self.open_turn()
        owned = turn is not None and exp.id in (
            turn.report.get("experiment"),
            turn.report.get("light", {}).get("experiment"),
        )
        return None if owned else exp

    def review_experiment_by_hand(self) -> None:
        """Decide a live experiment started by hand as the loop decides its own: nothing else looks at it."""
        if self.experiment_by_hand() is not None:
            reward = tenant_policy(self.settings.home, self.tenant.tenant.name, RewardPolicy)
            arms.review(self.tenant, reward, actor="loop")

    def review_reranker(self) -> None:
        """Promote or roll back the re-ranker on canary once its interleaved test is sure (every tick: it
        reads only the canary's own retrievals)."""
        review_canary(self.tenant, self.settings.home, actor="loop")

    def learn_retrieval(self) -> None:
        """Between turns, train the next re-ranker once `min_new_events` source feedback events came since
        the last: retrieval learns in seconds and need not wait out an adapter's canary."""
        try:
            report = retrain_when_due(
                self.tenant, self.settings.home, self.policy.min_new_events, actor="loop"
            )
        except Exception:  # retrieval is one layer: a failure is logged and retried next tick
            log.exception("re-ranker training failed for tenant %s", self.tenant.tenant.name)
            return
        if report is not None:
            log.info("tenant %s: re-ranker between turns: %s", self.tenant.tenant.name, report)

    def tick(self, *, force: bool = False) -> Turn | None:
        """Run the checks if due, decide the re-ranker's canary if it can, start a turn if one is due (or
        `force`), then run its stages until one has to wait; between turns, train the next re-ranker when
        due. A paused loop does nothing (and says so in the log)."""
        pause = paused(self.tenant)
        if pause is not None:
            log.info("%s", pause.describe(self.tenant.tenant.name))
            return None
        for task, name in (
            (self.check, "drift and KPI checks"),
            (self.review_reranker, "re-ranker canary"),
            (self.review_experiment_by_hand, "experiment started by hand"),
        ):
            try:
                task()
            except Exception:  # a failing check must not stop learning; it is logged and retried next tick
                log.exception("%s failed for tenant %s", name, self.tenant.tenant.name)
        turn = self.open_turn()
        if turn is None:
            if (live := self.experiment_by_hand()) is not None:
                # A turn's candidate could never go on a canary beside it: its training would be thrown away.
                log.info("tenant %s: experiment %s is live; no turn starts", self.tenant.tenant.name, live.id)
                return None
            trigger = self.trigger() or ("manual" if force else None)
            if trigger is None:
                self.learn_retrieval()
                return None
            self.check_policies()
            turn = self.start(trigger)
        context = TurnContext(self.tenant, self.settings, self.policy, once_each(self.say))
        while turn.stage != DONE:
            with self.around_stage(turn), watching_trial(context, turn):
                step = self._run_stage(context, turn)
            if step is None:
                self.learn_retrieval()
                return turn  # waiting (the canary needs more traffic)
            if self.guard is not None and not self.guard():
                name = self.tenant.tenant.name
                log.warning("lost the lease; %s's turn %d stays at %s", name, turn.turn, turn.stage)
                return turn
            turn = advance_turn(self.tenant, turn, step.stage, step.report, step.outcome)
        return turn

    @staticmethod
    def _run_stage(context: TurnContext, turn: Turn) -> Step | None:
        try:
            return STAGES[turn.stage](context, turn)
        except Exception as exc:  # a failed stage ends the turn, recorded, rather than wedging the loop
            return end(
                "failed",
                {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)},
            )
