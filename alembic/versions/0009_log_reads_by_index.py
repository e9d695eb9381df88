"""Log reads by index range per transaction, whatever the size of the log.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0011_log_reads_by_index.sql")


def downgrade() -> None:
    raise NotImplementedError("0009 is not reversible: restore from a backup taken before upgrading")
