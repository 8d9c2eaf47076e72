"""`tuneloop gate run`: evaluate a candidate against production and record gated or blocked."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import EXIT_BLOCKED, EXIT_OK, Progress, add_json_flag, emit
from tuneloop.config import Settings


def register(commands: Any) -> None:
    group = commands.add_parser("gate", help="offline evaluation of a candidate version against production")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "run", help="run the gate suites; move the version to gated or blocked (exit 0 gated, 3 blocked)"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--version", required=True, help="id of the candidate adapter version")
    p.add_argument("--policy", type=Path, help="gate policy YAML (default: the tenant's, else the defaults)")
    p.add_argument(
        "--dry-run", action="store_true", help="write the report but leave the version's state unchanged"
    )
    add_json_flag(p)
    p.set_defaults(run=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from tuneloop.config import tenant_policy
    from tuneloop.evaluate.gate import run_gate
    from tuneloop.evaluate.policy import GatePolicy

    settings = Settings()
    home = settings.home
    store = open_store()
    tenant = store.for_tenant(store.tenant_by_name(args.tenant))
    policy = tenant_policy(home, args.tenant, GatePolicy, args.policy)
    progress = Progress.of(args)
    with progress.stage(f"gate suites on {args.version}"):
        result = run_gate(
            tenant,
            args.version,
            home=home,
            policy=policy,
            actor="cli",
            record=not args.dry_run,
            engine=settings.engine,
        )
    for suite in result.suites:
        flag = "" if suite.required else " (not required)"
        progress.say(f"{suite.name:18} {suite.status:5}{flag}  {suite.reason}")
    progress.say(f"report: {result.report_html}")
    dry = " (dry run, state unchanged)" if args.dry_run else ""
    summary = {
        "version": result.version_id,
        "decision": result.decision,
        "dry_run": args.dry_run,
        "reasons": result.reasons,
        "suites": [
            {"name": s.name, "required": s.required, "status": s.status, "reason": s.reason}
            for s in result.suites
        ],
        "report_json": result.report_json,
        "report_html": result.report_html,
    }
    emit(args, summary, lambda: [f"{result.version_id} {result.decision}{dry}"])
    return EXIT_OK if result.passed else EXIT_BLOCKED
