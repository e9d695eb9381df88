"""Issue 9, broadcast fan-out: one client's broadcasts to the other subscribers of a `broadcast:` channel.

One sender (its own process) sends paced broadcasts, each carrying its number and its send time; the
subscribers (the client processes) note when each arrives: latency is the subscriber's receipt minus the
send, on the same clock. The rate is stepped up as in the table fan-out scenario (bench/stepping.py) until
delivery stops keeping up. Three setups per run, each with its own search:
- `single`: every subscriber on one instance (the suite's server);
- `postgres`, `redis`: two fresh instances on the run's database, half of the subscribers on each, the
  sender on the first; the messages cross through the PostgreSQL bus (NOTIFY) or Redis (PUB/SUB).
The per-connection message rate is raised for the sender (REALTIME_MAX_MESSAGES_PER_SECOND).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bench import measure, stepping
from bench.harness import Server
from bench.measure import Bench, Measurement
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target
from bench.scenarios.cluster_setup import BUSES, two_instances
from bench.stats import Summary

CHANNEL = "broadcast:bench-fanout"
KEPT = ("deliveries_per_s", "p50_ms", "p99_ms", "max_ms", "writer_rate", "subscribers")
SETUPS = ("single", *BUSES)
# The sender sends far more than a person would; nothing else in these runs is limited.
ENV = {"REALTIME_MAX_MESSAGES_PER_SECOND": "1000000"}
WARM_UP = 0.3  # s
PAYLOAD_BYTES = 64  # of padding: the frame is ~150 bytes, like a cursor or a chat line


@dataclass(frozen=True)
class Params:
    subscribers: int
    step_duration: float
    start_deliveries: float  # offered deliveries/s of the first step of the first run
    factor: float = 1.5
    resolution: float = 1.25
    max_steps: int = 6
    processes: int = 4
    drain_timeout: float = 10.0


SIZES: dict[Size, Params] = {
    "quick": Params(subscribers=200, step_duration=1.0, start_deliveries=10_000, max_steps=1),
    "full": Params(subscribers=1000, step_duration=2.0, start_deliveries=60_000, max_steps=10),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    result = RunResult(details={"steps": {}})
    for setup in SETUPS:
        if setup == "single":
            search = _search_on(bench, [bench.server], setup, params, earlier)
        else:
            with two_instances(bench, setup, ENV) as servers:
                search = _search_on(bench, list(servers), setup, params, earlier)
        result.details["steps"][setup] = search.steps
        figures = search.figures((*KEPT, "local.p99_ms", "remote.p99_ms"), params.subscribers)
        result.add(f"{setup}.", figures)
        if search.best is not None:
            result.cdfs[f"broadcast: {params.subscribers} subs, {_title(setup)}"] = search.best[1].cdf
    single = result.figures.get("single.deliveries_per_s")
    for bus in BUSES:
        rate = result.figures.get(f"{bus}.deliveries_per_s")
        result.figures[f"{bus}.vs_single"] = rate / single if rate and single else None
    return result


def _search_on(
    bench: Bench, servers: list[Server], setup: str, params: Params, earlier: list[RunResult]
) -> stepping.Search:
    """Subscribers spread over `servers`, the sender on the first; the highest rate that keeps up."""
    counts = [
        params.subscribers // len(servers) + (i < params.subscribers % len(servers))
        for i in range(len(servers))
    ]
    by_url = {} if len(servers) == 1 else {servers[0].ws_url: "local.", servers[1].ws_url: "remote."}

    def connect() -> None:
        # Also reopens any connection the server closed as too slow in an earlier step.
        for server, count in zip(servers, counts, strict=True):
            bench.pool.connect(server.ws_url, CHANNEL, count, params.processes, kind="broadcast")

    def step(rate: float, seconds: float = params.step_duration) -> Measurement:
        connect()
        if bench.sender is None:
            raise RuntimeError("no sender process")
        sender = bench.sender
        measured = measure.deliveries_of(
            bench,
            lambda: sender.call("paced", rate, seconds, PAYLOAD_BYTES, timeout=seconds * 3 + 60),
            lambda: float(sender.call("cpu")),
            params.drain_timeout,
            by_url,
        )
        refused = int(sender.call("refused"))
        measured.figures["sender_refused"] = refused
        if refused:  # rate-limited, or closed: the rate asked was not what the server accepted
            measured.figures["keeps_up"] = False
            sender.call("connect", servers[0].ws_url, CHANNEL)
        return measured

    assert bench.sender is not None
    try:
        connect()
        bench.sender.call("connect", servers[0].ws_url, CHANNEL)
        start = _start_rate(setup, params, earlier)
        step(start / 2, WARM_UP)  # thrown away: first frames pay for caches and the allocator
        return stepping.highest_sustained(
            step, start, factor=params.factor, resolution=params.resolution, max_steps=params.max_steps
        )
    finally:
        bench.sender.call("close")
        bench.pool.close()


def _start_rate(setup: str, params: Params, earlier: list[RunResult]) -> float:
    """Broadcasts/s of the first step: just below the last run's answer, or a modest default."""
    for result in reversed(earlier):
        rate = result.figures.get(f"{setup}.rate")
        if rate:
            return float(rate) / math.sqrt(params.factor)
    return params.start_deliveries / params.subscribers


def derive(summaries: Mapping[str, Summary]) -> Summary:
    """The table fan-out figure of this run at the same number of subscribers, and the ratio of
    medians, when the fanout scenario ran."""
    summary = summaries.get("broadcast", {})
    ours, subscribers = summary.get("single.deliveries_per_s"), summary.get("single.subscribers")
    if ours is None or subscribers is None:
        return {}
    table = summaries.get("fanout", {}).get(f"s{subscribers['median']:.0f}.deliveries_per_s")
    if table is None or not table["median"]:
        return {}
    ratio = ours["median"] / table["median"]
    return {
        "table.deliveries_per_s": table,
        "single.vs_table": {"median": ratio, "min": ratio, "max": ratio},
    }


def _title(setup: str) -> str:
    return "one instance" if setup == "single" else f"two instances through {_BUS_NAMES[setup]}"


_BUS_NAMES = {"postgres": "PostgreSQL", "redis": "Redis"}


def rows(size: Size) -> list[Row]:
    n = SIZES[size].subscribers
    lines = [
        Row(
            f"broadcast: 1 sender → {n:,} subs, one instance",
            "sustained deliveries/s",
            "single.deliveries_per_s",
            "{:,.0f}",
        ),
        Row(
            "",
            "table fan-out, same subscribers, this run (fanout scenario)",
            "table.deliveries_per_s",
            "{:,.0f}",
        ),
        Row(
            "",
            "broadcast / table fan-out (medians)",
            "single.vs_table",
            "{:.2f}",
            "",
            Target(">=", 1.0, "≥ 1.0"),
        ),
    ]
    for setup in SETUPS:
        prefix = f"{setup}."
        if setup != "single":
            lines += [
                Row(
                    f"broadcast: 1 sender → {n:,} subs, {_title(setup)} ({n // 2:,} on each)",
                    "sustained deliveries/s",
                    prefix + "deliveries_per_s",
                    "{:,.0f}",
                ),
                Row(
                    "",
                    "/ one instance (same run)",
                    prefix + "vs_single",
                    "{:.2f}",
                    "",
                    Target(">=", 0.5, "≥ 0.5") if setup == "redis" else None,
                ),
            ]
        lines += [
            Row("", "at broadcasts/s (sent)", prefix + "writer_rate", "{:,.0f}"),
            Row("", "p50 there", prefix + "p50_ms", "{:.1f}", "ms"),
            Row("", "p99 there", prefix + "p99_ms", "{:.1f}", "ms"),
        ]
        if setup != "single":
            lines += [
                Row(
                    "",
                    "p99 there, subscribers on the sender's instance",
                    prefix + "local.p99_ms",
                    "{:.1f}",
                    "ms",
                ),
                Row(
                    "",
                    "p99 there, subscribers on the other instance",
                    prefix + "remote.p99_ms",
                    "{:.1f}",
                    "ms",
                ),
            ]
        lines += [
            Row("", "next step, lagging (offered deliveries/s)", prefix + "failed_deliveries", "{:,.0f}"),
            Row("", "runs whose next step the sender could not pace", prefix + "failed_by_writer", "{:.0%}"),
        ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    n = SIZES[size].subscribers
    return [
        (f"broadcast: {n:,} subs, {_title(setup)}, at the sustainable rate", f"{setup}.") for setup in SETUPS
    ]


SCENARIO = Scenario(
    name="broadcast",
    measure=measure_run,
    rows=rows,
    load=load,
    params=lambda s: SIZES[s],
    server_env=ENV,
    derive=derive,
)
