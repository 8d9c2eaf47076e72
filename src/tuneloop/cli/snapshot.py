"""`tuneloop snapshot create|list|show|export`: freeze a tenant's training data and get it out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.config import Settings
from tuneloop.store.repository import TenantStore


def register(commands: Any) -> None:
    group = commands.add_parser("snapshot", help="freeze a tenant's signals into a reproducible dataset")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("create", help="build and register a snapshot; prints its hash")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--policy", type=Path, help="reward policy YAML (default: the tenant's, else the defaults)"
    )
    p.set_defaults(run=cmd_create)
    p = actions.add_parser("list", help="a tenant's snapshots")
    p.add_argument("--tenant", required=True)
    p.set_defaults(run=cmd_list)
    p = actions.add_parser("show", help="one snapshot's counts, policy and rater report")
    p.add_argument("hash")
    p.add_argument("--tenant", required=True)
    p.set_defaults(run=cmd_show)
    p = actions.add_parser("export", help="write a snapshot in TRL's dataset formats (JSONL)")
    p.add_argument("hash")
    p.add_argument("--tenant", required=True)
    p.add_argument("--format", choices=["trl"], default="trl")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_export)


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def cmd_create(args: argparse.Namespace) -> int:
    from tuneloop.config import tenant_policy
    from tuneloop.signals.policy import RewardPolicy
    from tuneloop.signals.snapshots import create_snapshot

    home = Settings().home
    tenant = _tenant(args.tenant)
    snap = create_snapshot(tenant, home, tenant_policy(home, args.tenant, RewardPolicy, args.policy))
    counts = ", ".join(f"{k}={v}" for k, v in snap.counts.items())
    print(f"snapshot {snap.hash[:12]} ({counts})", file=sys.stderr)
    print(snap.hash)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tuneloop.signals.snapshots import DATASETS, list_snapshots

    for snap in list_snapshots(_tenant(args.tenant)):
        sizes = "\t".join(f"{d}={snap.counts[d + '_train']}+{snap.counts[d + '_heldout']}" for d in DATASETS)
        print(f"{snap.hash[:12]}\t{snap.created_at:%Y-%m-%d %H:%M}\t{sizes}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tuneloop.signals.snapshots import get_snapshot

    snap = get_snapshot(_tenant(args.tenant), args.hash)
    print(
        json.dumps(
            {
                "hash": snap.hash,
                "path": str(snap.path),
                "as_of": snap.as_of.isoformat(),
                "counts": snap.counts,
                "report": snap.report,
                "policy": snap.policy,
            },
            indent=2,
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tuneloop.signals.snapshots import export_trl, get_snapshot

    for path in export_trl(get_snapshot(_tenant(args.tenant), args.hash), args.out):
        print(path)
    return 0
