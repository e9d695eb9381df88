"""Scenario 3, ingest: one writer inserting as fast as it can, one subscriber; changes/s through to it.

Three shapes: 500-row INSERT statements (each its own transaction), the same paced at 60,000 rows/s
(above the target: delivery must keep up there, not only reach it), and single-row transactions. The
figure is the rate at which changes reached the subscriber, from the first COMMIT to the last frame;
`keeps up` says whether the lag stayed flat (otherwise the rate is the service's ceiling, not the
writer's).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import harness, measure
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLE = "bench_ingest"
# (key, rows per statement, statements per second (0: as fast as the writer can), label)
SHAPES = (
    ("batch", 500, 0, "500-row INSERT statements"),
    # The target's rate with some margin, paced: delivery must keep up, not only reach the figure.
    ("batch_paced", 500, 120, "500-row INSERT statements paced at 60,000 rows/s"),
    ("single", 1, 0, "single-row transactions"),
)


@dataclass(frozen=True)
class Params:
    duration: float  # seconds the writer writes, per shape and run
    max_rows: int = 2_000_000  # a bound, whatever the machine
    drain_timeout: float = 30.0


SIZES: dict[Size, Params] = {"quick": Params(duration=1.0), "full": Params(duration=5)}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    channel = harness.create_table(bench.dsn, TABLE)
    bench.pool.connect(bench.server.ws_url, channel, 1, processes=1)
    result = RunResult()
    try:
        measure.warm_up(bench, TABLE, rate=200)
        for key, rows_per_statement, per_second, label in SHAPES:
            run = measure.flat_out(
                bench,
                TABLE,
                rows=rows_per_statement,
                duration=params.duration,
                max_rows=params.max_rows,
                drain_timeout=params.drain_timeout,
                per_second=per_second,
            )
            result.add(f"{key}.", run.figures)
            result.cdfs[f"ingest: {label}, 1 sub"] = run.cdf
    finally:
        bench.pool.close()
    return result


def rows(size: Size) -> list[Row]:
    lines = []
    for key, _, _, label in SHAPES:
        target = Target(">=", 55_000, "≥ 55,000") if key == "batch" else None
        lines += [
            Row(
                f"ingest: 1 writer, {label}, 1 sub",
                "changes/s through to the client",
                f"{key}.changes_per_s",
                "{:,.0f}",
                "",
                target,
            ),
            Row("", "writer's commit rate (rows/s)", f"{key}.writer_rate", "{:,.0f}"),
            Row("", "kept up (lag did not grow)", f"{key}.keeps_up", "{:.0%}"),
            Row("", "lag growth over the run", f"{key}.lag_growth_ms", "{:,.0f}", "ms"),
            Row("", "latency p50", f"{key}.p50_ms", "{:,.1f}", "ms"),
            Row("", "latency p99", f"{key}.p99_ms", "{:,.1f}", "ms"),
        ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    return [(f"ingest: {label}", f"{key}.") for key, _, _, label in SHAPES]


SCENARIO = Scenario(name="ingest", measure=measure_run, rows=rows, load=load, params=lambda s: SIZES[s])
