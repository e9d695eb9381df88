"""Private PostgreSQL server for `make run` and the test suite when no DATABASE_URL is configured.

The server keeps its data in a project directory, listens on 127.0.0.1 only and trusts local
connections. It outlives the process that started it unless stopped, and a later `start()` on the
same data directory attaches to the running server instead of starting another one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import psycopg

from app.services.embedded_home import blocking_directory, describe

logger = logging.getLogger(__name__)

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_DISTRO_ROOT = Path("/usr/lib/postgresql")  # Debian/Ubuntu: one <version>/bin per installed major
_READY_TIMEOUT_S = 30.0
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL
_INSTALL_HINT = (
    "install the PostgreSQL server binaries (e.g. `apt install postgresql`) or `pip install pgserver`, "
    "or set DATABASE_URL to use an existing server"
)


class EmbeddedPostgresError(RuntimeError):
    """Raised when the private PostgreSQL server cannot be found, initialised or started."""


def find_server_binaries() -> Path | None:
    """Return the directory holding initdb, pg_ctl and postgres, or None if none is installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            result = subprocess.run(  # noqa: S603 - absolute path from PATH, fixed arguments
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(result.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass  # a broken pg_config must not hide the other locations
    versions = [p.name for p in _DISTRO_ROOT.glob("*") if re.fullmatch(r"\d+(\.\d+)*", p.name)]
    # Numeric sort so that 9.6 ranks below 10.
    versions.sort(key=lambda name: tuple(int(part) for part in name.split(".")), reverse=True)
    candidates += [_DISTRO_ROOT / version / "bin" for version in versions]
    initdb = shutil.which("initdb")
    if initdb:
        # Distributions symlink initdb onto PATH; pg_ctl and postgres sit next to the real file.
        candidates.append(Path(initdb).resolve().parent)
    # find_spec locates the package without importing it; importing pgserver has side effects.
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location, "pginstall", "bin") for location in spec.submodule_search_locations]
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in _REQUIRED_BINARIES):
            return candidate
    return None


def _bind_port(port: int) -> int | None:
    """Return the port (the OS's pick for 0) if 127.0.0.1 can bind it right now, else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The server sets SO_REUSEADDR too, so a port in TIME_WAIT from our last run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
        bound: int = sock.getsockname()[1]
        return bound


class EmbeddedPostgres:
    """A PostgreSQL server owned by this project, stored in `data_dir` and reachable on 127.0.0.1 only."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        system_user: str = "nobody",
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port_file = self.data_dir.parent / "postgres.port"
        self.log_file = self.data_dir.parent / "postgres.log"
        self.socket_dir = self.data_dir.parent / "postgres-sock"
        self.started_here = False
        self._requested_port = port
        self._system_user = system_user
        self._port: int | None = None
        self._bin_dir = Path()
        self._run_as: tuple[int, int] | None = None
        # Extra `-c name=value` settings for a server started here (not for one that is reused).
        self._server_settings = dict(server_settings or {})

    @property
    def url(self) -> str:
        """libpq URL of the server; valid between `start()` and `stop()`."""
        if self._port is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        return f"postgresql://postgres@127.0.0.1:{self._port}/postgres"

    def start(self) -> str:
        """Initialise the data directory if needed, start or reuse the server, and return its URL."""
        if self._port is not None:
            return self.url
        bin_dir = find_server_binaries()
        if bin_dir is None:
            raise EmbeddedPostgresError(f"no PostgreSQL server binaries found; {_INSTALL_HINT}")
        self._bin_dir = bin_dir
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root, so every server command runs unprivileged.
            try:
                entry = pwd.getpwnam(self._system_user)
            except KeyError:
                raise EmbeddedPostgresError(
                    f"running as root needs the unprivileged user {self._system_user!r}, which is missing; "
                    "run as a normal user or set DATABASE_URL"
                ) from None
            self._run_as = (entry.pw_uid, entry.pw_gid)
            self._require_traversable(bin_dir)
            self._require_traversable(self.data_dir.parent)
        self._prepare_directories()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        port = self._running_port()
        if port is None:
            port = self._start_server(self._choose_port())
        else:
            logger.info("embedded_postgres reusing port=%d data_dir=%s", port, self.data_dir)
        self._port = port
        try:
            self._wait_until_ready()
        except EmbeddedPostgresError:
            self.stop()  # do not leave a half-started server behind
            raise
        owned = self.started_here
        logger.info("embedded_postgres started url=%s data_dir=%s owned=%s", self.url, self.data_dir, owned)
        return self.url

    def stop(self) -> None:
        """Stop the server if this object started it (a reused server is left alone); never raises."""
        if self.started_here:
            try:
                result = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
                error = "" if result.returncode == 0 else (result.stderr or result.stdout).strip()
            except EmbeddedPostgresError as exc:
                error = str(exc)
            if error:
                logger.warning("embedded_postgres stop_failed data_dir=%s error=%r", self.data_dir, error)
            else:
                logger.info("embedded_postgres stopped data_dir=%s", self.data_dir)
        self.started_here = False
        self._port = None

    def restart(self) -> None:
        """Restart the server this object started (fast shutdown: sessions are cut), on the same port.

        Every open connection is terminated; the URL stays valid. Raises EmbeddedPostgresError when the
        server does not come back, and for a server this object reused rather than started (not its own).
        """
        if self._port is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        if not self.started_here:
            raise EmbeddedPostgresError(
                f"the server on {self.data_dir} was not started here; not restarting it"
            )
        # Without -o, pg_ctl restarts with the options recorded in postmaster.opts at start (port included).
        # -l matters as much: without it the new postmaster would hold our captured stdout open forever.
        result = self._run(
            "pg_ctl", "restart", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30",
            "-l", str(self.log_file),
        )  # fmt: skip
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise EmbeddedPostgresError(f"pg_ctl restart failed: {detail}\n{self._log_tail()}")
        port = self._running_port()
        if port != self._port:
            raise EmbeddedPostgresError(f"embedded PostgreSQL restarted on port {port}, not {self._port}")
        self._wait_until_ready()
        logger.info("embedded_postgres restarted url=%s data_dir=%s", self.url, self.data_dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _require_traversable(self, target: Path) -> None:
        assert self._run_as is not None
        directory = blocking_directory(target, *self._run_as)
        if directory is not None:
            raise EmbeddedPostgresError(
                f"running as root, PostgreSQL must run as {self._system_user!r}, which cannot traverse "
                f"{describe(directory)} to reach {target}; use a location that "
                "user can reach or set DATABASE_URL to use an existing server"
            )

    def _prepare_directories(self) -> None:
        for directory in reversed((self.data_dir.parent, *self.data_dir.parent.parents)):
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            # A restrictive umask (077 is common for root) would lock the server user out of our own dirs.
            directory.chmod(0o755)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_file.touch(mode=0o600, exist_ok=True)
        if self._run_as is not None:
            uid, gid = self._run_as
            owner = self.data_dir.stat().st_uid
            if (self.data_dir / "PG_VERSION").exists() and owner != uid:
                raise EmbeddedPostgresError(
                    f"{self.data_dir} belongs to uid {owner} but the server must run as "
                    f"{self._system_user!r}; remove it to re-initialise, or set DATABASE_URL"
                )
            for path in (self.data_dir, self.socket_dir, self.log_file):
                os.chown(path, uid, gid)

    def _run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        uid, gid = self._run_as or (None, None)
        try:
            return subprocess.run(  # noqa: S603 - binaries from find_server_binaries, no shell
                [str(self._bin_dir / command[0]), *command[1:]],
                capture_output=True, text=True, check=False, timeout=timeout, cwd=self.data_dir.parent,
                # extra_groups=[] drops root's supplementary groups, which user=/group= alone would keep.
                user=uid, group=gid, extra_groups=[] if self._run_as else None,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedPostgresError(f"{command[0]} could not run: {exc}") from exc

    def _initdb(self) -> None:
        result = self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-instructions", timeout=180,
        )  # fmt: skip
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed for {self.data_dir}: {result.stderr.strip()[-2000:]}")
        logger.info("embedded_postgres initialised data_dir=%s bin_dir=%s", self.data_dir, self._bin_dir)

    def _running_port(self) -> int | None:
        if not (self.data_dir / "PG_VERSION").exists():
            return None
        if self._run("pg_ctl", "status", "-D", str(self.data_dir)).returncode != 0:
            return None
        # postmaster.pid is authoritative: the port file may have changed since that server started.
        try:
            port = int((self.data_dir / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, IndexError, ValueError) as exc:
            raise EmbeddedPostgresError(f"server on {self.data_dir} runs but its port is unknown") from exc
        if self._requested_port not in (None, port):
            logger.warning("embedded_postgres port_mismatch requested=%s port=%d", self._requested_port, port)
        return port

    def _choose_port(self) -> int:
        if self._requested_port is not None:
            return self._requested_port
        try:
            recorded = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            recorded = 0
        # A stable port keeps URLs copied from an earlier run working; move only if something took it.
        port = (recorded and _bind_port(recorded)) or _bind_port(0)
        if port is None:
            raise EmbeddedPostgresError("no free TCP port on 127.0.0.1")
        if port != recorded:
            self.port_file.write_text(f"{port}\n")
        return port

    def _start_server(self, port: int) -> int:
        socket_dir = str(self.socket_dir)
        if len(os.fsencode(f"{socket_dir}/.s.PGSQL.{port}")) > _MAX_SOCKET_PATH:
            socket_dir = ""  # TCP only; pg_ctl -w watches postmaster.pid, not the socket
        # pg_ctl pastes -o into a /bin/sh command line, hence the quoting.
        # wal_level=logical: either capture mode runs with no setup (REALTIME_CAPTURE=logical reads the WAL);
        # commit timestamps let the trigger mode number transactions in commit order.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c max_connections=200 "
            "-c wal_level=logical -c track_commit_timestamp=on -c "
            + shlex.quote(f"unix_socket_directories={socket_dir}")
        )
        for name, value in self._server_settings.items():
            options += " -c " + shlex.quote(f"{name}={value}")
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data_dir),
            "-l", str(self.log_file), "-o", options,
        )  # fmt: skip
        if result.returncode == 0:
            self.started_here = True
            return port
        running = self._running_port()
        if running is not None:  # another process started it between our status check and ours
            return running
        detail = (result.stderr or result.stdout).strip()
        raise EmbeddedPostgresError(f"pg_ctl start failed: {detail}\n{self._log_tail()}")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last_error = str(exc).strip()
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(
                    f"embedded PostgreSQL at {self.url} did not accept connections within "
                    f"{_READY_TIMEOUT_S:.0f}s: {last_error}\n{self._log_tail()}"
                )
            time.sleep(0.25)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return f"--- {self.log_file} ---\n" + "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except (OSError, UnicodeDecodeError):
            return f"(no readable server log at {self.log_file})"
