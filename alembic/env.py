"""Alembic environment: SQLAlchemy is only the engine here; each migration runs plain SQL files of its own
(alembic/versions/sql/), and sql/ holds the current schema they add up to."""

from __future__ import annotations

import logging.config

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool, text

config = context.config
if config.attributes.get("configure_logging", True) and config.config_file_name:
    logging.config.fileConfig(config.config_file_name)


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if not url:
        from app.config import Settings

        url = Settings().database_url
    if not url:
        raise RuntimeError(
            "set DATABASE_URL (or run `fluxbase-realtime migrate`, which can start the embedded one)"
        )
    return str(url)


def run_migrations_online() -> None:
    url = _database_url()
    # The creator takes any libpq connection string, URL or key=value, exactly as the service does.
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        # Several instances may start at once; the first migrates, the others wait and find nothing to do.
        connection.execute(text("SELECT pg_advisory_lock(hashtext('fluxbase_realtime.migrations'))"))
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(hashtext('fluxbase_realtime.migrations'))"))
            connection.commit()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) mode is not supported: the migrations run SQL files on a connection")
run_migrations_online()
