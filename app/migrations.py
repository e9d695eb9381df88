"""Applying the Alembic migrations from code.

Each migration runs its own frozen SQL files, alembic/versions/sql/: history, never edited. The current
schema, one definition per object, is sql/ (see sql/README.md); a test keeps the two equal.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The migrations' frozen copies: what each one ran when it was written, byte for byte.
MIGRATION_SQL = PROJECT_ROOT / "alembic" / "versions" / "sql"


def alembic_config(database_url: str) -> Config:
    ini = PROJECT_ROOT / "alembic.ini"
    if not ini.is_file():
        raise RuntimeError(f"alembic.ini not found at {ini}: run from a source checkout (pip install -e .)")
    config = Config(str(ini))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str) -> None:
    """Bring the database to the newest schema; safe to run from several instances at once."""
    command.upgrade(alembic_config(database_url), "head")


def run_sql_file(name: str) -> None:
    """Run a migration's frozen file (alembic/versions/sql/) on the current migration's connection, verbatim.

    It goes straight to the psycopg connection: no parameter parsing, so `%` in format() and `:` in
    casts reach PostgreSQL untouched, and one file may hold several statements.
    """
    from alembic import op

    dbapi_connection = op.get_bind().connection.dbapi_connection
    if dbapi_connection is None:
        raise RuntimeError("the migration connection is closed")
    dbapi_connection.execute((MIGRATION_SQL / name).read_text())
