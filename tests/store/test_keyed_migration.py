"""Migration 0008 keys the digests and identifiers of rows captured before it, with the server secret; 0016
keeps those tenants on the server-wide key while new tenants get their own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.errors import ConfigError
from tuneloop.store.engine import MIGRATIONS, create_engine, migrate
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, payload_hash
from tuneloop.store.schema import feedback, interactions, tenants

SECRET = b"server-secret"
PAYLOAD = {"id": "int-1", "messages": [{"role": "user", "content": "Call me on <PHONE_NUMBER>"}]}


def _old_store(url: str) -> sa.Engine:
    """A store at revision 0007 holding rows as they were captured then: raw ids, unkeyed digests."""
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
        for tenant, mode in (("t", "redact"), ("o", "off")):
            at = datetime(2026, 1, 1, tzinfo=UTC)
            conn.execute(tenants.insert().values(id=tenant, name=tenant, redaction=mode, created_at=at))
            common = {"tenant_id": tenant, "payload_hash": payload_hash(PAYLOAD), "created_at": at}
            conn.execute(
                interactions.insert().values(
                    id="int-1",
                    user_id="jane@example.com",
                    session_id="s-1",
                    messages=[],
                    response="a",
                    choices=[],
                    model="ft:bob.smith@example.com",
                    metadata={"kim.lee@example.org": 1, "plan": "pro"},
                    **common,
                )
            )
            conn.execute(
                feedback.insert().values(
                    id="fb-1",
                    interaction_id="int-1",
                    kind="thumbs",
                    value=1,
                    rater="ann@example.com",
                    source="labeler",
                    received_at=at,
                    **common,
                )
            )
        conn.commit()
    return engine


def test_old_rows_get_keyed_digests_and_identifiers(db_url: str) -> None:
    engine = _old_store(db_url)
    migrate(engine, SECRET)
    keyed = Pseudonyms(SECRET)
    with engine.connect() as conn:
        rows = {r.tenant_id: r for r in conn.execute(sa.select(interactions))}
        raters = dict(conn.execute(sa.select(feedback.c.tenant_id, feedback.c.rater)).all())
        digests = set(conn.execute(sa.select(feedback.c.payload_hash)).scalars())
    engine.dispose()
    # A client retrying an event it sent before the upgrade still gets "duplicate", not a conflict.
    assert digests == {rows["t"].payload_hash} == {keyed.digest(PAYLOAD)}
    assert (rows["t"].user_id, rows["t"].session_id) == (
        keyed.identifier("jane@example.com"),
        keyed.identifier("s-1"),
    )
    assert raters["t"] == keyed.identifier("ann@example.com")
    assert rows["t"].model == "ft:<EMAIL_ADDRESS>"
    assert rows["t"].metadata == {"<EMAIL_ADDRESS>": 1, "plan": "pro"}
    # A tenant with redaction off keeps what it sent; only its digests are keyed.
    assert (rows["o"].user_id, raters["o"], rows["o"].model) == (
        "jane@example.com",
        "ann@example.com",
        "ft:bob.smith@example.com",
    )


def test_old_rows_without_the_secret_are_refused_with_the_fix(db_url: str) -> None:
    engine = _old_store(db_url)
    with pytest.raises(ConfigError, match="tuneloop init"):
        migrate(engine)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT user_id FROM interactions")).scalars().first() == "jane@example.com"
        )
    engine.dispose()


def test_tenants_from_before_keep_the_server_wide_pseudonyms_their_rows_were_made_with(db_url: str) -> None:
    engine = _old_store(db_url)
    migrate(engine, SECRET)
    engine.dispose()
    store = Store(db_url, secret=SECRET)
    old = store.for_tenant(store.tenant_by_name("t"))
    new = store.for_tenant(store.create_tenant("new")[0])
    capture = Capture(Redactor(), Pseudonyms(SECRET))
    # An erasure of jane, or a lookup of her interaction by its id, still finds the rows stored before.
    assert capture.identifier(old, "jane@example.com") == old.interactions()[0]["user"]
    assert capture.identifier(new, "jane@example.com") != old.interactions()[0]["user"]
    assert (old.tenant.pseudonyms, new.tenant.pseudonyms) == ("server", "tenant")
    store.close()
