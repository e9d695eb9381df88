"""Scenario instances (issue 14): what the shared database costs per instance, with 1, 2 and 3 instances
on one database, idle and under a light write load.

Per window: sequencer passes/s (each instance's /metrics), connections held (pg_stat_activity by
application_name), transactions/s and rows read/s of the database (pg_stat_database deltas, less the
writer's own commits and this probe's; pg_stat_statements is not loaded and the server's configuration
is not ours to change), and the CPU of the service's PostgreSQL backends (by pid, from /proc).

No subscribers: the feed numbers and reads every change whether or not anyone listens, so the database's
side does not depend on them (row-level security checks, which do, are the rls scenario's).
pg_stat_database lags: a backend flushes its counters at most once a second, so the database's counters
are read FLUSH_SECONDS after a window ends, less what the idle rates say that tail added; the idle
windows' own figures carry up to a second's worth of error either way, hence their length.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import harness, measure
from bench.harness import Server
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, settle

TABLE = "bench_instances"
COUNTS = (1, 2, 3)
APP_PREFIX = "fluxbase-realtime"
PASSES = re.compile(r"^fluxbase_realtime_sequencer_passes_total (\S+)$", re.M)
# A busy backend flushes its statistics at most once a second, on its next commit: the feeds' idle polls
# (REALTIME_IDLE_POLL_INTERVAL, 1 s) make one within this long.
FLUSH_SECONDS = 2.5


@dataclass(frozen=True)
class Params:
    idle_seconds: float
    write_seconds: float
    write_rate: float  # single-row commits/s: a light load
    settle_seconds: float = 1.0


SIZES: dict[Size, Params] = {
    "quick": Params(idle_seconds=3, write_seconds=3, write_rate=50),
    "full": Params(idle_seconds=10, write_seconds=10, write_rate=50),
}

SNAPSHOT = """
SELECT d.xact_commit, d.tup_returned + d.tup_fetched,
       (SELECT coalesce(json_object_agg(a.application_name, a.n), '{}')
          FROM (SELECT application_name, count(*) AS n FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name LIKE %(prefix)s
                 GROUP BY application_name) a),
       (SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
         WHERE datname = current_database() AND application_name LIKE %(prefix)s)
  FROM pg_stat_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class Snapshot:
    at: float
    passes: float  # every instance's, summed
    backend_ticks: dict[int, int]  # CPU ticks of the service's backends, by pid
    xacts: int
    rows_read: int
    connections: dict[str, int]  # by application_name


def snapshot(conn: psycopg.Connection[Any], servers: list[Server]) -> Snapshot:
    """The instances' counters and the backends' CPU now; the database's counters as last flushed."""
    # Autocommit: each snapshot is its own transaction, so the statistics are read afresh.
    row = conn.execute(SNAPSHOT, {"prefix": APP_PREFIX + "%"}).fetchone()
    assert row is not None
    xacts, rows_read, connections, pids = row
    passes = sum(_passes(server) for server in servers)
    return Snapshot(time.monotonic(), passes, _ticks(pids), int(xacts), int(rows_read), dict(connections))


def _passes(server: Server) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = PASSES.search(text)
    if found is None:
        raise RuntimeError("no fluxbase_realtime_sequencer_passes_total in /metrics")
    return float(found.group(1))


def _ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited, or another machine's PostgreSQL (then the figure is absent)
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def window(
    bench: Bench,
    conn: psycopg.Connection[Any],
    action: Callable[[], int],
    idle: dict[str, float] | None = None,
) -> dict[str, float]:
    """Figures over `action` (which returns how many transactions it committed itself).

    The instances' counters and /proc are read when the action ends; pg_stat_database only after
    FLUSH_SECONDS more, when every busy backend has flushed what it counted during the action, less what
    the idle window (`idle`, the same instances' idle rates) says the tail itself added.
    """
    servers = bench.measured  # the instances running now
    usage_before = measure.usage(bench, clients=0.0, writer=float(bench.writer.call("cpu")))
    before = snapshot(conn, servers)
    own = action()
    end = snapshot(conn, servers)
    usage_end = measure.usage(bench, clients=0.0, writer=float(bench.writer.call("cpu")))
    time.sleep(FLUSH_SECONDS)
    flushed = snapshot(conn, servers)
    seconds, tail = end.at - before.at, flushed.at - end.at
    n = len(servers)
    # Without idle rates (the idle window itself), the tail is part of the window for the database.
    db_seconds = seconds if idle else seconds + tail
    idle_xacts = (idle or {}).get("xacts_per_s_total", 0.0) * tail
    idle_rows = (idle or {}).get("rows_read_per_s_total", 0.0) * tail
    # The probe's own commits in the span: the first two snapshots' (the last's is not counted yet).
    xacts = flushed.xacts - before.xacts - own - 2 - idle_xacts
    rows_read = flushed.rows_read - before.rows_read - idle_rows
    # Backends present at both ends: one that came or went takes its CPU time with it.
    cpu = sum(end.backend_ticks[p] - t for p, t in before.backend_ticks.items() if p in end.backend_ticks)
    held = sum(end.connections.values())
    return {
        **measure.cpu_figures(usage_before, usage_end),
        "passes_per_s": (end.passes - before.passes) / seconds / n,
        "connections": held / n,
        "connections_total": held,
        "xacts_per_s": xacts / db_seconds / n,
        "xacts_per_s_total": xacts / db_seconds,
        "rows_read_per_s_total": rows_read / db_seconds,
        "backend_cpu_pct": 100 * cpu / os.sysconf("SC_CLK_TCK") / seconds / n,
    }


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    harness.create_table(bench.dsn, TABLE)
    result = RunResult()
    by_app: dict[str, dict[str, int]] = {}
    with psycopg.Connection.connect(bench.dsn, autocommit=True, application_name="bench-probe") as conn:
        for count in COUNTS:
            with bench.instances(count - 1, {}, with_server=True) as servers:
                settle(params.settle_seconds)
                idle = window(bench, conn, lambda: _idle(params.idle_seconds))
                writes = window(bench, conn, lambda: _write(bench, params), idle)
                result.add(f"n{count}_idle_", idle)
                result.add(f"n{count}_write_", writes)
                by_app[str(count)] = snapshot(conn, servers).connections
    result.details["connections_by_application"] = by_app
    return result


def _idle(seconds: float) -> int:
    time.sleep(seconds)
    return 0


def _write(bench: Bench, params: Params) -> int:
    report = bench.writer.call(
        "paced", bench.dsn, TABLE, params.write_rate, params.write_seconds, 64, (), timeout=120
    )
    return int(report.statements)


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    lines: list[Row] = []
    for count in COUNTS:
        for phase, title in (
            ("idle", f"{params.idle_seconds:g} s idle"),
            ("write", f"{params.write_rate:g} commits/s for {params.write_seconds:g} s"),
        ):
            prefix = f"n{count}_{phase}_"
            lines += [
                Row(f"instances: {count} on one database, {title}", "passes/s per instance",
                    prefix + "passes_per_s", "{:.1f}"),
                Row("", "DB connections per instance", prefix + "connections", "{:.1f}"),
                Row("", "service transactions/s per instance", prefix + "xacts_per_s", "{:.1f}"),
                Row("", "rows read/s, whole database", prefix + "rows_read_per_s_total", "{:,.0f}"),
                Row("", "service backends' CPU per instance", prefix + "backend_cpu_pct", "{:.1f}", "%"),
            ]  # fmt: skip
    return lines


SCENARIO = Scenario(
    name="instances",
    measure=measure_run,
    rows=rows,
    load=lambda size: [
        (f"instances: {count}, {phase}", f"n{count}_{phase}_")
        for count in COUNTS
        for phase in ("idle", "write")
    ],
    params=lambda size: SIZES[size],
)
