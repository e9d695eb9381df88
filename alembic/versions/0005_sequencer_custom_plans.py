"""Plan every sequencer pass with its actual horizon (no generic plan that scans the whole log).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from app.migrations import run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0007_sequencer_custom_plans.sql")


def downgrade() -> None:
    op.execute("ALTER FUNCTION fluxbase_realtime.sequence_commits() RESET plan_cache_mode")
