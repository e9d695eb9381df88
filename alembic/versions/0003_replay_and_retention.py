"""Replay and retention: tables per numbered transaction, table_changes_after, oldest_retained_id, pruning.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0005_replay_and_retention.sql")


def downgrade() -> None:
    raise NotImplementedError("0003 is not reversible: restore from a backup taken before upgrading")
