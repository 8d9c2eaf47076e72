"""Engine settings on real databases: short lock and pool waits that end as 503s, SQLite durability."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.postgres import PostgresServer
from tuneloop.errors import ServiceUnavailable
from tuneloop.store.engine import commit_turns, create_engine, unavailable


def _sqlite(tmp_path: Path) -> str:
    path = tmp_path / "busy.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    return str(path)


def test_sqlite_write_behind_a_held_lock_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = _sqlite(tmp_path)
    outside = sqlite3.connect(path, isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", busy_timeout=0.3)
    started = time.monotonic()
    with (
        pytest.raises(sa.exc.OperationalError) as caught,
        engine.connect().execution_options(sqlite_write=True) as conn,
        conn.begin(),
    ):
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    waited = time.monotonic() - started
    outside.rollback()
    error = unavailable(caught.value)
    assert 0.25 < waited < 2 and isinstance(error, ServiceUnavailable)
    assert error.status == 503 and error.retry_after >= 1


def test_postgres_lock_wait_ends_at_the_busy_timeout_as_unavailable(postgres: PostgresServer) -> None:
    url = postgres.create_database("t_engine_lock")
    holder = create_engine(url)
    with holder.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine = create_engine(url, busy_timeout=0.3)
    with holder.connect() as held:
        held.exec_driver_sql("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError) as caught, engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        waited = time.monotonic() - started
        held.rollback()
    assert waited < 2 and isinstance(unavailable(caught.value), ServiceUnavailable)
    engine.dispose()
    holder.dispose()


def test_exhausted_pool_waits_only_the_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{_sqlite(tmp_path)}", busy_timeout=0.3, pool_size=1)
    held = [engine.connect() for _ in range(5)]  # the pool and its 4 overflow connections
    started = time.monotonic()
    with pytest.raises(sa.exc.TimeoutError) as caught:
        engine.connect()
    assert time.monotonic() - started < 2
    assert isinstance(unavailable(caught.value), ServiceUnavailable)
    for conn in held:
        conn.close()


def test_other_store_errors_are_not_mistaken_for_a_busy_store(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{_sqlite(tmp_path)}")
    with pytest.raises(sa.exc.OperationalError) as caught, engine.begin() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert unavailable(caught.value) is None


@pytest.mark.parametrize(("setting", "pragma"), [("normal", 1), ("full", 2)])
def test_sqlite_synchronous_follows_the_setting(tmp_path: Path, setting: str, pragma: int) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", synchronous=setting)  # type: ignore[arg-type]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == pragma


def _take_turn_and_report(path: str, started: Any, ended: Any) -> None:
    with commit_turns(f"sqlite:///{path}")():
        started.set()
    ended.set()


def test_a_commit_turn_held_by_one_process_is_taken_by_another_the_moment_it_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    turns = commit_turns(url)
    context = multiprocessing.get_context("spawn")
    started, ended = context.Event(), context.Event()
    with turns():
        other = context.Process(
            target=_take_turn_and_report, args=(str(tmp_path / "shared.db"), started, ended)
        )
        other.start()
        assert not started.wait(1.5)  # the other process waits its turn
        released = time.monotonic()
    assert started.wait(10) and time.monotonic() - released < 1
    assert ended.wait(10)
    other.join(10)
    turns.close()
    assert commit_turns("sqlite:///:memory:").path is None
