"""`tuneloop outcome`: turn a CI's test report (JUnit XML) or a linter's findings (SARIF) into outcome
events on the interaction whose code was applied, through the one capture path."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    p = commands.add_parser(
        "outcome", help="record a test report or static-analysis findings as outcomes of an interaction"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--interaction", required=True, metavar="ID", help="the interaction whose code was used")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-junit", type=Path, metavar="FILE", help="a JUnit XML test report")
    source.add_argument("--from-sarif", type=Path, metavar="FILE", help="a SARIF 2.1 findings file")
    p.set_defaults(run=cmd_outcome)


def cmd_outcome(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tuneloop.capture.events import FeedbackIn
    from tuneloop.capture.test_reports import junit_events, read_report, sarif_events
    from tuneloop.cli.admin import open_capture, open_store
    from tuneloop.errors import BadRequest, NotFound

    if args.from_junit is not None:
        events = junit_events(args.interaction, read_report(args.from_junit, "junit report"))
    else:
        events = sarif_events(args.interaction, read_report(args.from_sarif, "sarif file"))
    try:
        items = [FeedbackIn.model_validate(e) for e in events]
    except ValidationError as exc:  # the interaction id is the only user-typed field left unchecked
        raise BadRequest(f"--interaction: {exc.errors()[0]['msg']}") from exc
    store = open_store()
    tenant = store.for_tenant(store.tenant_by_name(args.tenant))
    results = open_capture().add_feedback(tenant, items)
    for item, result in zip(items, results, strict=True):
        if result.status == "rejected":
            raise (NotFound if result.code == 404 else BadRequest)(f"{item.id}: {result.error}")
        print(f"{result.id}\t{result.status}\t{item.value['name']}={item.value['value']}")
    return 0
