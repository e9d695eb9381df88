"""The Python client's tests run against the project's real server: they share its fixtures."""

from tests.conftest import database_url, db, server, server_url, table

__all__ = ["database_url", "db", "server", "server_url", "table"]
