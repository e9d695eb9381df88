"""Scenario 1, latency: 100 subscribers on one channel, 200 single-row changes/s."""

from __future__ import annotations

from dataclasses import dataclass

from bench import harness, measure
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLE = "bench_latency"


@dataclass(frozen=True)
class Params:
    subscribers: int
    rate: float  # changes/s
    duration: float  # seconds per run
    processes: int = 2  # client processes
    drain_timeout: float = 10.0


SIZES: dict[Size, Params] = {
    "quick": Params(subscribers=100, rate=200, duration=2.5),
    "full": Params(subscribers=100, rate=200, duration=10),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    channel = harness.create_table(bench.dsn, TABLE)
    bench.pool.connect(bench.server.ws_url, channel, params.subscribers, params.processes)
    try:
        measure.warm_up(bench, TABLE, rate=params.rate)
        run = measure.paced(
            bench,
            TABLE,
            rate=params.rate,
            duration=params.duration,
            payload_bytes=64,
            drain_timeout=params.drain_timeout,
        )
    finally:
        bench.pool.close()
    return RunResult(run.figures, {_title(params): run.cdf})


def _title(params: Params) -> str:
    return f"latency: {params.subscribers} subs, {params.rate:g} changes/s"


def rows(size: Size) -> list[Row]:
    title = f"{_title(SIZES[size])}, {SIZES[size].duration:g} s"
    return [
        Row(title, "p50", "p50_ms", "{:.1f}", "ms", Target("<=", 1.5, "≤ 1.5 ms")),
        Row("", "p95", "p95_ms", "{:.1f}", "ms"),
        Row("", "p99", "p99_ms", "{:.1f}", "ms", Target("<=", 4.5, "≤ 4.5 ms")),
        Row("", "max", "max_ms", "{:.1f}", "ms"),
        Row("", "deliveries/s", "deliveries_per_s", "{:,.0f}"),
        Row("", "missing deliveries", "missing", "{:,.0f}"),
    ]


SCENARIO = Scenario(
    name="latency",
    measure=measure_run,
    rows=rows,
    load=lambda size: [(_title(SIZES[size]), "")],
    params=lambda size: SIZES[size],
)
