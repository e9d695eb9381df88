"""Partitioned tables report their own name, not their partitions'.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0013_partitions_report_their_root.sql")


def downgrade() -> None:
    raise NotImplementedError("0011 is not reversible: restore from a backup taken before upgrading")
