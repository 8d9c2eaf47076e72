"""The store's API. `Store` manages tenants, keys and the audit log; `TenantStore` is a handle for one
tenant, and every read and write through it is scoped to that tenant by construction."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tuneloop.clock import now_utc, utc
from tuneloop.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from tuneloop.store import audit
from tuneloop.store.engine import Synchronous, commit_turns, create_engine, migrate, opening
from tuneloop.store.schema import (
    api_keys,
    chunks,
    dashboard_sessions,
    feedback,
    interactions,
    pending_feedback,
    retrievals,
    tenants,
)

T = TypeVar("T")
RedactionMode = Literal["redact", "hash", "off"]
REVOKED = (
    "unknown or revoked API key — get a current one with `tuneloop tenants key NAME` (a new tenant: "
    "`tuneloop tenants add NAME`)"
)
# ingest: capture only (safe in a browser); reviewer: review tasks; operator: all of its tenant; admin: all.
Role = Literal["ingest", "reviewer", "operator", "admin"]
TENANT_ROLES: tuple[Role, ...] = ("ingest", "reviewer", "operator")
# Who may log in to the dashboard by default. Pages that admit reviewers pass `roles` with "reviewer" to
# `create_session` and check `Principal.role` per page.
DASHBOARD_ROLES: frozenset[Role] = frozenset({"operator", "admin"})
INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # each with on_conflict_do_nothing
KEY_PREFIX = "tl-"
SESSION_PREFIX = "tls-"
WAL_TRUNCATE_ATTEMPTS = 50  # 0.1 s apart: a reader in another process usually finishes well within 5 s
# ASCII only: a Cyrillic "а" would make a look-alike of another tenant's name.
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """`conn.execute(table.insert(), rows)` on SQLite, for rows with the same keys: the same type processors
    bind the values, in one loop over tuples. SQLAlchemy's per-row parameter building took most of a feedback
    batch's insert (benchmarks/ingest.py); a scalar repeated down a column (a timestamp, a thumb) binds
    once."""
    dialect = conn.dialect
    compiled = table.insert().compile(dialect=dialect, column_keys=list(rows[0]))
    names = compiled.positiontup
    assert names is not None, "a dialect with positional parameters (SQLite's qmark)"
    processors = [(name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]
    seen: dict[tuple[str, type, Any], Any] = {}

    def bound(name: str, process: Callable[[Any], Any], value: Any) -> Any:
        if type(value) not in _SCALARS:
            return process(value)
        key = (name, type(value), value)  # the type too: True == 1, but JSON binds them apart
        if key not in seen:
            seen[key] = process(value)
        return seen[key]

    params = [
        tuple(
            row[name] if process is None else bound(name, process, row[name]) for name, process in processors
        )
        for row in rows
    ]
    conn.exec_driver_sql(str(compiled), params)


_SCALARS = frozenset({type(None), bool, int, float, str, datetime})


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    redaction: RedactionMode
    created_at: datetime
    # Whose key makes its pseudonyms (store/pseudonyms.py): its own, or the server's for a tenant created
    # before tenants had their own (migration 0016).
    pseudonyms: Literal["tenant", "server"] = "tenant"


@dataclass(frozen=True)
class Principal:
    """Who an API key speaks for, and in what role: one tenant, or an admin (tenant None) who may act for
    any."""

    tenant: Tenant | None
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item of a write: accepted, duplicate, or rejected with the reason (or pending:
    feedback kept until its interaction is logged, capture/pending.py)."""

    id: str
    status: Literal["accepted", "duplicate", "rejected", "pending"]
    error: str | None = None
    code: int = 201


class Arrival(NamedTuple):
    """Where a feedback event stands in its tenant's arrival order (ids are unique per tenant, so this is)."""

    received_at: datetime
    id: str  # as stored (a client's id may be stored keyed, `ref-…`)


# json.dumps builds an encoder per call; every captured event is hashed, so build it once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def payload_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of a payload's canonical JSON. Capture stores only its keyed form (`Pseudonyms.digest`):
    this one can be brute-forced back to values that redaction removed from the row."""
    return hashlib.sha256(_CANONICAL.encode(payload).encode()).hexdigest()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Store:
    """One database (SQLite file or PostgreSQL server), migrated to the newest schema on open."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 30.0,
        pool_size: int = 16,
        synchronous: Synchronous = "normal",
        secret: bytes | None = None,
    ) -> None:
        """`busy_timeout`: seconds to wait for a lock or pooled connection (the server passes a short one).

        `secret` (`Settings.hash_key()`) is needed only to migrate rows captured before identifiers and
        digests were keyed; an empty store opens without it.
        """
        self.url = url
        with opening(url):
            self.engine = create_engine(
                url, busy_timeout=busy_timeout, pool_size=pool_size, synchronous=synchronous
            )
            migrate(self.engine, secret)
        self._insert = INSERTS[self.engine.dialect.name]
        self._joined = threading.local()
        self._turns = commit_turns(url)

    def close(self) -> None:
        self.engine.dispose()
        self._turns.close()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction (on SQLite it takes the write lock at BEGIN); inside `joined`, a savepoint of
        the shared transaction instead."""
        shared = getattr(self._joined, "conn", None)
        if shared is not None:
            with shared.begin_nested():
                yield shared
            return
        with self.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read transaction; inside `joined`, the shared transaction (it sees the group's own writes)."""
        shared = getattr(self._joined, "conn", None)
        if shared is not None:
            yield shared
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def joined(self) -> Iterator[sa.Connection]:
        """One write transaction that every `write` and `read` on this thread joins until the block ends,
        so many callers' writes commit together (store/group_commit). On SQLite, processes' joined
        transactions take turns (`engine.CommitTurns`)."""
        with self._turns(), self.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            self._joined.conn = conn
            try:
                yield conn
            finally:
                self._joined.conn = None

    def retrying(self, fn: Callable[[sa.Connection], T], attempts: int = 5) -> T:
        """Run `fn` in a write transaction, again if a concurrent writer took the same audit seq."""
        for attempt in range(attempts):
            try:
                with self.write() as conn:
                    return fn(conn)
            except sa.exc.IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    # tenants and keys ---------------------------------------------------------------------------

    def create_tenant(
        self, name: str, redaction: RedactionMode = "redact", actor: str = "cli"
    ) -> tuple[Tenant, str]:
        """Create a tenant and its first API key; the key is returned once and stored only hashed."""
        if not TENANT_NAME.fullmatch(name):
            raise BadRequest(
                f"tenant name {name[:100]!r}: use 1-64 lowercase ASCII letters, digits, '-' or '_', "
                "starting with a letter or digit",
                param="name",
            )
        tenant = Tenant(id=uuid.uuid4().hex, name=name, redaction=redaction, created_at=now_utc())

        def insert(conn: sa.Connection) -> str:
            if conn.execute(sa.select(tenants.c.id).where(tenants.c.name == name)).first():
                raise Conflict(
                    f"tenant {name!r} already exists — add a key with `tuneloop tenants key {name}`"
                )
            conn.execute(tenants.insert().values(**tenant.__dict__))
            audit.append(
                conn,
                tenant_id=tenant.id,
                actor=actor,
                action="tenant.create",
                subject=name,
                details={"redaction": redaction},
            )
            return self._add_key(conn, tenant.id, role="operator", actor=actor)

        return tenant, self.retrying(insert)

    def add_key(self, tenant_name: str | None, actor: str = "cli", role: Role = "operator") -> str:
        """A new API key for a tenant in `role`, or an admin key when `tenant_name` is None."""
        if tenant_name is None:
            role = "admin"
        elif role not in TENANT_ROLES:
            raise BadRequest(
                f"role {role!r}: a tenant's key is one of {', '.join(TENANT_ROLES)}", param="role"
            )
        tenant_id = self.tenant_by_name(tenant_name).id if tenant_name else None
        return self.retrying(lambda conn: self._add_key(conn, tenant_id, role=role, actor=actor))

    def _add_key(self, conn: sa.Connection, tenant_id: str | None, *, role: Role, actor: str) -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        conn.execute(
            api_keys.insert().values(
                key_hash=hash_key(key), tenant_id=tenant_id, role=role, prefix=key[:10], created_at=now_utc()
            )
        )
        audit.append(
            conn,
            tenant_id=tenant_id,
            actor=actor,
            action="key.create",
            subject=key[:10],
            details={"role": role},
        )
        return key

    def tenants(self) -> list[Tenant]:
        with self.read() as conn:
            return [_tenant(r) for r in conn.execute(sa.select(tenants).order_by(tenants.c.name))]

    def tenant_by_name(self, name: str) -> Tenant:
        with self.read() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
        if row is None and not TENANT_NAME.fullmatch(name):  # a header or argument of any length and content
            raise NotFound(f"unknown tenant {name[:100]!r}: tenant names are 1-64 of a-z, 0-9, '-' and '_'")
        if row is None:
            raise NotFound(f"unknown tenant {name!r} — create it with `tuneloop tenants add {name}`")
        return _tenant(row)

    def authenticate(self, key: str) -> Principal:
        """The principal an API key speaks for; Unauthorized when it is unknown or revoked."""
        with self.read() as conn:
            row = conn.execute(
                sa.select(api_keys.c.role, tenants)
                .select_from(api_keys.outerjoin(tenants, api_keys.c.tenant_id == tenants.c.id))
                .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))
            ).first()
        if row is None:
            raise Unauthorized(REVOKED)
        return _principal(row)

    def key_active(self, key: str) -> bool:
        """Whether an API key exists unrevoked: one primary-key read, for callers that cache principals."""
        return bool(self.active_keys({key}))

    def active_keys(self, keys: set[str]) -> set[str]:
        """Those of `keys` that exist unrevoked, in one read."""
        hashed = {hash_key(key): key for key in keys}
        with self.read() as conn:
            rows = conn.execute(
                sa.select(api_keys.c.key_hash).where(
                    api_keys.c.key_hash.in_(hashed), api_keys.c.revoked_at.is_(None)
                )
            ).all()
        return {hashed[row.key_hash] for row in rows}

    def revoke_key(self, given: str, actor: str = "cli") -> str:
        """Revoke the one active key `given` names (its first 10 characters, or the whole key), and its
        dashboard sessions; returns the key's prefix."""
        prefix = given[:10]
        # Only a key's prefix and hash are kept: the characters after the 10th can be checked only as the
        # whole key, and a revocation must not take a key that `given` contradicts.
        whole = len(given) > len(prefix)

        def revoke(conn: sa.Connection) -> str:
            rows = conn.execute(
                sa.select(api_keys.c.key_hash, api_keys.c.tenant_id).where(
                    api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None)
                )
            ).all()
            if whole:
                rows = [r for r in rows if r.key_hash == hash_key(given)]
            if not rows and whole:
                raise NotFound(
                    f"no active API key is {given[:10]!r}… as given — pass the whole key, or only its "
                    "first 10 characters (as `tl-AbCdEfG`)"
                )
            if not rows:
                raise NotFound(
                    f"no active API key starts with {prefix!r} — pass a key's first 10 characters "
                    "(as `tl-AbCdEfG`); the audit log's key.create rows name every key's prefix"
                )
            if len(rows) > 1:
                raise Conflict(
                    f"{len(rows)} active keys start with {prefix!r}; rotate the tenant's keys instead "
                    "(`tuneloop tenants rotate NAME`)"
                )
            self._revoke(conn, [rows[0].key_hash])
            audit.append(conn, tenant_id=rows[0].tenant_id, actor=actor, action="key.revoke", subject=prefix)
            return prefix

        return self.retrying(revoke)

    def rotate_keys(self, tenant_name: str, actor: str = "cli") -> str:
        """A new key for the tenant, returned once; every older key of the tenant is revoked with it."""
        tenant_id = self.tenant_by_name(tenant_name).id

        def rotate(conn: sa.Connection) -> str:
            old = conn.execute(
                sa.select(api_keys.c.key_hash, api_keys.c.prefix).where(
                    api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None)
                )
            ).all()
            self._revoke(conn, [r.key_hash for r in old])
            key = self._add_key(conn, tenant_id, role="operator", actor=actor)
            audit.append(
                conn,
                tenant_id=tenant_id,
                actor=actor,
                action="key.rotate",
                subject=key[:10],
                details={"revoked": sorted(r.prefix for r in old)},
            )
            return key

        return self.retrying(rotate)

    def _revoke(self, conn: sa.Connection, key_hashes: list[str]) -> None:
        if not key_hashes:
            return
        conn.execute(
            api_keys.update().where(api_keys.c.key_hash.in_(key_hashes)).values(revoked_at=now_utc())
        )
        conn.execute(dashboard_sessions.delete().where(dashboard_sessions.c.key_hash.in_(key_hashes)))

    # dashboard sessions -------------------------------------------------------------------------

    def create_session(
        self, key: str, hours: float, roles: frozenset[Role] = DASHBOARD_ROLES
    ) -> tuple[str, Principal]:
        """Log an API key into the dashboard: a random token (returned once, stored hashed) valid `hours`.

        Only keys whose role is in `roles` may log in; the session carries the key's role
        (`Principal.role`)."""
        principal = self.authenticate(key)
        if principal.role not in roles:
            raise Forbidden(
                f"an {principal.role} key cannot log in to the dashboard; use an operator key "
                "(`tuneloop tenants key NAME --role operator`)"
            )
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = now_utc()
        with self.write() as conn:
            # Expired sessions are swept here, so the table holds only live ones and recent logins.
            conn.execute(dashboard_sessions.delete().where(dashboard_sessions.c.expires_at < now))
            conn.execute(
                dashboard_sessions.insert().values(
                    token_hash=hash_key(token),
                    key_hash=hash_key(key),
                    tenant_id=principal.tenant.id if principal.tenant else None,
                    created_at=now,
                    expires_at=now + timedelta(hours=hours),
                )
            )
        return token, principal

    def session(self, token: str) -> Principal:
        """The principal of a live session; Unauthorized if unknown, expired, ended or its key revoked."""
        with self.read() as conn:
            row = conn.execute(
                sa.select(api_keys.c.role, tenants)
                .select_from(
                    dashboard_sessions.join(
                        api_keys, dashboard_sessions.c.key_hash == api_keys.c.key_hash
                    ).outerjoin(tenants, dashboard_sessions.c.tenant_id == tenants.c.id)
                )
                .where(
                    dashboard_sessions.c.token_hash == hash_key(token),
                    dashboard_sessions.c.expires_at > now_utc(),
                    api_keys.c.revoked_at.is_(None),
                )
            ).first()
        if row is None:
            raise Unauthorized("dashboard session expired or ended — log in again with an API key")
        return _principal(row)

    def end_session(self, token: str) -> None:
        """Log out: the token stops working at once, in every process."""
        with self.write() as conn:
            conn.execute(
                dashboard_sessions.delete().where(dashboard_sessions.c.token_hash == hash_key(token))
            )

    def for_tenant(self, tenant: Tenant) -> TenantStore:
        """The scoped handle through which everything about one tenant is read and written."""
        return TenantStore(self, tenant)

    # audit ---------------------------------------------------------------------------------------

    def verify_audit(self) -> tuple[bool, str]:
        with self.read() as conn:
            return audit.verify(conn)

    # erasure ---------------------------------------------------------------------------------------

    def reclaim(self, *, vacuum: bool = False) -> bool:
        """Take deleted rows' bytes off the disk: on SQLite, with `vacuum` rebuild the file (no free page
        keeps an older copy), then checkpoint the WAL into it and truncate the WAL to zero bytes.

        Returns whether the WAL is empty now (False while another process holds a read open: run again).
        PostgreSQL leaves dead rows to autovacuum; there is nothing to do here."""
        if self.engine.dialect.name != "sqlite":
            return True
        raw = self.engine.raw_connection()
        try:
            sqlite_conn = (
                raw.driver_connection
            )  # autocommit (isolation_level None): VACUUM runs outside BEGIN
            if vacuum:
                sqlite_conn.execute("VACUUM")
            for _ in range(WAL_TRUNCATE_ATTEMPTS):
                busy, _, _ = sqlite_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(0.1)
            return False
        finally:
            raw.close()


def _tenant(row: sa.Row) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        redaction=row.redaction,
        created_at=utc(row.created_at),
        pseudonyms=row.pseudonyms,
    )


def _principal(row: sa.Row) -> Principal:
    """A key's principal from its `role` joined with its tenant's columns (all None for an admin key)."""
    return Principal(tenant=_tenant(row) if row.id else None, role=row.role)


class TenantTx:
    """A transaction seen through one tenant: every statement built here filters on its id (reads,
    updates) or stamps it (inserts, audit rows), so no caller writes the filter by hand."""

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id

    def query(self, table: sa.Table, *where: Any, columns: tuple[Any, ...] = ()) -> sa.Select:
        """SELECT from `table` (all columns, or `columns`) restricted to this tenant and `where`."""
        return sa.select(*(columns or (table,))).where(table.c.tenant_id == self.tenant_id, *where)

    def all(
        self,
        table: sa.Table,
        *where: Any,
        columns: tuple[Any, ...] = (),
        order_by: tuple[Any, ...] = (),
        limit: int | None = None,
    ) -> list[sa.Row]:
        return list(
            self.conn.execute(self.query(table, *where, columns=columns).order_by(*order_by).limit(limit))
        )

    def first(self, table: sa.Table, *where: Any, columns: tuple[Any, ...] = ()) -> sa.Row | None:
        return self.conn.execute(self.query(table, *where, columns=columns)).first()

    def execute(self, query: sa.Select) -> sa.CursorResult:
        """Run a query built with `query` (joins and subqueries stay scoped that way)."""
        return self.conn.execute(query)

    def insert(self, table: sa.Table, **values: Any) -> None:
        self.conn.execute(table.insert().values(tenant_id=self.tenant_id, **values))

    def insert_new(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` for this tenant, skipping any whose primary key is there (another process may be
        writing the same rows)."""
        stmt = INSERTS[self.conn.dialect.name](table).on_conflict_do_nothing()
        self.conn.execute(stmt, [{**row, "tenant_id": self.tenant_id} for row in rows])

    def update(self, table: sa.Table, *where: Any, **values: Any) -> int:
        """Update this tenant's rows matching `where`; returns how many changed."""
        stmt = table.update().where(table.c.tenant_id == self.tenant_id, *where).values(**values)
        return self.conn.execute(stmt).rowcount

    def serialize(self) -> None:
        """Hold the tenant until this transaction ends, so its reads see every change of another serialized
        transaction of the tenant (a row lock cannot: a promotion must see the production another one just
        made). PostgreSQL locks the tenant's row (NO KEY: inserts that reference it go on); a SQLite
        writer holds the whole database already."""
        self.conn.execute(
            sa.select(tenants.c.id).where(tenants.c.id == self.tenant_id).with_for_update(key_share=True)
        )

    def delete(self, table: sa.Table, *where: Any) -> int:
        """Delete this tenant's rows matching `where` (at least one condition); returns how many went."""
        assert where, "a scoped delete needs a condition; deleting a whole tenant is not a helper's job"
        return self.conn.execute(table.delete().where(table.c.tenant_id == self.tenant_id, *where)).rowcount

    def audit(self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None) -> int:
        """Append this tenant's audit row inside the transaction; returns its sequence number."""
        return audit.append(
            self.conn, tenant_id=self.tenant_id, actor=actor, action=action, subject=subject, details=details
        )


class TenantStore:
    """Reads and writes for exactly one tenant: every statement here filters on its id."""

    def __init__(self, store: Store, tenant: Tenant) -> None:
        self.store = store
        self.tenant = tenant

    @property
    def tenant_id(self) -> str:
        return self.tenant.id

    # scoped statements: other packages' tables are read and written only through these ------------

    @contextmanager
    def reading(self) -> Iterator[TenantTx]:
        """A read transaction whose statements are all scoped to this tenant."""
        with self.store.read() as conn:
            yield TenantTx(conn, self.tenant_id)

    def transaction(self, fn: Callable[[TenantTx], T]) -> T:
        """Run `fn` in one write transaction (retried on a lost audit-chain race): state and audit rows
        it writes commit together or not at all."""
        return self.store.retrying(lambda conn: fn(TenantTx(conn, self.tenant_id)))

    def purge(self, fn: Callable[[TenantTx], T]) -> T:
        """Like `transaction`, for deleting personal rows: on SQLite the connection zeroes the space it frees
        (secure_delete). Call `Store.reclaim` after it to take the WAL's copies off the disk too."""

        def run(conn: sa.Connection) -> T:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete=ON")  # stays on for this pooled connection
            return fn(TenantTx(conn, self.tenant_id))

        return self.store.retrying(run)

    def all(self, table: sa.Table, *where: Any, **options: Any) -> list[sa.Row]:
        """This tenant's rows of `table` matching `where` (see `TenantTx.all` for the options)."""
        with self.reading() as tx:
            return tx.all(table, *where, **options)

    def first(self, table: sa.Table, *where: Any, **options: Any) -> sa.Row | None:
        with self.reading() as tx:
            return tx.first(table, *where, **options)

    # interactions --------------------------------------------------------------------------------

    def log_interaction(self, row: dict[str, Any], digest: str) -> ItemResult:
        """Store one redacted interaction; idempotent on its id by `digest` of the client payload (Conflict
        for another payload under a stored id)."""
        [result] = self.log_interactions([(row, digest)])
        return logged_or_conflict(result)

    def log_interactions(self, rows: list[tuple[dict[str, Any], str]]) -> list[ItemResult]:
        """Store (row, digest) pairs in one transaction; each item answers accepted, duplicate (the same
        payload under a stored id) or rejected (409: another payload)."""
        now = now_utc()
        with self.store.write() as conn:
            seen = dict(
                conn.execute(
                    sa.select(interactions.c.id, interactions.c.payload_hash).where(
                        interactions.c.tenant_id == self.tenant_id,
                        interactions.c.id.in_({row["id"] for row, _ in rows}),
                    )
                ).all()
            )
            results, new = [], []
            for row, digest in rows:
                iid = row["id"]
                if iid in seen:
                    results.append(existing_item(iid, digest, seen[iid], "interaction"))
                    continue
                seen[iid] = digest
                new.append({"created_at": now, **row, "tenant_id": self.tenant_id, "payload_hash": digest})
                results.append(ItemResult(iid, "accepted"))
            if new and (theirs := self._insert_new(conn, interactions, new)):
                results = [
                    existing_item(r.id, digest, theirs[r.id], "interaction") if r.id in theirs else r
                    for r, (_, digest) in zip(results, rows, strict=True)
                ]
        return results

    def _insert_new(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> dict[str, str]:
        """Insert `rows`, whose ids this transaction read as free; returns {id: payload hash} of those another
        transaction stored since (theirs stands, and each of ours is a duplicate of it or a conflict, never a
        second "accepted"). On SQLite, BEGIN IMMEDIATE has held the write lock since that read, so there
        are none, and a plain executemany skips RETURNING's per-row work."""
        if conn.dialect.name == "sqlite":
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows:  # insert_rows binds one set of columns
                by_keys.setdefault(tuple(row), []).append(row)
            for group in by_keys.values():
                insert_rows(conn, table, group)
            return {}
        insert = self.store._insert(table).on_conflict_do_nothing().returning(table.c.id)
        stored = set(conn.execute(insert, rows).scalars())
        if not (lost := [r["id"] for r in rows if r["id"] not in stored]):
            return {}
        query = sa.select(table.c.id, table.c.payload_hash).where(
            table.c.tenant_id == self.tenant_id, table.c.id.in_(lost)
        )
        return dict(conn.execute(query).all())

    def logged(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` name interactions this tenant has logged."""
        with self.reading() as tx:
            rows = tx.all(interactions, interactions.c.id.in_(list(ids)), columns=(interactions.c.id,))
        return {r.id for r in rows}

    def get_interaction(self, interaction_id: str) -> dict[str, Any]:
        """One interaction with its feedback; NotFound for ids this tenant does not own."""
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(interactions).where(
                    interactions.c.tenant_id == self.tenant_id, interactions.c.id == interaction_id
                )
            ).first()
            if row is None:
                raise NotFound(f"interaction {interaction_id!r} not found", param="interaction_id")
            events = self._feedback(conn, interaction_id=interaction_id)
        return {**_interaction(row), "feedback": events}

    def interactions(
        self, *, since: datetime | None = None, experiment_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Interactions in creation order, optionally created after `since` or served in one experiment."""
        query = sa.select(interactions).where(interactions.c.tenant_id == self.tenant_id)
        if since is not None:
            query = query.where(interactions.c.created_at > since)
        if experiment_id is not None:
            query = query.where(interactions.c.experiment_id == experiment_id)
        query = query.order_by(interactions.c.created_at, interactions.c.id).limit(limit)
        with self.store.read() as conn:
            return [_interaction(r) for r in conn.execute(query)]

    def window(
        self, since: datetime, until: datetime, *, experiment_id: str | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Interactions created in [since, until) (optionally of one experiment) and all feedback on them."""
        where = [interactions.c.created_at >= since, interactions.c.created_at < until]
        if experiment_id is not None:
            where.append(interactions.c.experiment_id == experiment_id)
        with self.reading() as tx:
            rows = tx.all(interactions, *where, order_by=(interactions.c.created_at, interactions.c.id))
            ids = tx.query(interactions, *where, columns=(interactions.c.id,))
            events = tx.all(
                feedback, feedback.c.interaction_id.in_(ids), order_by=(feedback.c.received_at, feedback.c.id)
            )
        return [_interaction(r) for r in rows], [_event(r) for r in events]

    # feedback ------------------------------------------------------------------------------------

    def add_feedback(self, events: list[tuple[dict[str, Any], str]]) -> list[ItemResult]:
        """Store (event, digest) pairs in one transaction; each item answers accepted/duplicate/rejected."""
        results: list[ItemResult] = []
        rows = []
        ids = [e["id"] for e, _ in events]
        with self.store.write() as conn:
            received = now_utc()
            seen = dict(
                conn.execute(
                    sa.select(feedback.c.id, feedback.c.payload_hash).where(
                        feedback.c.tenant_id == self.tenant_id, feedback.c.id.in_(ids)
                    )
                ).all()
            )
            # An event acknowledged as pending (capture/pending.py) holds its id until it lands: another
            # payload under that id is a conflict, never a new event that the pending one would then meet
            # as a conflict itself and be dropped. The same payload is that event landing now.
            held = dict(
                conn.execute(
                    sa.select(pending_feedback.c.id, pending_feedback.c.payload_hash).where(
                        pending_feedback.c.tenant_id == self.tenant_id,
                        pending_feedback.c.id.in_(ids),
                        pending_feedback.c.expires_at > received,
                    )
                ).all()
            )
            known = self._choice_counts(conn, events)
            sources = self._sources(conn, events)
            for event, digest in events:
                eid = event["id"]
                if eid in seen:
                    results.append(existing_item(eid, digest, seen[eid]))
                elif held.get(eid, digest) != digest:
                    results.append(existing_item(eid, digest, held[eid]))
                elif problem := _reference_problem(event, known) or _source_problem(event, sources):
                    results.append(
                        ItemResult(eid, "rejected", problem, code=404 if "not found" in problem else 400)
                    )
                else:
                    seen[eid] = digest
                    rows.append(
                        {
                            **event,
                            "tenant_id": self.tenant_id,
                            "payload_hash": digest,
                            "created_at": event.get("created_at") or received,
                            "received_at": received,
                        }
                    )
                    results.append(ItemResult(eid, "accepted"))
            if rows and (theirs := self._insert_new(conn, feedback, rows)):
                results = [
                    existing_item(r.id, digest, theirs[r.id])
                    if r.id in theirs and r.status != "rejected"
                    else r
                    for r, (_, digest) in zip(results, events, strict=True)
                ]
        return results

    def _choice_counts(self, conn: sa.Connection, events: list[tuple[dict[str, Any], str]]) -> dict[str, int]:
        """How many choices each interaction the events point at has, for those this tenant owns."""
        wanted = {iid for event, _ in events for iid in (event["interaction_id"], *referenced(event))}
        rows = conn.execute(
            sa.select(interactions.c.id, interactions.c.choices).where(
                interactions.c.tenant_id == self.tenant_id, interactions.c.id.in_(wanted)
            )
        )
        return {r.id: len(r.choices) for r in rows}

    def _sources(self, conn: sa.Connection, events: list[tuple[dict[str, Any], str]]) -> Sources:
        """For the source events among `events`: the chunks each named interaction's retrievals showed, and
        which chunks named for an answer with no logged retrieval the tenant's documents hold now (at most two
        reads, none without a source event)."""
        named = [e for e, _ in events if _names_a_source(e)]
        if not named:
            return Sources({}, set())
        shown: dict[str, set[str]] = {}
        for row in conn.execute(
            sa.select(retrievals.c.interaction_id, retrievals.c.results).where(
                retrievals.c.tenant_id == self.tenant_id,
                retrievals.c.interaction_id.in_({e["interaction_id"] for e in named}),
            )
        ):
            shown.setdefault(row.interaction_id, set()).update(r["chunk_id"] for r in row.results)
        wanted = {e["value"]["chunk_id"] for e in named if e["interaction_id"] not in shown}
        if not wanted:
            return Sources(shown, set())
        current = conn.execute(
            sa.select(chunks.c.id).where(chunks.c.tenant_id == self.tenant_id, chunks.c.id.in_(wanted))
        )
        return Sources(shown, set(current.scalars()))

    def feedback(
        self,
        *,
        interaction_id: str | None = None,
        since: datetime | None = None,
        after: Arrival | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Feedback events in arrival order, filtered by interaction, received strictly after `since`, and
        after the event at `after` (a page's last: events received with it are not skipped, as by `since`)."""
        with self.store.read() as conn:
            return self._feedback(conn, interaction_id=interaction_id, since=since, after=after, limit=limit)

    def _feedback(
        self,
        conn: sa.Connection,
        *,
        interaction_id: str | None = None,
        since: datetime | None = None,
        after: Arrival | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        query = sa.select(feedback).where(feedback.c.tenant_id == self.tenant_id)
        if interaction_id is not None:
            query = query.where(feedback.c.interaction_id == interaction_id)
        # SQLite stores times without an offset, all in UTC: compare in UTC too.
        if since is not None:
            query = query.where(feedback.c.received_at > utc(since))
        if after is not None:
            # (received_at, id) > after, with `received_at >= at` on its own: SQLite seeks the received_at
            # index on that term, where on `received_at > at OR (received_at = at AND id > …)` it scanned
            # all of the tenant's events.
            at = utc(after.received_at)
            query = query.where(
                feedback.c.received_at >= at, (feedback.c.received_at > at) | (feedback.c.id > after.id)
            )
        query = query.order_by(feedback.c.received_at, feedback.c.id).limit(limit)
        return [_event(r) for r in conn.execute(query)]


def logged_or_conflict(result: ItemResult) -> ItemResult:
    """An interaction's result, or Conflict (409) when another payload is stored under its id."""
    if result.status == "rejected":
        raise Conflict(result.error or "", param="id")
    return result


def existing_item(item_id: str, digest: str, stored_digest: str, what: str = "event") -> ItemResult:
    """The answer for an item whose id is stored (or, for an event, held pending) already: a duplicate if
    the payload is the same, else a conflict."""
    if stored_digest == digest:
        return ItemResult(item_id, "duplicate", code=200)
    message = f"{what} {item_id!r} already exists with a different payload"
    return ItemResult(item_id, "rejected", message, code=409)


class Sources(NamedTuple):
    shown: dict[str, set[str]]  # interaction id → the chunks its retrievals showed
    current: set[str]  # the named chunks the tenant's documents hold now


def _names_a_source(event: dict[str, Any]) -> bool:
    return event["kind"].startswith("source_")  # source_clicked, _helpful, _wrong: value {"chunk_id": ...}


def _source_problem(event: dict[str, Any], sources: Sources) -> str | None:
    """Why a source event names no source its answer showed (or, with no retrieval logged for the answer,
    no chunk of the tenant's documents), or None."""
    if not _names_a_source(event):
        return None
    chunk, shown = event["value"]["chunk_id"], sources.shown.get(event["interaction_id"])
    if shown is not None and chunk not in shown:
        return f"value.chunk_id: {chunk!r} was not among the sources shown for this interaction"
    if shown is None and chunk not in sources.current:
        return f"value.chunk_id: chunk {chunk!r} not found among this tenant's documents"
    return None


def referenced(event: dict[str, Any]) -> list[str]:
    """The other interactions an event's value names: a preference's two, a regeneration's replacement."""
    value = event.get("value")
    if event["kind"] == "preference" and "chosen_interaction" in value:
        return [value["chosen_interaction"], value["rejected_interaction"]]
    if event["kind"] == "regenerated" and value:
        return [value["replaced_by"]]
    return []


def _reference_problem(event: dict[str, Any], known: dict[str, int]) -> str | None:
    """Why the interactions an event points at do not exist in this tenant, or None."""
    iid = event["interaction_id"]
    if iid not in known:
        return f"interaction {iid!r} not found"
    value = event.get("value")
    if event["kind"] == "preference":
        if "chosen_interaction" in value:
            for field in ("chosen_interaction", "rejected_interaction"):
                if value[field] not in known:
                    return f"value.{field}: interaction {value[field]!r} not found"
        elif max(value["chosen"], value["rejected"]) >= known[iid]:
            return f"value: interaction {iid!r} has {known[iid]} choice(s); indices run from 0"
    if event["kind"] == "regenerated" and value and value["replaced_by"] not in known:
        return f"value.replaced_by: interaction {value['replaced_by']!r} not found"
    return None


def _interaction(row: sa.Row) -> dict[str, Any]:
    out = dict(row._mapping)
    out.pop("payload_hash")
    out["user"] = out.pop("user_id")
    out["session"] = out.pop("session_id")
    out["created_at"] = utc(out["created_at"])
    return out


def _event(row: sa.Row) -> dict[str, Any]:
    out = dict(row._mapping)
    out.pop("payload_hash")
    out["created_at"] = utc(out["created_at"])
    out["received_at"] = utc(out["received_at"])
    return out
