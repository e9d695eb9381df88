"""Scenario 2, fan-out: each change to every subscriber of a channel; the highest sustainable rate.

Within a run, connections are added: 100, then 300, then 1,000 subscribers. For each count, the change
rate is stepped up by `factor` until delivery stops keeping up (a change missing, a slow-consumer close,
or a lag that grows during the step), then the gap between the last rate that kept up and the first that
did not is halved (geometrically) until it is within `resolution`. A step where the writer could not
commit at the rate asked counts as not keeping up (PostgreSQL set the pace, not delivery), and the
table says so. The figures are those of the highest rate that kept up. Later runs start just below the
previous run's answer, so they need fewer steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench import harness, measure, stepping
from bench.measure import Bench, Measurement
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target
from bench.stepping import Search

TABLE = "bench_fanout"
KEPT = ("deliveries_per_s", "p50_ms", "p99_ms", "max_ms", "writer_rate", "subscribers")


@dataclass(frozen=True)
class Params:
    subscriber_counts: tuple[int, ...]
    step_duration: float  # seconds each rate is held
    start_deliveries: float  # offered deliveries/s of the first step of the first run
    factor: float = 1.5
    resolution: float = 1.25
    max_steps: int = 8
    processes: int = 2
    drain_timeout: float = 15.0


SIZES: dict[Size, Params] = {
    "quick": Params(subscriber_counts=(1000,), step_duration=1.0, start_deliveries=60_000, max_steps=4),
    "full": Params(
        subscriber_counts=(100, 300, 1000), step_duration=2.0, start_deliveries=30_000, max_steps=10
    ),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    channel = harness.create_table(bench.dsn, TABLE)
    result = RunResult(details={"steps": {}})
    try:
        # Connections are only ever added: 100, then 200 more, ...
        for subscribers in params.subscriber_counts:
            bench.pool.connect(bench.server.ws_url, channel, subscribers, params.processes)
            start = _start_rate(subscribers, params, earlier)
            measure.warm_up(bench, TABLE, rate=start / 2)
            search = _search(bench, channel, subscribers, start, params)
            result.details["steps"][subscribers] = search.steps
            result.add(f"s{subscribers}.", search.figures(KEPT, subscribers))
            if search.best is not None:
                result.cdfs[f"fan-out: {subscribers} subs at the sustainable rate"] = search.best[1].cdf
    finally:
        bench.pool.close()
    return result


def _start_rate(subscribers: int, params: Params, earlier: list[RunResult]) -> float:
    """Changes/s of the first step: just below the last run's answer, or a modest default."""
    for result in reversed(earlier):
        rate = result.figures.get(f"s{subscribers}.rate")
        if rate:
            return float(rate) / math.sqrt(params.factor)
    return params.start_deliveries / subscribers


def _search(bench: Bench, channel: str, subscribers: int, start: float, params: Params) -> Search:
    def step(rate: float) -> Measurement:
        # Reopens any connection the server closed as too slow in an earlier step.
        bench.pool.connect(bench.server.ws_url, channel, subscribers, params.processes)
        return measure.paced(
            bench,
            TABLE,
            rate=rate,
            duration=params.step_duration,
            payload_bytes=64,
            drain_timeout=params.drain_timeout,
        )

    return stepping.highest_sustained(
        step, start, factor=params.factor, resolution=params.resolution, max_steps=params.max_steps
    )


def rows(size: Size) -> list[Row]:
    lines = []
    counts = SIZES[size].subscriber_counts
    for subscribers in sorted(counts, reverse=True):
        prefix = f"s{subscribers}."
        title = f"fan-out: {subscribers:,} subs, 1-row changes"
        target = Target(">=", 120_000, "≥ 120,000") if subscribers == 1000 else None
        lines += [
            Row(title, "sustained deliveries/s", prefix + "deliveries_per_s", "{:,.0f}", "", target),
            Row("", "at changes/s (committed)", prefix + "writer_rate", "{:,.0f}"),
            Row("", "p50 there", prefix + "p50_ms", "{:.1f}", "ms"),
            Row("", "p99 there", prefix + "p99_ms", "{:.1f}", "ms"),
            Row("", "next step, lagging (offered deliveries/s)", prefix + "failed_deliveries", "{:,.0f}"),
            Row("", "runs whose next step the writer could not pace", prefix + "failed_by_writer", "{:.0%}"),
        ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    counts = sorted(SIZES[size].subscriber_counts, reverse=True)
    return [(f"fan-out: {n:,} subs, at the sustainable rate", f"s{n}.") for n in counts]


SCENARIO = Scenario(name="fanout", measure=measure_run, rows=rows, load=load, params=lambda s: SIZES[s])
