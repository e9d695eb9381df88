"""Sequencer passes find new transactions by index, whatever the log statistics say.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0012_sequencer_by_index.sql")


def downgrade() -> None:
    raise NotImplementedError("0010 is not reversible: restore from a backup taken before upgrading")
