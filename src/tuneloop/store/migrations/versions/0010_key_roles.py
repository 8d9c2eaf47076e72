"""roles: every API key has a role (existing tenant keys become operators, admin keys admins), and a
tenant's loop can be paused

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), server_default="operator", nullable=False)
        )
    op.execute("UPDATE api_keys SET role = 'admin' WHERE is_admin")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("is_admin")
    # A session's role is its key's, read through the join that already checks the key is not revoked.
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.drop_column("is_admin")
    op.create_table(
        "loop_pauses",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("paused_by", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id"),
    )


def downgrade() -> None:
    op.drop_table("loop_pauses")
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(
        "UPDATE dashboard_sessions SET is_admin = true WHERE key_hash IN "
        "(SELECT key_hash FROM api_keys WHERE role = 'admin')"
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("UPDATE api_keys SET is_admin = true WHERE role = 'admin'")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
