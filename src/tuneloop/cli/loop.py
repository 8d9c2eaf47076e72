"""`tuneloop loop [run|turns|pause|resume] --tenant T`: run a tenant's loop, list its turns, pause it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import add_reason_flag, turn_exit_code
from tuneloop.config import Settings
from tuneloop.errors import BadRequest
from tuneloop.store.repository import TenantStore

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
    p.add_argument("--interval", type=float, default=30.0, help="run: seconds between looks (default 30)")
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

    if args.interval <= 0:
        raise BadRequest(f"--interval {args.interval}: give a positive number of seconds")
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
    loop = Loop(tenant, Settings())
    force = args.now
    while True:
        stopped = paused(tenant)
        if stopped is not None:
            print(stopped.describe(args.tenant), file=sys.stderr, flush=True)
        turn = loop.tick(force=force)
        force = False
        if turn is not None:
            detail = turn.outcome or f"waiting at {turn.stage}"
            print(f"turn {turn.turn} ({turn.trigger}): {detail}", file=sys.stderr, flush=True)
        if args.once:  # 3 when this look ended the turn blocked or rolled back, for cron's mail
            return turn_exit_code(turn.outcome if turn is not None else None)
        time.sleep(args.interval)
