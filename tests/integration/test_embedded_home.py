"""The embedded cluster's location: a clone in a private (0700) directory still runs, and the place it
moves to cannot be taken over by another local user."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from app.services.embedded_home import UnsafeLocation, embedded_home, locate, project_key
from app.services.embedded_postgres import EmbeddedPostgres
from tests.support.processes import PROJECT_ROOT

NOBODY = pwd.getpwnam("nobody")
RUN_AS = (NOBODY.pw_uid, NOBODY.pw_gid)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A `mktemp -d` directory: mode 0700, which `nobody` cannot traverse."""
    path = Path(tempfile.mkdtemp(prefix="fluxbase-private-"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def root() -> Iterator[Path]:
    """A stand-in for /var/lib: a directory owned by this user that `nobody` can traverse."""
    path = Path(tempfile.mkdtemp(prefix="fluxbase-root-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _copy_project(destination: Path) -> Path:
    """What `make run` needs of a clone: the package and the migrations, with the frozen SQL files they run
    (alembic/versions/sql/; sql/, the current schema, is for readers and the schema test)."""
    project = destination / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("app", "alembic"):
        shutil.copytree(PROJECT_ROOT / name, project / name, ignore=ignore)
    shutil.copy2(PROJECT_ROOT / "alembic.ini", project / "alembic.ini")
    return project


def _run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    # `python -m` from the copy imports the copy's app (the current directory comes first on sys.path).
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_a_clone_in_a_private_directory_runs_the_embedded_server(private_dir: Path) -> None:
    project = _copy_project(private_dir)
    home = embedded_home(project)
    try:
        first = _run(project, "migrate")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"(data in {home.data_dir})" in first.stdout
        if os.geteuid() != 0:
            # The server runs as this user, which can reach its own clone: nothing moves.
            assert home.data_dir == project / ".data" / "postgres"
            assert (home.data_dir / "PG_VERSION").is_file()
            return
        # As root: `nobody` cannot reach the clone, so the cluster lives in the state directory, and the
        # run says where and why.
        assert not home.data_dir.is_relative_to(private_dir)
        assert home.data_dir.parent.name == project_key(project)
        assert f"cannot traverse {private_dir} (drwx------)" in first.stdout
        assert f"the embedded cluster lives in {home.data_dir}" in first.stdout
        assert not (project / ".data").exists()
        data = home.data_dir.stat()
        assert (data.st_uid, stat.S_IMODE(data.st_mode)) == (NOBODY.pw_uid, 0o700)
        for directory in (home.data_dir.parent, home.data_dir.parent.parent):
            st = directory.stat()
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755), directory
        assert "embedded_postgres initialised" in first.stderr

        # A later run reuses the cluster (no second initdb), with its migrated schema and its port.
        second = _run(project, "migrate")
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"(data in {home.data_dir})" in second.stdout
        assert "embedded_postgres initialised" not in second.stderr
        port = int((home.data_dir.parent / "postgres.port").read_text())
        with EmbeddedPostgres(home.data_dir) as server, psycopg.connect(server.url) as conn:
            row = conn.execute("SELECT to_regnamespace('fluxbase_realtime') IS NOT NULL").fetchone()
            assert row == (True,)
            assert server.url.endswith(f":{port}/postgres")
    finally:
        if home.data_dir != project / ".data" / "postgres":
            shutil.rmtree(home.data_dir.parent, ignore_errors=True)


def test_the_same_project_gets_the_same_directory_and_another_project_another(
    private_dir: Path, root: Path
) -> None:
    first = locate(private_dir / "a", RUN_AS, roots=[root])
    assert first.moved_because is not None and "cannot traverse" in first.moved_because
    assert locate(private_dir / "a", RUN_AS, roots=[root]) == first
    other = locate(private_dir / "b", RUN_AS, roots=[root])
    assert other.data_dir != first.data_dir
    assert first.data_dir.parent.parent == other.data_dir.parent.parent == root / "fluxbase-realtime"
    # A directory the server user can reach keeps the cluster where it always was.
    reachable = root / "reachable"
    reachable.mkdir(mode=0o755)
    assert locate(reachable, RUN_AS, roots=[root]).data_dir == reachable / ".data" / "postgres"
    assert locate(private_dir, None, roots=[root]).data_dir == private_dir / ".data" / "postgres"


def test_a_shared_root_gets_a_directory_per_user_and_needs_its_sticky_bit(
    private_dir: Path, root: Path
) -> None:
    root.chmod(0o1777)
    home = locate(private_dir, RUN_AS, roots=[root])
    assert home.data_dir.parent.parent == root / f"fluxbase-realtime-{os.geteuid()}"
    root.chmod(0o777)  # anyone could rename our directory away and put theirs in its place
    with pytest.raises(UnsafeLocation, match="without the sticky bit"):
        locate(private_dir / "other", RUN_AS, roots=[root])


def test_a_directory_planted_by_someone_else_is_refused(private_dir: Path, root: Path) -> None:
    base = root / "fluxbase-realtime"
    elsewhere = root / "attacker"
    elsewhere.mkdir()
    # A symlink in its place: refused, and nothing is created where it points.
    base.symlink_to(elsewhere)
    with pytest.raises(UnsafeLocation, match=r"not a directory \(a symlink\?\).*DATABASE_URL"):
        locate(private_dir, RUN_AS, roots=[root])
    assert list(elsewhere.iterdir()) == []
    base.unlink()
    # A directory others may write to (they could swap the project's directory inside it).
    base.mkdir()
    base.chmod(0o777)
    with pytest.raises(UnsafeLocation, match="writable by other users"):
        locate(private_dir, RUN_AS, roots=[root])
    if os.geteuid() == 0:
        # A directory of another user's, precreated to receive the cluster.
        base.chmod(0o755)
        os.chown(base, NOBODY.pw_uid, NOBODY.pw_gid)
        with pytest.raises(UnsafeLocation, match=f"belongs to uid {NOBODY.pw_uid}"):
            locate(private_dir, RUN_AS, roots=[root])
        # The project's own directory planted inside a sound base is refused as well.
        os.chown(base, 0, 0)
        planted = base / project_key(private_dir)
        planted.mkdir()
        os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)
        with pytest.raises(UnsafeLocation, match=f"{planted} belongs to uid"):
            locate(private_dir, RUN_AS, roots=[root])
    # The next root is tried when one is refused.
    fallback = root / "fallback"
    fallback.mkdir(mode=0o755)
    home = locate(private_dir, RUN_AS, roots=[root, fallback])
    assert home.data_dir == fallback / "fluxbase-realtime" / project_key(private_dir) / "postgres"
