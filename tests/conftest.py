"""Test fixtures: one real PostgreSQL per run, a fresh database per run, real uvicorn servers.

PostgreSQL is resolved in this order: TEST_DATABASE_URL; a Docker engine through testcontainers; the
embedded server (local binaries or pgserver). If none can be had the run fails, saying how to provide
one: integration tests are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import sql

from app import migrations
from app.config import Settings
from tests.support.databases import scratch_database
from tests.support.modes import capture_settings, logical_database
from tests.support.server import ServerThread

# Hypothesis' deadline is a timing assertion: on a loaded machine (CI shares its cores) it fails tests
# whose logic is fine. Timings belong in bench/.
hypothesis_settings.register_profile("fluxbase", deadline=None)
hypothesis_settings.load_profile("fluxbase")

JWT_SECRET = "test-secret-" + "s" * 60  # 64+ bytes: long enough for HS512 too


def _docker_postgres() -> contextlib.AbstractContextManager[str] | None:
    """A testcontainers PostgreSQL, or None when no Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return None
    from testcontainers.postgres import PostgresContainer

    @contextlib.contextmanager
    def running() -> Iterator[str]:
        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()

    return running()


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    from app.services.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError

    # Under /tmp with mode 755: when tests run as root the server runs as `nobody`, which must reach it.
    work = Path(tempfile.mkdtemp(prefix="fluxbase-test-pg-", dir="/tmp"))
    work.chmod(0o755)
    try:
        with EmbeddedPostgres(work / "postgres") as server:
            yield server.url
    except EmbeddedPostgresError as error:
        pytest.fail(
            "no PostgreSQL for the integration tests: set TEST_DATABASE_URL "
            "(e.g. postgresql://postgres@127.0.0.1:5432/postgres), start a Docker engine, "
            f"or install PostgreSQL server binaries. Embedded server failed: {error}",
            pytrace=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server (its maintenance database URL) for the whole run."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    docker = _docker_postgres()
    with docker if docker is not None else _embedded_postgres() as resolved:
        yield resolved


@pytest.fixture(scope="session")
def trigger_database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this run, dropped at the end."""
    with scratch_database(server_url) as url:
        migrations.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def logical_server_url() -> Iterator[str]:
    """A private cluster with wal_level=logical (the embedded machinery's settings), for logical mode: the
    shared test server keeps its configuration."""
    with _embedded_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def logical_database_url(logical_server_url: str) -> Iterator[str]:
    """A migrated database on the logical cluster, already switched to logical capture (slot created)."""
    with logical_database(logical_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def capture_mode(request: pytest.FixtureRequest) -> str:
    """'trigger' unless a test is parametrized with both modes (tests.support.modes.BOTH_MODES)."""
    return str(getattr(request, "param", "trigger"))


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, capture_mode: str) -> str:
    """The run's database for the test's capture mode (each mode's is created once and kept)."""
    return str(request.getfixturevalue(f"{capture_mode}_database_url"))


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "jwt_secret": JWT_SECRET,
        "realtime_heartbeat_interval": 30.0,
        "log_level": "warning",
        # On in the tests' servers, so that the HTTP contract test (schemathesis) covers its API too.
        "realtime_inspector": True,
        **capture_settings(database_url),
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(scope="session")
def trigger_server(trigger_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(make_settings(trigger_database_url)) as running:
        yield running


@pytest.fixture(scope="session")
def logical_server(logical_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(make_settings(logical_database_url)) as running:
        yield running


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, capture_mode: str) -> ServerThread:
    """The shared server most tests talk to (default settings, JWT_SECRET set), in the test's mode."""
    running: ServerThread = request.getfixturevalue(f"{capture_mode}_server")
    return running


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection for the test's own SQL."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def table(db: psycopg.AsyncConnection) -> str:
    """A fresh realtime-enabled table `public.<unique>`: (id serial, name text, price numeric, data jsonb)."""
    name = f"items_{uuid.uuid4().hex[:10]}"
    await db.execute(
        sql.SQL(
            "CREATE TABLE public.{} (id serial PRIMARY KEY, name text, price numeric, data jsonb)"
        ).format(sql.Identifier(name))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    return name
