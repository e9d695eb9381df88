"""Report tables with row-level security as 'protected' so that subscriptions to them are refused.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from app.migrations import run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0004_refuse_rls_tables.sql")


def downgrade() -> None:
    # 0001's table_status, which did not look at row-level security.
    op.execute(
        """
        CREATE OR REPLACE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text)
        RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
            SELECT CASE
                WHEN rel IS NULL THEN 'missing'
                WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel
                             AND t.tgfoid = 'public.notify_table_change()'::regprocedure) THEN 'enabled'
                ELSE 'disabled'
            END
            FROM (SELECT fluxbase_realtime.find_table(schema_name, table_name) AS rel) AS found
        $$
        """
    )
