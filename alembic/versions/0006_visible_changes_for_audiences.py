"""visible_changes_for: check every audience of a role in one call per batch.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from app.migrations import run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0008_visible_changes_for_audiences.sql")


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION fluxbase_realtime.visible_changes_for(text, jsonb[], text, text, jsonb[], jsonb[])"
    )
