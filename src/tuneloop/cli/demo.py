"""`tuneloop demo`: the closed loop on the embedded defaults (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuneloop.cli.output import port
from tuneloop.config import Settings


def register(commands: Any) -> None:
    p = commands.add_parser("demo", help="run the closed loop on the support scenario, printing each turn")
    p.add_argument("--turns", type=int, default=2, help="loop turns to run (at least 1)")
    p.add_argument("--port", type=port, default=8765)
    p.add_argument(
        "--home", type=Path, help="working directory (default: TUNELOOP_HOME/demo-run; wiped first)"
    )
    p.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from tuneloop.demo import run_demo

    run_demo(args.home or Settings().home / "demo-run", turns=args.turns, port=args.port)
    return 0
