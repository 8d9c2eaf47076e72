"""`tuneloop loop --tenant T`: run a tenant's loop: start turns when due and carry them through."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.config import Settings


def register(commands: Any) -> None:
    p = commands.add_parser("loop", help="run a tenant's loop: snapshot → learn → gate → canary → decide")
    p.add_argument("--tenant", required=True)
    p.add_argument("--once", action="store_true", help="advance once and exit (cron-friendly)")
    p.add_argument("--now", action="store_true", help="start a turn now even if no trigger fired")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between looks (default 30)")
    p.set_defaults(run=cmd_loop)


def cmd_loop(args: argparse.Namespace) -> int:
    from tuneloop.loop import Loop

    store = open_store()
    loop = Loop(store.for_tenant(store.tenant_by_name(args.tenant)), Settings())
    force = args.now
    while True:
        turn = loop.tick(force=force)
        force = False
        if turn is not None:
            detail = turn.outcome or f"waiting at {turn.stage}"
            print(f"turn {turn.turn} ({turn.trigger}): {detail}", file=sys.stderr, flush=True)
        if args.once:
            return 0
        time.sleep(args.interval)
