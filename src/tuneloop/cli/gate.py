"""`tuneloop gate run`: evaluate a candidate against production and record gated or blocked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.config import Settings


def register(commands: Any) -> None:
    group = commands.add_parser("gate", help="offline evaluation of a candidate version against production")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "run", help="run the gate suites; move the version to gated or blocked (exit 0 gated, 1 blocked)"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--version", required=True, help="id of the candidate adapter version")
    p.add_argument("--policy", type=Path, help="gate policy YAML (default: the tenant's, else the defaults)")
    p.add_argument(
        "--dry-run", action="store_true", help="write the report but leave the version's state unchanged"
    )
    p.set_defaults(run=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from tuneloop.config import tenant_policy
    from tuneloop.evaluate.gate import run_gate
    from tuneloop.evaluate.policy import GatePolicy

    home = Settings().home
    store = open_store()
    tenant = store.for_tenant(store.tenant_by_name(args.tenant))
    result = run_gate(
        tenant,
        args.version,
        home=home,
        policy=tenant_policy(home, args.tenant, GatePolicy, args.policy),
        actor="cli",
        record=not args.dry_run,
    )
    for suite in result.suites:
        flag = "" if suite.required else " (not required)"
        print(f"{suite.name:18} {suite.status:5}{flag}  {suite.reason}", file=sys.stderr)
    print(f"report: {result.report_html}", file=sys.stderr)
    print(f"{result.version_id} {result.decision}" + (" (dry run, state unchanged)" if args.dry_run else ""))
    return 0 if result.passed else 1
