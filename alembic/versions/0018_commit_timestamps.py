"""Commit timestamps in `commits`, and reads of the log that return them (commit-to-send latency).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0018_commit_timestamps.sql")


def downgrade() -> None:
    raise NotImplementedError("0018 is not reversible: restore from a backup taken before upgrading")
