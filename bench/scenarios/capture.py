"""Write overhead of the two capture modes, side by side: pgbench, prepared single-row INSERT transactions,
1 and 8 writers, against a table with no realtime, one with triggers, and one captured by logical decoding.

Two services run on one PostgreSQL (wal_level=logical, so that the baseline pays the same WAL level): the
run's own in trigger mode and a second one, on a second database, in logical mode; each delivers its
table's changes to one subscriber. Phases rotate through the three tables so that drift in the machine's
state hits each alike, and each phase waits for both services to catch up before the next begins.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import harness
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLES = {"off": "bench_capture_off", "trigger": "bench_capture_trigger", "logical": "bench_capture_logical"}
SHAPES = (("single", 1, "1 writer"), ("writers8", 8, "8 writers"))
CATCH_UP_TIMEOUT = 60.0
TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


@dataclass(frozen=True)
class Params:
    phase: float  # seconds of pgbench per (table, shape) phase
    rounds: int  # rotations through the three tables per shape and run


SIZES: dict[Size, Params] = {"quick": Params(phase=1.0, rounds=1), "full": Params(phase=5.0, rounds=3)}


def _pgbench() -> str:
    from app.services.embedded_postgres import find_server_binaries

    found = shutil.which("pgbench")
    bin_dir = find_server_binaries()
    if found is None and bin_dir is not None and (bin_dir / "pgbench").exists():
        found = str(bin_dir / "pgbench")
    if found is None:
        raise RuntimeError(
            "pgbench not found: install the PostgreSQL client tools (e.g. apt install postgresql)"
        )
    return found


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    admin = psycopg.conninfo.make_conninfo(bench.dsn, dbname="postgres")
    if harness.wal_level(admin) != "logical":
        raise RuntimeError("the capture scenario needs wal_level=logical: run it through `python -m bench`")
    with (
        harness.scratch_database(admin) as logical_dsn,
        harness.running_server(
            logical_dsn, bench.work_dir / "capture-logical.log", mode="logical"
        ) as logical,
    ):
        dsns = {"off": bench.dsn, "trigger": bench.dsn, "logical": logical_dsn}
        harness.create_table(bench.dsn, TABLES["off"], realtime=False)
        channels = {
            "trigger": harness.create_table(bench.dsn, TABLES["trigger"]),
            "logical": harness.create_table(logical_dsn, TABLES["logical"]),
        }
        servers = {"trigger": bench.server, "logical": logical}
        for mode, server in servers.items():
            bench.pool.connect(server.ws_url, channels[mode], 1, processes=1)
        script = bench.work_dir / "capture-insert-{}.sql"
        try:
            for state, table in TABLES.items():
                Path(str(script).format(state)).write_text(
                    f"INSERT INTO {table} (sent_at, payload) VALUES (0, 'a short payload');\n"
                )
                _pgbench_tps(dsns[state], Path(str(script).format(state)), 1, 0.5)  # warm-up
            _wait_for_feeds(servers)
            result = RunResult()
            for key, writers, _ in SHAPES:
                rates: dict[str, list[float]] = {state: [] for state in TABLES}
                order = list(TABLES)
                for round_ in range(params.rounds):
                    rotated = order[round_ % 3 :] + order[: round_ % 3]
                    for state in rotated:
                        rates[state].append(
                            _pgbench_tps(dsns[state], Path(str(script).format(state)), writers, params.phase)
                        )
                        _wait_for_feeds(servers)
                off = statistics.median(rates["off"])
                figures: dict[str, float | None] = {
                    f"{state}_per_s": statistics.median(r) for state, r in rates.items()
                }
                for mode in ("trigger", "logical"):
                    figures[f"{mode}_ratio"] = statistics.median(rates[mode]) / off if off else None
                result.add(f"{key}.", figures)
                result.details[key] = rates
            result.details["logical_stats"] = logical.stats()
        finally:
            bench.pool.close()
    return result


def _pgbench_tps(dsn: str, script: Path, writers: int, seconds: float) -> float:
    command = [
        _pgbench(), "-n", "-M", "prepared", "-c", str(writers), "-j", str(min(writers, 2)),
        "-T", str(max(1, round(seconds))), "-f", str(script), dsn,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds * 4 + 60)
    match = TPS.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no tps in pgbench's output: {done.stdout[-500:]} {done.stderr[-500:]}")
    return float(match.group(1))


def _wait_for_feeds(servers: dict[str, harness.Server]) -> None:
    """Until neither service's change feed advances any more: each has read everything committed."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    last = {mode: server.stats()["last_change_id"] for mode, server in servers.items()}
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = {mode: server.stats()["last_change_id"] for mode, server in servers.items()}
        if now == last:
            return
        last = now


def rows(size: Size) -> list[Row]:
    lines = []
    for key, _, title in SHAPES:
        logical_target = Target(
            ">=", 0.9 if key == "single" else 0.85, "≥ 0.9" if key == "single" else "≥ 0.85"
        )
        trigger_target = Target(">=", 0.6, "≥ 0.6") if key == "writers8" else None
        lines += [
            Row(f"capture modes: pgbench, {title}, 1-row INSERT", "logical on / off", f"{key}.logical_ratio",
                "{:.2f}", "", logical_target),
            Row("", "triggers on / off", f"{key}.trigger_ratio", "{:.2f}", "", trigger_target),
            Row("", "no realtime", f"{key}.off_per_s", "{:,.0f}", "tx/s"),
            Row("", "triggers", f"{key}.trigger_per_s", "{:,.0f}", "tx/s"),
            Row("", "logical decoding", f"{key}.logical_per_s", "{:,.0f}", "tx/s"),
        ]  # fmt: skip
    return lines


SCENARIO = Scenario(
    name="capture", measure=measure_run, rows=rows, load=lambda s: [], params=lambda s: SIZES[s]
)
