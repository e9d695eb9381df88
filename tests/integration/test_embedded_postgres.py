"""Integration tests for the embedded PostgreSQL fallback; they start a real server from local binaries."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from app.services import embedded_postgres
from app.services.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError, find_server_binaries


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A directory the unprivileged server user can traverse (pytest's tmp_path may sit under mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="embpg-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _query(url: str, sql: str) -> object:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_find_server_binaries_returns_directory_with_server_programs() -> None:
    bin_dir = find_server_binaries()
    assert bin_dir is not None
    for name in ("initdb", "pg_ctl", "postgres"):
        assert (bin_dir / name).is_file(), name


def test_start_reuse_and_stop(work_dir: Path) -> None:
    data_dir = work_dir / "postgres"
    owner = EmbeddedPostgres(data_dir)
    try:
        url = owner.start()
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        assert owner.url == url
        assert owner.started_here
        assert (data_dir / "PG_VERSION").is_file()
        assert (work_dir / "postgres.port").read_text().strip() == url.rsplit(":", 1)[1].split("/")[0]
        if os.geteuid() == 0:
            assert data_dir.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert _query(url, "SELECT 1") == 1
        assert _query(url, "SHOW listen_addresses") == "127.0.0.1"
        assert _query(url, "SHOW max_connections") == "200"
        assert _query(url, "SHOW unix_socket_directories") == str(work_dir / "postgres-sock")

        second = EmbeddedPostgres(data_dir)
        assert second.start() == url
        assert not second.started_here
        second.stop()  # does not own the server, so it must keep running
        assert _query(url, "SELECT 1") == 1
    finally:
        owner.stop()

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    owner.stop()  # already stopped: must not raise

    # A restart reuses the recorded port, so the URL stays the same; the context manager stops it again.
    with EmbeddedPostgres(data_dir) as again:
        assert again.url == url
        assert again.started_here
        assert _query(url, "SELECT 2") == 2
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_untraversable_parent_is_rejected_when_root(work_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="needs root: initdb privilege drop")
    locked = work_dir / "locked"
    locked.mkdir()
    locked.chmod(0o700)
    with pytest.raises(EmbeddedPostgresError, match=r"cannot traverse .*locked.*DATABASE_URL"):
        EmbeddedPostgres(locked / "deeper" / "postgres").start()
    assert list(locked.iterdir()) == []


def test_missing_binaries_error_names_alternatives(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_postgres, "find_server_binaries", lambda: None)
    with pytest.raises(EmbeddedPostgresError, match="apt install postgresql") as excinfo:
        EmbeddedPostgres(work_dir / "postgres").start()
    assert "pgserver" in str(excinfo.value)
    assert "DATABASE_URL" in str(excinfo.value)
    assert not (work_dir / "postgres").exists()


def test_restart_cuts_sessions_keeps_port_and_data(work_dir: Path) -> None:
    with EmbeddedPostgres(work_dir / "postgres") as server:
        url = server.url
        started = _query(url, "SELECT pg_postmaster_start_time()")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n integer)")
            conn.execute("INSERT INTO kept VALUES (42)")
            server.restart()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert server.url == url
        assert server.started_here
        assert _query(url, "SELECT n FROM kept") == 42
        assert _query(url, "SELECT pg_postmaster_start_time()") != started
        assert _query(url, "SHOW unix_socket_directories") == str(work_dir / "postgres-sock")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_restart_refuses_a_server_it_did_not_start(work_dir: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="not started"):
        EmbeddedPostgres(work_dir / "postgres").restart()
    with EmbeddedPostgres(work_dir / "postgres") as owner:
        reused = EmbeddedPostgres(work_dir / "postgres")
        reused.start()
        with pytest.raises(EmbeddedPostgresError, match="not started here"):
            reused.restart()
        assert _query(owner.url, "SELECT 1") == 1
