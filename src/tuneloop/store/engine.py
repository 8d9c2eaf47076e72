"""Engine creation (SQLite pragmas, PostgreSQL pool and lock timeout), migration, and busy-store errors."""

from __future__ import annotations

import fcntl
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from tuneloop.errors import ConfigError, ServiceUnavailable
from tuneloop.private_files import private_dir, private_file, restrict_new_files, tighten

MIGRATIONS = Path(__file__).parent / "migrations"
Synchronous = Literal["normal", "full"]
# SQLite's "locked"/"busy" messages, and PostgreSQL's SQLSTATEs for waits cut short (lock_timeout,
# statement_timeout, deadlock, serialization) or a server refusing connections for now.
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
_PG_BUSY = {"55P03", "57014", "40P01", "40001", "53300", "57P03"}


def create_engine(
    url: str,
    *,
    busy_timeout: float = 30.0,
    pool_size: int = 16,
    synchronous: Synchronous = "normal",
) -> sa.Engine:
    """An engine for `url` whose waits for a lock or a pooled connection end after `busy_timeout` s.

    SQLite gets WAL, `synchronous` (normal: a power loss may drop the last commits; full: fsync each
    commit) and write transactions that lock up front. The pool holds `pool_size` connections plus a few
    for background work; callers that size their own concurrency to `pool_size` never wait on it.

    A process that opens the store handles personal data: from here on everything it creates is private
    (umask 077), and a SQLite file, with its -wal and -shm files, is mode 0600 in a 0700 folder.
    """
    restrict_new_files()
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": 4, "pool_timeout": busy_timeout}
    if parsed.get_backend_name() != "sqlite":
        # lock_timeout, not statement_timeout: a long analytical read is fine, waiting on a lock is not.
        lock_ms = max(1, math.ceil(busy_timeout * 1000))
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"options": f"-c lock_timeout={lock_ms}"},
            hide_parameters=True,
            **pool,
        )
    database = sqlite_file(url)
    if database is not None:
        _private_sqlite(database)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        # Errors and logs show statements, never their parameters (identifiers, digests, message text).
        hide_parameters=True,
        **(pool if database is not None else {}),  # an in-memory database lives in one connection
    )
    busy_ms = max(1, math.ceil(busy_timeout * 1000))

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Take over transaction control from pysqlite so BEGIN is emitted by us (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (the WAL is in the OS page cache) but a power loss
        # can drop the last commits; FULL fsyncs every commit and survives that too, at a cost per write.
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # A deferred transaction that reads and then writes can fail with SQLITE_BUSY when another
        # writer got in between; writers declare themselves and take the lock at BEGIN instead.
        immediate = conn.get_execution_options().get("sqlite_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class CommitTurns:
    """Group commits of processes sharing one SQLite file take turns on a file lock (`flock`) before BEGIN.

    Without it, `tuneloop serve --workers 2` took fewer requests a second than one worker: a writer that
    finds SQLite's lock taken sleeps in SQLite's busy handler (1, 2, 5, ... up to 100 ms between tries)
    while the other commits in about a millisecond. A waiter on the file lock is woken the moment the
    holder's commit ends, and a killed holder's lock goes with its process. Each thread opens its own
    descriptor, since flock excludes per open file, not per process.
    """

    def __init__(self, path: Path | None) -> None:
        """`path`: the lock file; None (PostgreSQL, an in-memory database) takes no turns."""
        self.path = path
        self._local = threading.local()
        self._opened: list[int] = []

    @contextmanager
    def __call__(self) -> Iterator[None]:
        """Hold the turn for the block (a no-op without a lock file)."""
        if self.path is None:
            yield
            return
        fd = getattr(self._local, "fd", None)
        if fd is None:
            fd = self._local.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._opened.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file's descriptors (the store is closing: no turn is held or taken again)."""
        self._local = threading.local()  # a later turn opens the file again rather than reuse a closed fd
        while self._opened:
            os.close(self._opened.pop())


SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite writes beside a database file


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite store URL; None for PostgreSQL or an in-memory database."""
    parsed = make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    return Path(parsed.database) if on_disk else None


def sqlite_files(url: str | URL) -> list[Path]:
    """A SQLite store's database file and the companions SQLite keeps beside it; none for PostgreSQL or an
    in-memory database."""
    database = sqlite_file(url)
    return [database, *(database.with_name(database.name + s) for s in SIDE_FILES)] if database else []


def commit_turns(url: str) -> CommitTurns:
    """The CommitTurns of the store at `url`: a lock file beside a SQLite database file, else none."""
    database = sqlite_file(url)
    return CommitTurns(database.with_name(f"{database.name}-commits.lock") if database else None)


def _private_sqlite(path: Path) -> None:
    """The database file created 0600 before SQLite opens it (SQLite gives its -wal and -shm files the
    database's mode), and files left by older versions taken down to 0600."""
    try:
        private_dir(path.parent)
        private_file(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the database {path} ({exc.strerror}); point TUNELOOP_HOME or TUNELOOP_DB_URL "
            "at a writable place"
        ) from exc
    for extra in SIDE_FILES:
        sibling = path.with_name(path.name + extra)
        if sibling.exists():
            tighten(sibling)


def unavailable(exc: BaseException, retry_after: int = 1) -> ServiceUnavailable | None:
    """The 503 for an error that means "the store is locked or busy, try again"; None for any other."""
    if isinstance(exc, sa.exc.TimeoutError):
        return ServiceUnavailable(
            "all database connections are busy; retry shortly", retry_after=retry_after, code="store_busy"
        )
    if not isinstance(exc, sa.exc.OperationalError):
        return None
    message = str(exc.orig).lower()
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    if any(m in message for m in _SQLITE_BUSY) or sqlstate in _PG_BUSY or sqlstate.startswith("08"):
        return ServiceUnavailable(
            "the database is locked or busy; retry shortly (writes are idempotent)",
            retry_after=retry_after,
            code="store_busy",
        )
    return None


@contextmanager
def opening(url: str) -> Iterator[None]:
    """Turn a store URL that cannot be used (malformed, driver missing, server unreachable) into one line."""
    try:
        yield
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError(
            f"the store URL {shown_url(url)} cannot be used ({_one_line(exc)}); give TUNELOOP_DB_URL as "
            "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from None
    except sa.exc.DBAPIError as exc:  # unreachable, refused, bad credentials, a bad connect argument
        raise ConfigError(f"cannot open the store {shown_url(url)}: {_one_line(exc.orig or exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def shown_url(url: str) -> str:
    """The store URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # unparsable: hide what sits where a password would
        return repr(re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)[:100])


def migrate(engine: sa.Engine, secret: bytes | None = None) -> None:
    """Bring the schema to the newest Alembic revision (idempotent).

    `secret` (the server's) lets migrations key the digests and identifiers of rows stored before 0008.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect().execution_options(sqlite_write=True) as conn:
        config.attributes["connection"] = conn
        config.attributes["secret"] = secret
        command.upgrade(config, "head")
        conn.commit()
