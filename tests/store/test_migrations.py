from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tuneloop.store.repository import Store
from tuneloop.store.schema import metadata


def test_migrations_build_exactly_the_declared_schema(db_url: str) -> None:
    store = Store(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert diff == [], f"schema.py and the migrations disagree; add a migration: {diff}"
