"""Drop visible_changes: visible_changes_for checks one audience as well as many.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0009_one_policy_check_function.sql")


def downgrade() -> None:
    raise NotImplementedError("0007 is not reversible: restore from a backup taken before upgrading")
