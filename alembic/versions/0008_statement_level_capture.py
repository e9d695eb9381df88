"""Statement-level capture triggers with transition tables; tables enabled before move to them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0010_statement_level_capture.sql")


def downgrade() -> None:
    raise NotImplementedError("0008 is not reversible: restore from a backup taken before upgrading")
