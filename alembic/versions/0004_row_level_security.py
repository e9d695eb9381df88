"""Row-level security per subscriber: roles, table_access, visible_changes, rls flag on changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0006_row_level_security.sql")


def downgrade() -> None:
    raise NotImplementedError("0004 is not reversible: restore from a backup taken before upgrading")
