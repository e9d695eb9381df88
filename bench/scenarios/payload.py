"""Scenario 6, payload size: latency of 100 B, 10 KB and 1 MB rows to a few subscribers, modest rates."""

from __future__ import annotations

from dataclasses import dataclass

from bench import harness, measure
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLE = "bench_payload"


@dataclass(frozen=True)
class Shape:
    key: str
    label: str
    payload_bytes: int
    rate: float  # changes/s
    duration: float  # seconds


@dataclass(frozen=True)
class Params:
    shapes: tuple[Shape, ...]
    subscribers: int = 5
    processes: int = 1
    drain_timeout: float = 20.0


SIZES: dict[Size, Params] = {
    "quick": Params(
        shapes=(
            Shape("b100", "100 B", 100, 50, 1.2),
            Shape("kb10", "10 KB", 10_000, 50, 1.2),
            Shape("mb1", "1 MB", 1_000_000, 2, 2),
        )
    ),
    "full": Params(
        shapes=(
            Shape("b100", "100 B", 100, 50, 4),
            Shape("kb10", "10 KB", 10_000, 50, 4),
            Shape("mb1", "1 MB", 1_000_000, 2, 10),
        )
    ),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    channel = harness.create_table(bench.dsn, TABLE)
    bench.pool.connect(bench.server.ws_url, channel, params.subscribers, params.processes)
    result = RunResult()
    try:
        measure.warm_up(bench, TABLE, rate=20, payload_bytes=1_000_000, seconds=0.25)
        for shape in params.shapes:
            run = measure.paced(
                bench,
                TABLE,
                rate=shape.rate,
                duration=shape.duration,
                payload_bytes=shape.payload_bytes,
                drain_timeout=params.drain_timeout,
            )
            result.add(f"{shape.key}.", run.figures)
            result.cdfs[f"payload: {_title(shape, params)}"] = run.cdf
    finally:
        bench.pool.close()
    return result


def _title(shape: Shape, params: Params) -> str:
    return f"{shape.label} rows, {params.subscribers} subs, {shape.rate:g} changes/s"


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    lines = []
    for shape in params.shapes:
        target = Target("<=", 50, "≤ 50 ms") if shape.key == "mb1" else None
        lines += [
            Row(f"payload: {_title(shape, params)}", "p50", f"{shape.key}.p50_ms", "{:.1f}", "ms"),
            Row("", "p99", f"{shape.key}.p99_ms", "{:.1f}", "ms", target),
        ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    params = SIZES[size]
    return [(f"payload: {_title(shape, params)}", f"{shape.key}.") for shape in params.shapes]


SCENARIO = Scenario(name="payload", measure=measure_run, rows=rows, load=load, params=lambda s: SIZES[s])
