"""Change capture: change log, sequencer, notify_table_change(), enable_realtime / disable_realtime.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from app.migrations import run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0001_change_log.sql")
    run_sql_file("0002_capture.sql")
    run_sql_file("0003_sequencer.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.enable_realtime(text, text)")
    op.execute("DROP FUNCTION IF EXISTS public.disable_realtime(text, text)")
    op.execute("DROP FUNCTION IF EXISTS public.notify_table_change() CASCADE")
    op.execute("DROP SCHEMA IF EXISTS fluxbase_realtime CASCADE")
