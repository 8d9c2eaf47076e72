"""`tuneloop users forget` and `tuneloop retention run`: erase one end user, delete what retention expires."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.cli.admin import open_store
from tuneloop.config import Settings
from tuneloop.privacy.erasure import Erasure, forget_user
from tuneloop.privacy.retention import apply_retention
from tuneloop.store.pseudonyms import Pseudonyms


def register(commands: Any) -> None:
    users = commands.add_parser("users", help="end users' rights").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = users.add_parser("forget", help="erase one end user's data everywhere it went")
    p.add_argument("--tenant", required=True)
    p.add_argument("user", metavar="USER", help="the user id as the app sent it (`user` of interactions)")
    p.set_defaults(run=cmd_forget)

    retention = commands.add_parser(
        "retention", help="delete data older than a tenant's window"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = retention.add_parser("run", help="apply the retention window of one tenant, or of every tenant")
    p.add_argument("--tenant", help="one tenant (default: all)")
    p.set_defaults(run=cmd_retention)


def cmd_forget(args: argparse.Namespace) -> int:
    settings = Settings()
    secret = settings.hash_key()
    store = open_store()
    tenant = store.for_tenant(store.tenant_by_name(args.tenant))
    stored = Capture(Redactor(hash_key=secret), Pseudonyms(secret)).identifier(tenant, args.user)
    erasure = forget_user(tenant, settings.home, stored or "", actor="cli")
    print(summary(erasure))
    if not erasure.disk_clean:
        print("warning: another process held the database open; run the command again", file=sys.stderr)
    return 0


def summary(erasure: Erasure) -> str:
    """One line: what an erasure deleted, rewrote and withdrew."""
    versions = ", ".join(f"{v} {state}" for v, state in erasure.versions.items()) or "none"
    files = erasure.files
    return (
        f"erasure {erasure.request}: {erasure.interactions} interactions and {erasure.feedback} feedback "
        f"events deleted; {len(erasure.snapshots)} snapshots rewritten without {erasure.snapshot_rows} rows; "
        f"versions trained on them: {versions}; files under HOME: {len(files.rewritten)} rewritten "
        f"{files.rewritten}, {len(files.removed)} removed {files.removed}"
        + (
            f"; review by hand, they quote the user but nothing says whose they are: {files.left}"
            if files.left
            else ""
        )
    )


def cmd_retention(args: argparse.Namespace) -> int:
    settings = Settings()
    store = open_store()
    tenants = [store.tenant_by_name(args.tenant)] if args.tenant else store.tenants()
    for tenant in tenants:
        done = apply_retention(store.for_tenant(tenant), settings.home, actor="cli")
        if done is None:
            print(f"{tenant.name}: no retention window (privacy_policy.yaml retention_days); kept everything")
        else:
            print(
                f"{tenant.name}: deleted {done.interactions} interactions and {done.feedback} feedback "
                f"events before {done.cutoff:%Y-%m-%d %H:%M} UTC; trimmed {len(done.snapshots)} snapshots"
            )
    return 0
