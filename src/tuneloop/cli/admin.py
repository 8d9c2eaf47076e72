"""`tuneloop init|tenants|export|audit`: set up the store, manage tenants and keys, get data out."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.cli.output import add_json_flag, emit
from tuneloop.config import KEY_FILE, Settings
from tuneloop.errors import BadRequest, ConfigError
from tuneloop.private_files import private_file, tighten
from tuneloop.store.engine import opening, shown_url, sqlite_file, sqlite_files
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import TENANT_ROLES, Store


def open_store(*, create: bool = False) -> Store:
    """The store named by the environment's settings, migrated to the newest schema. Unless `create`, a
    SQLite store must exist already: a mistyped TUNELOOP_HOME would otherwise answer from a new empty one."""
    settings = Settings()
    with opening(settings.database_url):
        database = sqlite_file(settings.database_url)
    if not create and database is not None and not database.exists():
        raise ConfigError(
            f"no store at {database}; check TUNELOOP_HOME (or TUNELOOP_DB_URL), or create one with "
            "`tuneloop init` or `tuneloop tenants add NAME`"
        )
    return Store(settings.database_url, secret=settings.hash_key())


def open_capture() -> Capture:
    """Capture under the server's secret, so the CLI redacts and keys ids as the server does."""
    secret = Settings().hash_key()
    return Capture(Redactor(hash_key=secret), Pseudonyms(secret))


def register(commands: Any) -> None:
    p = commands.add_parser("init", help="create the store (and TUNELOOP_HOME) and migrate it")
    p.set_defaults(run=cmd_init)

    tenants = commands.add_parser("tenants", help="manage tenants and API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = tenants.add_parser("add", help="create a tenant and print its API key once")
    p.add_argument("name")
    p.add_argument(
        "--redaction",
        choices=["redact", "hash", "off"],
        default="redact",
        help="how PII is treated before storage (default: redact)",
    )
    p.set_defaults(run=cmd_tenants_add)
    p = tenants.add_parser("list", help="list tenants")
    add_json_flag(p)
    p.set_defaults(run=cmd_tenants_list)
    p = tenants.add_parser("key", help="print a new API key for a tenant (or --admin for an admin key)")
    p.add_argument("name", nargs="?")
    p.add_argument(
        "--role",
        choices=TENANT_ROLES,
        help="ingest: capture only, reads nothing; reviewer: review tasks; operator: everything of its "
        "tenant (default)",
    )
    p.add_argument("--admin", action="store_true", help="a key that may act for every tenant")
    p.set_defaults(run=cmd_tenants_key)
    p = tenants.add_parser("revoke", help="revoke the API key that starts with KEY_PREFIX, at once")
    p.add_argument(
        "prefix",
        metavar="KEY_PREFIX",
        help="the key's first 10 characters (e.g. tl-AbCdEfG), or the whole key",
    )
    p.set_defaults(run=cmd_tenants_revoke)
    p = tenants.add_parser("rotate", help="print a new key for a tenant once and revoke its older keys")
    p.add_argument("name")
    p.set_defaults(run=cmd_tenants_rotate)

    p = commands.add_parser("export", help="export a tenant's interactions with their feedback")
    p.add_argument("--tenant", required=True)
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--out", type=Path, help="output file (default: stdout for jsonl)")
    p.set_defaults(run=cmd_export)

    audit = commands.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = audit.add_parser("verify", help="check the audit log's hash chain; exit 1 if broken")
    p.set_defaults(run=cmd_audit_verify)


def cmd_init(_: argparse.Namespace) -> int:
    settings = Settings()
    open_store(create=True).close()
    tighten(settings.home)  # HOME made by an older version may be world-readable
    print(f"store ready at {shown_url(settings.database_url)}")
    return 0


def cmd_tenants_add(args: argparse.Namespace) -> int:
    tenant, key = open_store(create=True).create_tenant(args.name, redaction=args.redaction)
    print(
        f"created tenant {tenant.name} (redaction: {tenant.redaction}); its API key, shown once:",
        file=sys.stderr,
    )
    print(key)
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    tenants = open_store().tenants()
    line = "{0.name}\tredaction={0.redaction}\tcreated={0.created_at:%Y-%m-%d %H:%M}"
    none = "no tenants yet: `tuneloop tenants add NAME`"
    emit(args, tenants, lambda: (line.format(t) for t in tenants), none)
    return 0


def cmd_tenants_key(args: argparse.Namespace) -> int:
    if bool(args.name) == args.admin:
        raise BadRequest("name a tenant, or pass --admin for an admin key (not both)")
    if args.admin and args.role:
        raise BadRequest("--role is for a tenant's key; an --admin key acts for every tenant")
    print(
        open_store(create=args.admin).add_key(None if args.admin else args.name, role=args.role or "operator")
    )
    return 0


def cmd_tenants_revoke(args: argparse.Namespace) -> int:
    prefix = open_store().revoke_key(args.prefix)
    print(f"revoked key {prefix}; its requests and dashboard sessions are refused from now on")
    return 0


def cmd_tenants_rotate(args: argparse.Namespace) -> int:
    key = open_store().rotate_keys(args.name)
    print(
        f"rotated {args.name}'s keys: the older ones are revoked; its new API key, shown once:",
        file=sys.stderr,
    )
    print(key)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.out:
        _not_our_own(Path(args.out))
    store = open_store()
    scoped = store.for_tenant(store.tenant_by_name(args.tenant))
    by_interaction: dict[str, list] = {}
    for event in scoped.feedback():
        by_interaction.setdefault(event["interaction_id"], []).append(event)
    rows = [{**row, "feedback": by_interaction.get(row["id"], [])} for row in scoped.interactions()]
    if args.format == "parquet":
        if not args.out:
            raise BadRequest("--out FILE is required for parquet")
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = [
            {k: json.dumps(v, default=str) if isinstance(v, dict | list) else v for k, v in r.items()}
            for r in rows
        ]
        with _write_errors(args.out), _private_open(args.out, "wb") as f:  # closing writes too
            pq.write_table(pa.Table.from_pylist(flat), f)
    elif args.out:
        with _write_errors(args.out), _private_open(args.out) as out:
            out.writelines(json.dumps(row, default=str) + "\n" for row in rows)
    else:
        with _write_errors("stdout"):
            sys.stdout.writelines(json.dumps(row, default=str) + "\n" for row in rows)
            sys.stdout.flush()
    print(f"exported {len(rows)} interactions", file=sys.stderr)
    return 0


@contextmanager
def _write_errors(target: Path | str) -> Iterator[None]:
    """A full disk (or /dev/full) or a closed pipe while writing the export: one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        if target == "stdout":  # what is left in the buffer would fail again, and print, at exit
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        raise BadRequest(f"{target}: cannot write the export ({exc.strerror or exc})") from None


def _not_our_own(path: Path) -> None:
    """Refuse (400) an output path that is the store's database, one of its side files or the server
    secret: writing an export there replaced the store of every tenant."""
    settings = Settings()
    own = [settings.home / KEY_FILE, *sqlite_files(settings.database_url)]
    if any(path.resolve() == p.resolve() for p in own):
        raise BadRequest(f"--out {path}: is tuneloop's own store or secret; name another file")


def _private_open(path: Path, mode: str = "w") -> IO[Any]:
    """`path` opened for writing: a regular file is made 0600 even if it existed (an export holds the
    tenant's data); a pipe or device (/dev/stdout, `>(gzip > x.gz)`) is written as it is."""
    try:
        if path.is_dir():
            raise BadRequest(f"--out {path}: is a folder; name a file")
        if not path.exists() or path.is_file():
            private_file(path)
            return path.open(mode)
        # Not a stored file: its mode is left alone (root's `chmod 600 /dev/null` or /dev/full breaks
        # them for every other user). O_NONBLOCK: a FIFO no one reads is refused (ENXIO), not waited on.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except OSError as exc:
        raise BadRequest(f"--out {path}: cannot write it ({exc.strerror or exc})") from exc


def cmd_audit_verify(_: argparse.Namespace) -> int:
    ok, summary = open_store().verify_audit()
    print(summary, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
