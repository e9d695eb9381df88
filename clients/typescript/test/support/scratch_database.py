"""A migrated scratch database for the JavaScript tests, on the same PostgreSQL the Python tests use.

Prints one JSON line, {"database_url": ..., "params": {host, port, dbname, ...}}, then holds the database
until its standard input closes (the test process exits, however it exits), and drops it. PostgreSQL is
TEST_DATABASE_URL's server, or an embedded one (as tests/conftest.py resolves it, without Docker).

Run from the repository root: `.venv/bin/python clients/typescript/test/support/scratch_database.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

import psycopg

from app import migrations
from tests.support.databases import scratch_database


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from app.services.embedded_postgres import EmbeddedPostgres

    # As in tests/conftest.py: under /tmp, mode 755, so that `nobody` (when run as root) can reach it.
    work = Path(tempfile.mkdtemp(prefix="fluxbase-js-pg-", dir="/tmp"))
    work.chmod(0o755)
    try:
        with EmbeddedPostgres(work / "postgres") as server:
            yield server.url
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    with postgres_server() as server_url, scratch_database(server_url) as database_url:
        migrations.upgrade(database_url)
        params = psycopg.conninfo.conninfo_to_dict(database_url)
        # The server takes the conninfo as it is; node-postgres takes its parts.
        print(json.dumps({"database_url": database_url, "params": params}), flush=True)
        sys.stdin.read()  # until the test process closes it


if __name__ == "__main__":
    main()
