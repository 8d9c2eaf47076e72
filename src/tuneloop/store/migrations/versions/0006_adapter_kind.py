"""registry: what a tenant trains is an adapter (version kind and loop stage `policy` -> `adapter`)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:40:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE versions SET kind = 'adapter' WHERE kind = 'policy'")
    op.execute("UPDATE loop_turns SET stage = 'adapter' WHERE stage = 'policy'")


def downgrade() -> None:
    op.execute("UPDATE versions SET kind = 'policy' WHERE kind = 'adapter'")
    op.execute("UPDATE loop_turns SET stage = 'policy' WHERE stage = 'adapter'")
