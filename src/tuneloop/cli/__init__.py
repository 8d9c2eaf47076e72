"""`tuneloop ...`: the command line. Each command group lives in its own module; errors end here."""

from __future__ import annotations

import argparse
import sys

from tuneloop.cli import (
    admin,
    chat,
    demo,
    gate,
    loop,
    outcome,
    privacy,
    rollout,
    serve,
    snapshot,
    train,
    versions,
)
from tuneloop.errors import TuneloopError

GROUPS = (admin, privacy, serve, chat, outcome, snapshot, train, versions, gate, rollout, loop, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneloop", description="Auto-tune a deployed LLM from its users' feedback."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a TuneloopError prints one line to stderr and exits 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except TuneloopError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
