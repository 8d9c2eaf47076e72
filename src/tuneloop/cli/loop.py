"""`tuneloop loop [run|turns|pause|resume] --tenant T`: run a tenant's loop, list its turns, pause it."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import Progress, add_reason_flag, interval, turn_exit_code
from tuneloop.clock import now_utc
from tuneloop.config import Settings
from tuneloop.store.repository import TenantStore

if TYPE_CHECKING:
    from tuneloop.loop.turns import Turn
    from tuneloop.rollout.experiments import Experiment

ACTIONS = ("run", "turns", "pause", "resume")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "loop",
        help="run a tenant's loop (snapshot → learn → gate → canary → decide), list its turns, pause it",
    )
    # A positional with a default, not subcommands: `tuneloop loop --tenant T` keeps running the loop.
    p.add_argument(
        "action",
        nargs="?",
        choices=ACTIONS,
        default="run",
        help="run (default); turns: each turn's stage, outcome and report as JSON lines; "
        "pause/resume: stop or restart this tenant's loop in every process",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--once", action="store_true", help="run: advance once and exit (cron-friendly)")
    p.add_argument("--now", action="store_true", help="run: start a turn now even if no trigger fired")
    p.add_argument("--interval", type=interval, default=30.0, help="run: seconds between looks (default 30)")
    add_reason_flag(p, None, "pause/resume: why, for the audit log")
    p.set_defaults(run=cmd_loop)


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def cmd_loop(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tuneloop.loop import Loop
    from tuneloop.loop.pause import pause, paused, resume
    from tuneloop.loop.turns import list_turns

    tenant = _tenant(args.tenant)
    if args.action == "turns":
        for each in list_turns(tenant):
            print(json.dumps(asdict(each), default=str))
        return 0
    if args.action == "pause":
        pause(tenant, actor="cli", reason=args.reason or "manual pause")
        print(f"paused {args.tenant}'s loop; its open turn waits where it is")
        return 0
    if args.action == "resume":
        resume(tenant, actor="cli", reason=args.reason or "manual resume")
        print(f"resumed {args.tenant}'s loop")
        return 0
    progress = Progress()

    def stage_lines(turn: Turn) -> AbstractContextManager[None]:
        # A stage that only looks (at a canary, a trial, an approval) would print two lines every interval.
        waits = turn.stage in WAITS_FOR
        return nullcontext() if waits else progress.stage(f"turn {turn.turn}: {turn.stage}")

    loop = Loop(tenant, Settings(), around_stage=stage_lines, say=progress.say)
    force = args.now
    said = Unrepeated()
    while True:
        stopped = paused(tenant)
        if stopped is not None and not args.once:
            print(stopped.describe(args.tenant), file=sys.stderr, flush=True)
        before = loop.open_turn()
        turn = loop.tick(force=force)
        force = False
        if args.once:  # the look's result, so a hand-run or cron'd look always says what it did
            if turn is not None:
                print(tick_summary(turn, started=before is None, live=_live(tenant, turn)))
            elif (stopped := paused(tenant)) is not None:  # asked again: a pause made during the look
                print(f"no turn ran: {stopped.describe(args.tenant)}")
            else:
                hint = "" if loop.experiment_by_hand() else "; `--now` starts one anyway"
                print(f"no turn ran: {loop.idle_reason()}{hint}")
            # 3 when this look ended the turn blocked or rolled back and its light trial shipped nothing
            if turn is None:
                return turn_exit_code(None)
            return turn_exit_code("promoted" if _light_promoted(turn) is not None else turn.outcome)
        if turn is not None:
            said(turn, started=before is None, live=_live(tenant, turn))
        time.sleep(args.interval)


def _live(tenant: TenantStore, turn: Turn) -> Experiment | None:
    """The experiment a turn waits on, if it waits on one."""
    from tuneloop.rollout.experiments import active_experiment

    return active_experiment(tenant) if turn.stage in ("canary", "light_trial") else None


PROGRESS_SECONDS = 300.0  # a waiting experiment's figures are printed again at most this often


class Unrepeated:
    """Prints a look's `tick_summary` to stderr unless it says what the last one printed said, its minutes
    into the turn and whether it started the turn aside: a canary waits for minutes, and every look at it
    said the same thing. A waiting experiment's figures (`experiment_progress`) are printed again when they
    moved, at most every PROGRESS_SECONDS: a canary that runs for an hour otherwise showed one line."""

    def __init__(self) -> None:
        self.last: str | None = None
        self.figures = ""
        self.printed_at = -math.inf

    def __call__(self, turn: Turn, *, started: bool, live: Experiment | None = None) -> None:
        said = tick_summary(turn, started=False, elapsed=False)  # the next look "continued" says the same
        figures, now = experiment_progress(live), time.monotonic()
        if said != self.last or (figures != self.figures and now - self.printed_at >= PROGRESS_SECONDS):
            print(tick_summary(turn, started=started, live=live), file=sys.stderr, flush=True)
            self.last, self.figures, self.printed_at = said, figures, now


def experiment_progress(exp: Experiment | None) -> str:
    """A live experiment at its last look, in a phrase: a canary's users per arm and its estimate with the
    always-valid interval, and when the experiment's design expects to decide."""
    if exp is None:
        return ""
    decision = exp.decision or {}
    test = decision.get("test") or {}
    parts = []
    if not exp.arms and None not in (test.get("effect"), test.get("ci_low"), test.get("ci_high")):
        interval = f"[{test['ci_low']:+.2f}, {test['ci_high']:+.2f}]"
        parts.append(
            f"{exp.treatment_version} on {test.get('users_treatment', 0)} users against "
            f"{test.get('users_control', 0)}: {test['effect']:+.2f} {interval}"
        )
    if expected := (decision.get("design") or {}).get("expected_decision_at"):
        parts.append(f"expected to decide by {datetime.fromisoformat(expected):%H:%M} UTC")
    return "; ".join(parts)


WAITS_FOR = {
    "canary": "more users' feedback",  # users, not requests, are what it counts
    "approval": "a person's decision (`tuneloop versions approve|reject`)",
    "light_trial": "the trial of light candidates to decide",
}


def tick_summary(turn: Turn, *, started: bool, elapsed: bool = True, live: Experiment | None = None) -> str:
    """One line: the turn a look advanced, whether it started it, (with `elapsed`) how many minutes into the
    turn, and the stage it waits at (with the progress of the `live` experiment it waits on) or its
    outcome."""
    from tuneloop.loop.turns import DONE

    head = f"turn {turn.turn} ({turn.trigger}) {'started' if started else 'continued'}"
    # A look that trains runs for many minutes: "started" alone read as if the turn had just begun.
    minutes = int((now_utc() - turn.started_at).total_seconds() // 60)
    if minutes and elapsed:
        head += f" {minutes} min ago" if started else f", {minutes} min in"
    if turn.stage != DONE:
        waits = WAITS_FOR.get(turn.stage)
        progress = experiment_progress(live)
        return (
            f"{head}; waiting at {turn.stage}"
            + (f" for {waits}" if waits else "")
            + (f" ({progress})" if progress else "")
        )
    why = _why(turn)
    # A turn whose adapter was blocked may still have shipped its light candidate: say so on the same line.
    light = _light_promoted(turn)
    shipped = f"; its light trial promoted {light['winner']}" if light is not None else ""
    return f"{head}; ended {turn.outcome}" + (f": {why}" if why else "") + shipped


def _light_promoted(turn: Turn) -> dict[str, Any] | None:
    """The turn's light trial report when the trial promoted a candidate, else None."""
    light = turn.report.get("light_trial") or {}
    return light if light.get("outcome") == "promoted" else None


def _why(turn: Turn) -> str | None:
    """The reason a finished turn's report gives for its outcome, on one line."""
    report = turn.report
    if turn.outcome == "failed":
        why = report.get("error")
    elif turn.outcome == "blocked":
        why = "; ".join(report.get("gate", {}).get("reasons") or []) or None
    else:
        why = report.get("canary", {}).get("reason") or report.get("reason")
    # An error message may span lines: the summary must stay one line for logs and cron mail.
    return " ".join(str(why).split()) if why else None
