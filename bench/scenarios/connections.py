"""Scenario 4, connections: many idle subscribed connections; server memory per connection, connect rate.

Each run has a fresh server, so its memory starts from nothing. A few connections are opened first and
the server's RSS noted, so one-time costs (first imports, caches) are not charged to connections; then
the rest are opened, several client processes at a time, and the RSS delta divided by their number. A
last change checks that every connection is really subscribed, and times its delivery to all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import harness, measure
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLE = "bench_idle"


@dataclass(frozen=True)
class Params:
    connections: int
    warm: int = 200  # opened before the baseline RSS is taken
    processes: int = 4
    settle: float = 1.0  # seconds before reading RSS: the last handshakes' buffers are released
    drain_timeout: float = 30.0


SIZES: dict[Size, Params] = {
    "quick": Params(connections=2_000, settle=0.3),
    "full": Params(connections=10_000),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    channel = harness.create_table(bench.dsn, TABLE)
    server, url = bench.server, bench.server.ws_url
    try:
        bench.pool.connect(url, channel, params.warm, params.processes)
        time.sleep(params.settle)
        rss_warm = server.rss_bytes()
        before = measure.usage(bench, clients=bench.pool.cpu(), writer=0.0)
        ramp = bench.pool.connect(url, channel, params.connections, params.processes)
        load = measure.cpu_figures(before, measure.usage(bench, clients=bench.pool.cpu(), writer=0.0))
        time.sleep(params.settle)
        rss_full = server.rss_bytes()
        open_on_server = server.stats()["connections"]
        # The last check: one change reaches every connection.
        sentinel = measure.paced(
            bench, TABLE, rate=1, duration=1, payload_bytes=64, drain_timeout=params.drain_timeout
        )
    finally:
        bench.pool.close(abort=True)
    added = params.connections - params.warm
    figures = {
        "connections": params.connections,
        "open_on_server": open_on_server,
        "rss_warm_mb": rss_warm / 2**20,
        "rss_full_mb": rss_full / 2**20,
        "kb_per_connection": (rss_full - rss_warm) / max(1, added) / 1024,
        "connect_per_s": ramp.opened / ramp.seconds if ramp.seconds else 0.0,
        "connect_s": ramp.seconds,
        "sentinel_delivered": sentinel.figures["delivered"],
        "sentinel_missing": sentinel.figures["missing"],
        "sentinel_p50_ms": sentinel.figures["p50_ms"],
        "sentinel_max_ms": sentinel.figures["max_ms"],
        **load,
    }
    return RunResult(figures)


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    return [
        Row(
            f"connections: {params.connections:,} idle subscribed",
            "server RSS per connection",
            "kb_per_connection",
            "{:.1f}",
            "KB",
            Target("<=", 20, "≤ 20 KB"),
        ),
        Row("", "connect + subscribe rate", "connect_per_s", "{:,.0f}", "/s"),
        Row("", "server RSS with all open", "rss_full_mb", "{:,.0f}", "MB"),
        Row("", "one change to all: delivered", "sentinel_delivered", "{:,.0f}"),
        Row("", "one change to all: last delivery", "sentinel_max_ms", "{:,.0f}", "ms"),
    ]


SCENARIO = Scenario(
    name="connections",
    measure=measure_run,
    rows=rows,
    load=lambda s: [(f"connections: opening {SIZES[s].connections:,}", "")],
    params=lambda s: SIZES[s],
)
