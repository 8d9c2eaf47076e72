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


def test_stored_policy_versions_and_turns_become_adapters(tmp_path) -> None:
    from alembic import command
    from alembic.config import Config

    from tuneloop.store.engine import MIGRATIONS, create_engine, migrate

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        conn.exec_driver_sql(
            "INSERT INTO tenants (id, name, redaction, created_at) "
            "VALUES ('t', 'acme', 'redact', '2026-01-01')"
        )
        conn.exec_driver_sql(
            "INSERT INTO versions (tenant_id, id, kind, state, base_model, metrics, created_at, updated_at) "
            "VALUES ('t', 'v-1', 'policy', 'production', 'base', '{}', '2026-01-01', '2026-01-01')"
        )
        conn.exec_driver_sql(
            "INSERT INTO loop_turns (tenant_id, turn, trigger, stage, report, started_at, updated_at) "
            "VALUES ('t', 1, 'manual', 'policy', '{}', '2026-01-01', '2026-01-01')"
        )
        conn.commit()

    migrate(engine)

    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT kind FROM versions").scalar() == "adapter"
        assert conn.exec_driver_sql("SELECT stage FROM loop_turns").scalar() == "adapter"
    engine.dispose()
