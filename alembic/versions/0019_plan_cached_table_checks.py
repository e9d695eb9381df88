"""A subscribe's checks (table_status, table_access and what they call) in PL/pgSQL, whose plans are cached.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0019_plan_cached_table_checks.sql")


def downgrade() -> None:
    raise NotImplementedError("0019 is not reversible: restore from a backup taken before upgrading")
