"""pending feedback: events that arrive before their interaction wait (bounded, expiring) to be attached

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 19:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_feedback",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    with op.batch_alter_table("pending_feedback", schema=None) as batch_op:
        batch_op.create_index("ix_pending_feedback_tenant_target", ["tenant_id", "target"], unique=False)
        batch_op.create_index("ix_pending_feedback_tenant_expires", ["tenant_id", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pending_feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_feedback_tenant_expires")
        batch_op.drop_index("ix_pending_feedback_tenant_target")
    op.drop_table("pending_feedback")
