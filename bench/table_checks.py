"""`python -m bench.table_checks`: PostgreSQL's cost of a subscribe's checks, in two schema revisions.

A subscribe is checked by app/services/tables.py's CHECKS statement (table_status and table_access for
each distinct key of a batch). This builds two scratch databases on one server, one migrated to `--before`
(default 0018: the checks as SQL-language functions) and one to the newest revision, with the same tables
(realtime, row-level security, policies, column grants, a partitioned table), and runs each statement below
on one connection per database, prepared as psycopg prepares the service's, for `--seconds` each,
alternating the databases round by round. It prints, per statement and database, the wall time per call
and the CPU its backend spent per call (from /proc: the server must run on this machine), median and range
over the rounds. No service runs: this is the database's part alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from alembic import command
from psycopg import sql

from app.migrations import alembic_config
from app.services.changes import SESSION_OPTIONS
from app.services.tables import CHECKS
from bench import harness
from bench.suite import DEFAULT_ADMIN_URL

TABLES = [f"checked_{n}" for n in range(8)]
ROLE = "authenticated"
BROADCAST = "SELECT * FROM fluxbase_realtime.broadcast_permissions(%s, %s::jsonb, %s)"
CAPTURING = "SELECT * FROM fluxbase_realtime.capturing_table(%s, %s)"


def _keys(tables: list[str]) -> tuple[list[str], list[str], list[str]]:
    return ["public"] * len(tables), tables, [ROLE] * len(tables)


# name -> (statement, parameters)
STATEMENTS: dict[str, tuple[str, Any]] = {
    "checks, 1 key": (CHECKS, _keys(TABLES[:1])),
    "checks, 8 keys": (CHECKS, _keys(TABLES)),
    "checks, a partition": (CHECKS, _keys(["checked_tree_0"])),
    "capturing_table": (CAPTURING, ("public", "checked_tree_0")),
    "broadcast_permissions": (BROADCAST, (ROLE, '{"sub": "bench"}', "room")),
}


def _schema(url: str) -> None:
    """The same tables in either database: what a subscribe of the benchmark asks about."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in TABLES:
            for statement in (
                "CREATE TABLE {} (id bigint PRIMARY KEY, owner text, title text, secret text)",
                "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
                "CREATE POLICY own ON {} FOR SELECT TO authenticated USING (owner = current_user)",
                "GRANT SELECT (id, owner, title) ON {} TO authenticated",
            ):
                conn.execute(sql.SQL(statement).format(sql.Identifier(name)))
            conn.execute("SELECT enable_realtime('public', %s)", (name,))
        conn.execute("CREATE TABLE checked_tree (id bigint PRIMARY KEY) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE checked_tree_0 PARTITION OF checked_tree FOR VALUES FROM (0) TO (1000)")
        conn.execute("GRANT SELECT ON checked_tree, checked_tree_0 TO authenticated")
        conn.execute("SELECT enable_realtime('public', 'checked_tree')")


@contextlib.contextmanager
def _database(admin_url: str, revision: str) -> Iterator[str]:
    with harness.scratch_database(admin_url) as url:
        command.upgrade(alembic_config(url), revision)
        _schema(url)
        yield url


def _cpu(pid: int) -> float:
    return sum(harness.process_cpu_seconds(pid))


def _measure(url: str, statement: str, params: Any, seconds: float) -> tuple[float, float, Any]:
    """Wall and backend CPU seconds per call on a fresh connection (after a warm-up), and the answer."""
    with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = row[0]
        for _ in range(50):  # past psycopg's prepare threshold and PostgreSQL's five custom plans
            answer = conn.execute(statement, params, prepare=True).fetchall()
        calls, cpu, start = 0, _cpu(pid), time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(20):
                conn.execute(statement, params, prepare=True).fetchall()
            calls += 20
        return elapsed / calls, (_cpu(pid) - cpu) / calls, answer


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:,.0f} µs ({min(values) * 1e6:,.0f}-{max(values) * 1e6:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="0018", help="the revision to compare the newest with")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each database once per round)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per statement, database and round")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL))
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with _database(args.admin_url, args.before) as before, _database(args.admin_url, "head") as after:
        designs = {args.before: before, "head": after}
        figures: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for run in range(args.runs):
            order = list(designs.items()) if run % 2 == 0 else list(reversed(designs.items()))
            for name, (statement, params) in STATEMENTS.items():
                answers = {}
                for design, url in order:
                    wall, cpu, answers[design] = _measure(url, statement, params, args.seconds)
                    walls, cpus = figures.setdefault((name, design), ([], []))
                    walls.append(wall)
                    cpus.append(cpu)
                if len({repr(answer) for answer in answers.values()}) != 1:
                    raise SystemExit(f"{name}: the revisions answer differently: {answers}")
            print(f"round {run + 1} done, load average {os.getloadavg()}", flush=True)
        for name in STATEMENTS:
            for design in designs:
                walls, cpus = figures[(name, design)]
                print(f"{name:24} {design:5} wall {_spread(walls)}  backend CPU {_spread(cpus)}", flush=True)


if __name__ == "__main__":
    main()
