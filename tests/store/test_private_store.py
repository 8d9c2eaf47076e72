"""The store's files are private to their owner, and database errors never show the values they held."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.postgres import free_port
from tuneloop.cli import main
from tuneloop.demo import start_server
from tuneloop.errors import ConfigError
from tuneloop.store.repository import Store
from tuneloop.store.schema import tenants


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_store_and_its_wal_are_private(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    store = Store(f"sqlite:///{home / 'tuneloop.db'}")
    store.create_tenant("acme")  # writes, so the -wal and -shm files exist while the store is open
    modes = {p.name: _mode(p) for p in home.iterdir()}
    store.close()
    assert _mode(home) == _mode(home.parent) == 0o700
    assert modes == {"tuneloop.db": 0o600, "tuneloop.db-wal": 0o600, "tuneloop.db-shm": 0o600}


def test_a_world_readable_store_from_before_is_made_private_on_open(tmp_path: Path) -> None:
    db = tmp_path / "tuneloop.db"
    Store(f"sqlite:///{db}").close()
    db.chmod(0o644)
    Store(f"sqlite:///{db}").close()
    assert _mode(db) == 0o600


def test_a_database_error_does_not_show_the_values_of_the_statement(store: Store) -> None:
    row = {
        "id": "t-1",
        "name": "jane.doe@example.com",
        "redaction": "redact",
        "created_at": datetime.now(UTC),
    }
    with store.write() as conn:
        conn.execute(tenants.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError) as failure, store.write() as conn:
        conn.execute(tenants.insert().values(**row))
    assert "INSERT INTO tenants" in str(failure.value)
    assert "jane.doe@example.com" not in str(failure.value)


def test_a_database_that_cannot_be_created_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(ConfigError, match=r"cannot create the database .*not-a-folder"):
        Store(f"sqlite:///{tmp_path / 'not-a-folder' / 'tuneloop.db'}")


def test_init_makes_a_world_readable_home_from_before_private(tuneloop_home: Path) -> None:
    tuneloop_home.mkdir(mode=0o755)
    tuneloop_home.chmod(0o755)
    (tuneloop_home / "tuneloop.db").touch(mode=0o644)
    (tuneloop_home / "tuneloop.db").chmod(0o644)
    assert main(["init"]) == 0
    assert (_mode(tuneloop_home), _mode(tuneloop_home / "tuneloop.db")) == (0o700, 0o600)


def test_serve_makes_a_home_made_beforehand_private(tuneloop_home: Path) -> None:
    tuneloop_home.mkdir(mode=0o755)
    tuneloop_home.chmod(0o755)  # as `mkdir -p` or a container volume leaves it
    server = start_server(tuneloop_home, free_port(), {"TUNELOOP_BACKEND": "none"})
    try:
        assert _mode(tuneloop_home) == 0o700
    finally:
        server.terminate()
        server.wait(timeout=30)
