"""Scenario 5, write overhead: INSERT throughput on a table with realtime enabled vs disabled.

Two tables of the same shape, one with realtime; the same writer process alternates between them
(off/on, then on/off, ...) so drift in the machine's state hits both alike. The service runs, as it
would in production: with realtime on, its change feed reads and frames every change (nobody is
subscribed), on the same cores. After each phase the service is left to finish reading, so that its
backlog is not charged to the next phase.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from bench import harness, measure
from bench.measure import Bench, Usage
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target
from bench.writer import Throughput

TABLES = {"off": "bench_overhead_off", "on": "bench_overhead_on"}
# (key, concurrent writers, rows per statement, title, unit)
SHAPES = (
    ("single", 1, 1, "1 writer, 1-row INSERT transactions", "tx/s"),
    ("writers8", 8, 1, "8 writers, 1-row INSERT transactions", "tx/s"),
    ("batch", 1, 500, "1 writer, 500-row INSERT statements", "rows/s"),
)
CATCH_UP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Params:
    phase: float  # seconds per (table, shape) phase
    pairs: int  # off/on pairs per shape and run


SIZES: dict[Size, Params] = {"quick": Params(phase=0.3, pairs=2), "full": Params(phase=1.0, pairs=3)}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    for state, table in TABLES.items():
        harness.create_table(bench.dsn, table, realtime=state == "on")
        for _, writers, rows, _, _ in SHAPES:  # warm-up: connections, prepared statements
            _phase(bench, table, writers, rows, 0.1)
    result = RunResult()
    spans: dict[str, list[tuple[Usage, Usage]]] = {"off": [], "on": []}
    for key, writers, rows, _, _ in SHAPES:
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for pair in range(params.pairs):
            for state in ("off", "on") if pair % 2 == 0 else ("on", "off"):
                before = measure.usage(bench, clients=0.0, writer=bench.writer.call("cpu"))
                done = _phase(bench, TABLES[state], writers, rows, params.phase)
                spans[state].append(
                    (before, measure.usage(bench, clients=0.0, writer=bench.writer.call("cpu")))
                )
                rates[state].append(done.rows_per_second)
        off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
        result.add(f"{key}.", {"off_per_s": off, "on_per_s": on, "ratio": on / off if off else None})
        result.details[key] = rates
    for state, taken in spans.items():
        result.add(f"{state}.", measure.span_figures(taken))
    return result


def _phase(bench: Bench, table: str, writers: int, rows: int, seconds: float) -> Throughput:
    done: Throughput = bench.writer.call(
        "throughput", bench.dsn, table, rows, writers, seconds, timeout=seconds * 3 + 60
    )
    _wait_for_feed(bench)
    return done


def _wait_for_feed(bench: Bench) -> None:
    """Until the service's change feed stops advancing: it has read everything committed so far."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    last = bench.server.stats()["last_change_id"]
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = bench.server.stats()["last_change_id"]
        if now == last:
            return
        last = now


def rows(size: Size) -> list[Row]:
    lines = []
    for key, _, _, title, unit in SHAPES:
        target = Target(">=", 0.7, "≥ 0.7") if key == "single" else None
        lines += [
            Row(f"write overhead: {title}", "on / off", f"{key}.ratio", "{:.2f}", "", target),
            Row("", "realtime off", f"{key}.off_per_s", "{:,.0f}", unit),
            Row("", "realtime on", f"{key}.on_per_s", "{:,.0f}", unit),
        ]
    return lines


SCENARIO = Scenario(
    name="overhead",
    measure=measure_run,
    rows=rows,
    load=lambda s: [
        ("write overhead: phases with realtime on (incl. catching up)", "on."),
        ("write overhead: phases with realtime off", "off."),
    ],
    params=lambda s: SIZES[s],
)
