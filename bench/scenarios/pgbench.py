"""Write overhead as pgbench sees it: prepared single-row INSERT transactions, realtime on vs off.

The figure issue 12 is judged by: `pgbench -n -M prepared` with 1 and 8 client connections, each
transaction one `INSERT` of a short row (`name text, price numeric`), on a table with realtime and on
one without, alternating (off/on, then on/off, ...) so that drift in the machine's state hits both alike.
The service runs and delivers every change to one subscriber, as in production. After each phase the
service is left to finish reading, so that its backlog is not charged to the next phase.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target
from bench.scenarios.overhead import _wait_for_feed

TABLES = {"off": "bench_pgbench_off", "on": "bench_pgbench_on"}
WRITERS = (1, 8)
TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


@dataclass(frozen=True)
class Params:
    phase: int  # seconds per pgbench run (pgbench -T)
    pairs: int  # off/on pairs per writer count and run


SIZES: dict[Size, Params] = {"quick": Params(phase=1, pairs=1), "full": Params(phase=5, pairs=3)}


def pgbench_binary() -> str:
    """pgbench on PATH, or next to the PostgreSQL server binaries."""
    found = shutil.which("pgbench") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError("pgbench not found: install PostgreSQL's client programs (apt install postgresql)")
    return found


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    with psycopg.connect(bench.dsn, autocommit=True) as conn:
        for state, table in TABLES.items():
            conn.execute(
                sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, name text, price numeric)").format(
                    sql.Identifier(table)
                )
            )
            if state == "on":
                conn.execute("SELECT enable_realtime('public', %s)", (table,))
    scripts = {}
    for state, table in TABLES.items():
        scripts[state] = bench.work_dir / f"pgbench-{table}.sql"
        scripts[state].write_text(f"INSERT INTO {table} (name, price) VALUES ('widget', 9.99);\n")
    bench.pool.connect(bench.server.ws_url, f"table:public.{TABLES['on']}", 1, processes=1)
    result = RunResult()
    try:
        for writers in WRITERS:  # warm-up: connections, plans, the feed's first passes
            for state in TABLES:
                _phase(bench, scripts[state], writers, 1)
        for writers in WRITERS:
            rates: dict[str, list[float]] = {"off": [], "on": []}
            for pair in range(params.pairs):
                for state in ("off", "on") if pair % 2 == 0 else ("on", "off"):
                    rates[state].append(_phase(bench, scripts[state], writers, params.phase))
            off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
            ratios = [b / a for a, b in zip(rates["off"], rates["on"], strict=True) if a]
            result.add(
                f"writers{writers}.",
                {
                    "off_tps": off,
                    "on_tps": on,
                    "ratio": on / off if off else None,
                    "ratio_min": min(ratios, default=None),
                    "ratio_max": max(ratios, default=None),
                },
            )
            result.details[f"writers{writers}"] = rates
    finally:
        bench.pool.close()
    return result


def _phase(bench: Bench, script: Path, writers: int, seconds: int) -> float:
    """One pgbench run's transactions per second, once the service has read everything it wrote."""
    command = [
        pgbench_binary(), "-n", "-M", "prepared", "-c", str(writers), "-j", str(min(writers, 2)),
        "-T", str(seconds), "-f", str(script), bench.dsn,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds * 4 + 60)
    found = TPS.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    _wait_for_feed(bench)
    bench.pool.reset()
    return float(found.group(1))


def rows(size: Size) -> list[Row]:
    lines = []
    for writers in WRITERS:
        target = Target(">=", 0.6, "≥ 0.6") if writers == 8 else None
        title = f"pgbench, {writers} writer{'s' if writers > 1 else ''}, 1-row INSERT transactions, 1 sub"
        lines += [
            Row(f"write overhead: {title}", "on / off", f"writers{writers}.ratio", "{:.2f}", "", target),
            Row("", "realtime off", f"writers{writers}.off_tps", "{:,.0f}", "tx/s"),
            Row("", "realtime on", f"writers{writers}.on_tps", "{:,.0f}", "tx/s"),
        ]
    return lines


SCENARIO = Scenario(
    name="pgbench",
    measure=measure_run,
    rows=rows,
    load=lambda s: [],
    params=lambda s: SIZES[s],
)
