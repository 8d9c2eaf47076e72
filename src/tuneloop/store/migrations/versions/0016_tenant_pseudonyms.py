"""tenant pseudonyms: a tenant's identifiers keyed under its own subkey of the server secret

Tenants that exist already keep the server-wide key their stored identifiers were made with (`server`), so
their rows still join; tenants created from now on get `tenant` (repository.create_tenant).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 15:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pseudonyms", sa.String(length=16), nullable=False, server_default="server")
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("pseudonyms")
