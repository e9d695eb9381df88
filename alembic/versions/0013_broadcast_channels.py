"""Broadcast channels: messages sent from the database, and who may use a channel.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from app.migrations import run_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0015_broadcast_channels.sql")


def downgrade() -> None:
    raise NotImplementedError("0013 is not reversible: restore from a backup taken before upgrading")
