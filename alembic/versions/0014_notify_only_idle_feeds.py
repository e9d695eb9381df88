"""Writers skip NOTIFY while a change feed polls; passes number transactions by commit timestamp.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0016_notify_only_idle_feeds.sql")


def downgrade() -> None:
    raise NotImplementedError("0014 is not reversible: restore from a backup taken before upgrading")
