"""keyed identifiers: idempotency digests become HMACs; user, session and rater become keyed hashes;
metadata keys and the model field are redacted (tenants whose redaction is `off` keep identifiers raw)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:40:00

"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from tuneloop.errors import ConfigError

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 500
# Frozen here: later changes to schema.py must not change what this migration did.
interactions = sa.table(
    "interactions",
    sa.column("tenant_id"),
    sa.column("id"),
    sa.column("user_id"),
    sa.column("session_id"),
    sa.column("model"),
    sa.column("metadata", sa.JSON),
    sa.column("payload_hash"),
)
feedback = sa.table(
    "feedback",
    sa.column("tenant_id"),
    sa.column("id"),
    sa.column("rater"),
    sa.column("metadata", sa.JSON),
    sa.column("payload_hash"),
)


def upgrade() -> None:
    conn = op.get_bind()
    if not any(conn.execute(sa.select(t.c.id).limit(1)).first() for t in (interactions, feedback)):
        return
    secret = context.config.attributes.get("secret")
    if not secret:
        raise ConfigError(
            "this store holds captures from before identifiers and digests were keyed; migrate it once "
            "with the server's secret: run `tuneloop init` with the server's TUNELOOP_HOME (or "
            "TUNELOOP_REDACTION_KEY)"
        )
    from tuneloop.capture.metadata_keys import keys_of, with_keys
    from tuneloop.capture.redact import Redactor
    from tuneloop.store.pseudonyms import Pseudonyms

    pseudonyms = Pseudonyms(secret)
    redactor = Redactor(hash_key=secret)
    modes = dict(conn.execute(sa.text("SELECT id, redaction FROM tenants")).all())

    def redact_names(mode: str, metadata: Any, model: str | None = None) -> tuple[str | None, Any]:
        """The model field and metadata keys through the redactor, as capture now does."""
        if not metadata and model is None:
            return model, metadata
        model, keys = redactor.redact_json([model, keys_of(metadata)], mode)
        return model, with_keys(metadata, keys)

    for row in _rows(conn, interactions):
        mode = modes[row.tenant_id]
        values = {"payload_hash": pseudonyms.rekey(row.payload_hash)}
        if mode != "off":
            model, metadata = redact_names(mode, row.metadata, row.model)
            values |= {
                "user_id": pseudonyms.identifier(row.user_id),
                "session_id": pseudonyms.identifier(row.session_id),
                "model": model,
                "metadata": metadata,
            }
        _update(conn, interactions, row, values)
    for row in _rows(conn, feedback):
        mode = modes[row.tenant_id]
        values = {"payload_hash": pseudonyms.rekey(row.payload_hash)}
        if mode != "off":
            _, metadata = redact_names(mode, row.metadata)
            values |= {"rater": pseudonyms.identifier(row.rater), "metadata": metadata}
        _update(conn, feedback, row, values)


def _rows(conn: sa.Connection, table: sa.TableClause) -> Iterator[sa.Row]:
    """Every row, in chunks by primary key, so updates between chunks do not disturb the reading."""
    key = sa.tuple_(table.c.tenant_id, table.c.id)
    last: tuple[str, str] | None = None
    while True:
        query = sa.select(table).order_by(table.c.tenant_id, table.c.id).limit(CHUNK)
        if last is not None:
            query = query.where(key > sa.tuple_(*map(sa.literal, last)))
        chunk = conn.execute(query).all()
        yield from chunk
        if len(chunk) < CHUNK:
            return
        last = (chunk[-1].tenant_id, chunk[-1].id)


def _update(conn: sa.Connection, table: sa.TableClause, row: sa.Row, values: dict[str, Any]) -> None:
    where = (table.c.tenant_id == row.tenant_id, table.c.id == row.id)
    conn.execute(table.update().where(*where).values(**values))


def downgrade() -> None:
    """Nothing to undo in the schema; keyed hashes cannot be turned back into what they hid."""
