"""One statement per change feed wake-up: the sequencer pass and the first read.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0014_sequence_and_read.sql")


def downgrade() -> None:
    raise NotImplementedError("0012 is not reversible: restore from a backup taken before upgrading")
