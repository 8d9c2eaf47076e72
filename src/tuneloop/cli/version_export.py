"""`tuneloop versions export`: a version's adapter (or merged model) as a folder other tools load."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import Progress
from tuneloop.errors import BadRequest


def register_export(actions: Any) -> None:
    """Add `export` to the `versions` command group."""
    p = actions.add_parser(
        "export", help="write a version's PEFT adapter (or with --merged a merged model) to a new folder"
    )
    p.add_argument("version")
    p.add_argument("--tenant", required=True)
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    p.add_argument(
        "--merged", action="store_true", help="fold the adapter into the base model's weights and save that"
    )
    p.add_argument(
        "--base-model",
        metavar="NAME",
        help="the base model's name to record (default: its public hub id, e.g. "
        "HuggingFaceTB/SmolLM2-135M-Instruct for the embedded model)",
    )
    p.set_defaults(run=cmd_versions_export)


def cmd_versions_export(args: argparse.Namespace) -> int:
    from tuneloop.config import Settings
    from tuneloop.registry.artifacts import export_version
    from tuneloop.registry.versions import Registry

    store = open_store()
    version = Registry(store.for_tenant(store.tenant_by_name(args.tenant))).get(args.version)
    what = "a merged model" if args.merged else "an adapter"
    with Progress().stage(f"export {version.id} as {what} to {args.out}"):
        try:
            out = export_version(
                version, args.out, home=Settings().home, base_name=args.base_model, merged=args.merged
            )
        except OSError as exc:  # --out an existing file, under one, too long a name, a full disk
            raise BadRequest(
                f"--out {args.out}: cannot write the export there ({exc.strerror or exc})"
            ) from None
    print(out)
    return 0
