"""TRUNCATE on a realtime table reaches its subscribers as one change.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0017_truncate.sql")


def downgrade() -> None:
    raise NotImplementedError("0015 is not reversible: restore from a backup taken before upgrading")
