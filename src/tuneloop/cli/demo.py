"""`tuneloop demo`: the closed loop on the embedded defaults (what `make demo` runs); `tuneloop simulate`:
the demo's simulated users talking to a server of your own, to try the by-hand flow on feedback."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuneloop.cli.chat import add_server_arguments, server_and_key
from tuneloop.cli.output import port
from tuneloop.config import Settings
from tuneloop.errors import BadRequest

# Scenarios whose users need nothing set up on the server first (`rag` needs its documents, `two-tenants`
# two tenants: benchmarks/scenarios.py prepares both).
SIMULATED = ("support", "code-assistant", "policy-tone")


def register(commands: Any) -> None:
    p = commands.add_parser("demo", help="run the closed loop on the support scenario, printing each turn")
    p.add_argument("--turns", type=int, default=2, help="loop turns to run (at least 1)")
    p.add_argument("--port", type=port, default=8765)
    p.add_argument(
        "--home", type=Path, help="working directory (default: TUNELOOP_HOME/demo-run; wiped first)"
    )
    p.set_defaults(run=cmd_demo)

    p = commands.add_parser(
        "simulate", help="simulated users of a built-in scenario talk to a running server and give feedback"
    )
    add_server_arguments(p)
    p.add_argument("--scenario", choices=SIMULATED, default="support", help="whose users (default: support)")
    p.add_argument("--turns", type=int, default=100, help="user turns to send, with their feedback")
    p.add_argument("--users", type=int, default=8, help="users talking at once (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="which users and questions (same seed, same traffic)")
    p.set_defaults(run=cmd_simulate)


def cmd_demo(args: argparse.Namespace) -> int:
    from tuneloop.demo import run_demo

    run_demo(args.home or Settings().home / "demo-run", turns=args.turns, port=args.port)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from tuneloop.sim import SCENARIOS, SimError, run_traffic

    if not 1 <= args.turns <= 100_000 or not 1 <= args.users <= 64:
        raise BadRequest("--turns takes 1 to 100000 and --users 1 to 64")
    url, key = server_and_key(args)
    scenario = SCENARIOS[args.scenario](args.seed)
    print(f"{args.turns} turns of {args.scenario}'s users ({args.users} at once) against {url}", flush=True)
    try:
        report = run_traffic(url, key, scenario, args.turns, args.users, seed=args.seed)
    except SimError as exc:
        raise BadRequest(str(exc)) from None
    print(report.summary())
    return 0
