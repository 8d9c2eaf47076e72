"""`tuneloop worker`: a loop worker that advances whichever tenants' turns it can lease (loop/worker.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Any

from tuneloop.cli.output import interval
from tuneloop.errors import BadRequest


def register(commands: Any) -> None:
    p = commands.add_parser(
        "worker",
        help="run a loop worker: lease tenants' loops from the store and advance their turns (run several)",
    )
    p.add_argument("--name", help="this worker's name in the leases (default host:pid; unique per worker)")
    p.add_argument("--interval", type=interval, default=30.0, help="seconds between passes over the tenants")
    p.add_argument("--once", action="store_true", help="one pass over the tenants, then exit (cron-friendly)")
    p.set_defaults(run=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from tuneloop.cli.admin import open_store
    from tuneloop.config import Settings
    from tuneloop.loop.worker import Worker

    if args.name is not None and not 0 < len(args.name) <= 200:
        raise BadRequest("--name: give 1-200 characters")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a dozen plugin lines on every start otherwise
    # A service, like `serve`: started beside the server, it may be the first to open a new store.
    worker = Worker(open_store(create=True), Settings(), args.name)
    print(f"worker {worker.name}: looking at the tenants' loops", file=sys.stderr, flush=True)
    if args.once:
        worker.run_once()
    else:
        worker.run(threading.Event(), args.interval)
    return 0
