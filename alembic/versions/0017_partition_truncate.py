"""A TRUNCATE naming one partition of a realtime partitioned table reaches the root's channel; the logical
consumer's cheaper batch writer.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0017_partition_truncate.sql")


def downgrade() -> None:
    raise NotImplementedError("0017 is not reversible: restore from a backup taken before upgrading")
