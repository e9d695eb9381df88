"""Logical decoding as a second capture mode: the mode row, the publication's functions, the consumer's
progress and its batch writer.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0018_logical_capture.sql")


def downgrade() -> None:
    raise NotImplementedError("0016 is not reversible: restore from a backup taken before upgrading")
