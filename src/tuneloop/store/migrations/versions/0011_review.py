"""review: tasks, queued items and reviewers' assignments with their labels

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 19:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"])


def upgrade() -> None:
    op.create_table(
        "review_tasks",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("guidelines", sa.Text(), nullable=False),
        sa.Column("overlap", sa.Integer(), nullable=False),
        sa.Column("assignment_minutes", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk(),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_table(
        "review_items",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("interaction_id", sa.String(length=128), nullable=False),
        sa.Column("other_interaction_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("added_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _tenant_fk(),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_index("ix_review_items_tenant_task", "review_items", ["tenant_id", "task_id"])
    op.create_table(
        "review_assignments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("label", sa.JSON(), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        _tenant_fk(),
        sa.PrimaryKeyConstraint("tenant_id", "item_id", "reviewer"),
    )
    op.create_index("ix_review_assignments_tenant_task", "review_assignments", ["tenant_id", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_review_assignments_tenant_task", table_name="review_assignments")
    op.drop_table("review_assignments")
    op.drop_index("ix_review_items_tenant_task", table_name="review_items")
    op.drop_table("review_items")
    op.drop_table("review_tasks")
