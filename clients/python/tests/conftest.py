"""The Python client's tests run against the project's real server: they share its fixtures (every one
the shared ones depend on, so that a fixture added there cannot go missing here)."""

from tests.conftest import (
    capture_mode,
    database_url,
    db,
    logical_database_url,
    logical_server,
    logical_server_url,
    server,
    server_url,
    table,
    trigger_database_url,
    trigger_server,
)

__all__ = [
    "capture_mode",
    "database_url",
    "db",
    "logical_database_url",
    "logical_server",
    "logical_server_url",
    "server",
    "server_url",
    "table",
    "trigger_database_url",
    "trigger_server",
]
