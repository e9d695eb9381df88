"""What a benchmark runs against: a scratch database, the service as a subprocess, the machine's facts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.workers import raise_fd_limit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Where the service's code is run from: this checkout, or (BENCH_SERVER_ROOT) another tree holding app/,
# sql/, alembic/ and alembic.ini, e.g. `git archive main app sql alembic alembic.ini | tar -x -C DIR`: one
# benchmark process then measures another version of the server side by side with this one's clients.
SERVER_ROOT = Path(os.environ.get("BENCH_SERVER_ROOT") or PROJECT_ROOT).resolve()
# The service's environment in a benchmark, beyond DATABASE_URL. Every client connects from 127.0.0.1,
# so the per-address connection limit (a front-door defence) is raised out of the way, and so is the
# instance's capacity (scenarios measure what it holds).
SERVER_ENV = {
    "LOG_LEVEL": "warning",
    "REALTIME_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    "REALTIME_MAX_CONNECTIONS": "1000000",
}
# HS256 secret of the benchmark's tokens (kept out of SERVER_ENV, which the result files record).
JWT_SECRET = "fluxbase-bench-only-hs256-secret-0123456789"  # noqa: S105 - a benchmark-only secret
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh `fluxbase_bench_<random>` database (its conninfo), dropped on exit whatever happened."""
    name = f"fluxbase_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            # A logical-mode run's slot keeps its database from being dropped (its server has stopped).
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE database = %s AND NOT active",
                (name,),
            )
            # FORCE: a server or writer that failed to stop must not keep the database alive.
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def capture_env(database_url: str, mode: str) -> dict[str, str]:
    """The service's environment for a capture mode: logical mode gets a slot of the database's own (slots
    are per cluster)."""
    if mode == "trigger":
        return {}
    dbname = str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
    return {"REALTIME_CAPTURE": "logical", "REALTIME_SLOT": f"slot_{dbname}"}


def wal_level(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW wal_level").fetchone()
    return str(row[0]) if row else ""


@contextlib.contextmanager
def logical_cluster(work: Path) -> Iterator[str]:
    """A private PostgreSQL with wal_level=logical (the embedded machinery's settings), for runs that
    compare the capture modes on one server; its admin URL."""
    from app.services.embedded_postgres import EmbeddedPostgres

    directory = work / "logical-cluster"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)  # when root, the server runs as `nobody`, which must traverse it
    with EmbeddedPostgres(directory / "postgres") as cluster:
        yield cluster.url


def create_table(dsn: str, table: str, *, realtime: bool = True) -> str:
    """The benchmark table shape, with realtime enabled unless told otherwise (the server must have
    migrated first); returns its channel name."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigserial PRIMARY KEY, sent_at double precision, payload text)"
            ).format(sql.Identifier(table))
        )
        if realtime:
            conn.execute("SELECT enable_realtime('public', %s)", (table,))
    return f"table:public.{table}"


@dataclass(frozen=True)
class Server:
    """A running service subprocess."""

    port: int
    log_path: Path
    pid: int = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """(status, JSON body) of a GET on the service."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, None

    def stats(self) -> dict[str, int]:
        return dict(self.get("/api/realtime/stats")[1])

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds the server has used so far (Linux /proc): its process and, with
        REALTIME_WORKERS, every worker process under it (and workers that exited, once reaped)."""
        user = system = 0.0
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):  # a worker exiting meanwhile
                u, s = process_cpu_seconds(pid, with_reaped_children=True)
                user, system = user + u, system + s
        return user, system

    def rss_bytes(self) -> int:
        """The server's resident memory now: its process and every worker process under it."""
        total = 0
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        if not total:
            raise RuntimeError(f"no VmRSS for process {self.pid}")
        return total

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@contextlib.contextmanager
def running_server(
    database_url: str,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
    mode: str = "trigger",
    port: int | None = None,
) -> Iterator[Server]:
    """`python -m app serve` on a free loopback port, ready on entry; SIGTERM (then SIGKILL) on exit.
    `extra_env`: settings on top of SERVER_ENV (a scenario's raised limits, its bus). Several may run on
    one database at once: they are instances of one service. `port`: this one (a restart on the port of
    a server just killed), instead of a free one.

    Its open-file limit is raised to the hard limit first: every connection is a file descriptor.
    """
    port = port or _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        **SERVER_ENV,
        **capture_env(database_url, mode),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if SERVER_ROOT != PROJECT_ROOT:  # `-m app` finds the package in the working directory first
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=SERVER_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,  # only setrlimit between fork and exec: safe
        )
    server = Server(port, log_path, process.pid)
    try:
        _wait_ready(process, server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> tuple[float, float]:
    """(user, system) CPU seconds process `pid` has used so far (Linux /proc); `with_reaped_children`:
    and its children that exited and were waited for (a supervisor's restarted workers)."""
    # Fields after the parenthesized command name, which may itself contain spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]), int(fields[12])
    if with_reaped_children:
        user, system = user + int(fields[13]), system + int(fields[14])
    return user / ticks, system / ticks


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descended from it that is alive now (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(proc.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def postgres_cpu_seconds(dbname: str) -> float:
    """CPU seconds used so far by PostgreSQL for this benchmark: backends connected to `dbname`, and the
    server's own long-lived processes (WAL writer, checkpointer, ...), but not other databases' backends,
    short-lived workers, nor any process of another PostgreSQL cluster on the machine (others start
    private ones): only children of the postmaster that serves `dbname` count.

    Backends that exited take their time with them, so only differences over a span in which the
    benchmark's connections stayed open mean anything.
    """
    # (pid, parent pid, title words, CPU ticks) of every PostgreSQL process.
    processes: list[tuple[int, int, list[str], int]] = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            name, _, rest = (proc / "stat").read_text().partition(" (")[2].rpartition(")")
            if name != "postgres":
                continue
            # "postgres: 15/main: user database host(port) state", or "postgres: 15/main: checkpointer"
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
            fields = rest.split()
            processes.append((int(proc.name), int(fields[1]), title, int(fields[11]) + int(fields[12])))

    def is_backend(title: list[str]) -> bool:
        return len(title) >= 5 and ("(" in title[4] or title[4] == "[local]")

    ours = {ppid for _, ppid, title, _ in processes if is_backend(title) and title[3] == dbname}
    total = 0
    for _, ppid, title, ticks in processes:
        if ppid not in ours:
            continue
        # Short-lived workers (autovacuum for any database, parallel query workers) take their time
        # with them when they exit, which made a span's figure negative on a shared machine.
        transient = len(title) >= 4 and title[3] in ("autovacuum", "parallel")
        if (is_backend(title) and title[3] == dbname) or (not is_backend(title) and not transient):
            total += ticks
    return total / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(port: int = 6379) -> float:
    """CPU seconds used so far by the redis-server serving `port` (0 when there is none). It is shared:
    anything else using it meanwhile counts too."""
    suffix = f":{port}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
            if title and title[0].endswith(b"redis-server") and any(w.endswith(suffix) for w in title):
                user, system = process_cpu_seconds(int(proc.name))
                return user + system
    return 0.0


def _free_port() -> int:
    # The port is free now; another process could take it before the server binds, which is unlikely.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(process: subprocess.Popen[bytes], server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(server.log_lines()[-20:])
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(OSError):  # refused while starting, 503 while not ready
            if server.get("/readyz", timeout=1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready after {READY_TIMEOUT:.0f}s; see {server.log_path}")


def machine_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks summed over all cores."""
    # The aggregate "cpu" line: user nice system idle iowait irq softirq steal ...; idle + iowait is idle.
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def machine_busy_pct(seconds: float = 1.0) -> float:
    """How busy all cores were, in %, over the next `seconds`: other work skews a benchmark."""
    busy, total = machine_cpu_times()
    time.sleep(seconds)
    busy_after, total_after = machine_cpu_times()
    return 100 * (busy_after - busy) / max(1.0, total_after - total)


def machine_facts(dsn: str) -> dict[str, Any]:
    """Enough to tell whether two result files are comparable."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    packages = ("uvicorn", "websockets", "psycopg", "fastapi", "uvloop")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": row[0] if row else None,
        "packages": {name: metadata.version(name) for name in packages},
        "git_head": _git("rev-parse", "HEAD"),
        # Others edit the tree while benchmarks run: say whether the measured server was committed code.
        "server_code_modified": _git("diff", "--quiet", "HEAD", "--", "app", "sql") is None,
        "server_root": None if SERVER_ROOT == PROJECT_ROOT else str(SERVER_ROOT),
        "realtime_env": {k: v for k, v in os.environ.items() if k.startswith("REALTIME_")},
        "server_env": SERVER_ENV,
    }


def server_code_digest() -> str:
    """A short digest of the server's code as it is on disk now (app/, sql/, alembic/).

    Others edit the tree while a benchmark runs, and each run starts a fresh server: runs whose digests
    differ measured different code.
    """
    digest = hashlib.sha256()
    for path in sorted(
        p for folder in ("app", "sql", "alembic") for p in (SERVER_ROOT / folder).rglob("*") if p.is_file()
    ):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SERVER_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return None


def _git(*args: str) -> str | None:
    """Output of a read-only git command, or None when it fails (or reports a difference)."""
    try:
        result = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()
