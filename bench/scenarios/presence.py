"""Issue 9, presence: N connections over two instances (half on each) track on one channel.

Every connection subscribes first (its presence_state is empty), then tracks, on a schedule spread over
the client processes and both instances: `burst`, all at the same moment (a class starting, a page
reloaded by everyone), or `paced`, one every 1/PACE s (a crowd arriving). Each connection counts the
channel's presences from the diffs it receives and notes when it first saw all N. Figures:
- time until every connection saw N presences, from the first track (burst) or the last one (paced);
- presence_diff bytes each member received while the N joined, divided by N: constant in N when each
  join costs a diff entry, linear in N if a join cost a full state.
Each (bus, mode, N) has a channel of its own; its connections are closed before the next one starts.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import measure
from bench.clients import PresenceSeen
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target, settle
from bench.scenarios.cluster_setup import BUSES, two_instances

MODES = ("burst", "paced")
PACE = 500.0  # tracks/s of the paced mode
# Every connection tracks once; its message and presence rates are far above that.
ENV = {"REALTIME_MAX_MESSAGES_PER_SECOND": "1000", "REALTIME_MAX_PRESENCE_UPDATES_PER_SECOND": "100"}
START_DELAY = 0.5  # s between scheduling the tracks and the first one: every process has its schedule
WAIT = 30.0  # s at most for every connection to see everyone


@dataclass(frozen=True)
class Params:
    counts: tuple[int, int]  # N: the smaller and the larger, whose bytes per join are compared
    buses: tuple[str, ...]
    processes: int = 4


SIZES: dict[Size, Params] = {
    "quick": Params(counts=(50, 200), buses=("postgres",)),
    "full": Params(counts=(100, 1000), buses=BUSES),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    params = SIZES[size]
    result = RunResult(details={"phases": {}})
    for bus in params.buses:
        with two_instances(bench, bus, ENV) as servers:
            for mode in MODES:
                for n in params.counts:
                    prefix = f"{bus}.{mode}.n{n}."
                    figures = _phase(bench, [s.ws_url for s in servers], f"{bus}-{mode}-{n}", mode, n, params)
                    result.add(prefix, figures)
                    result.details["phases"][prefix] = figures
                    settle(0.5)
                small, large = (
                    result.figures.get(f"{bus}.{mode}.n{n}.bytes_per_join") for n in params.counts
                )
                result.figures[f"{bus}.{mode}.bytes_ratio"] = large / small if small and large else None
    return result


def _phase(bench: Bench, urls: list[str], name: str, mode: str, n: int, params: Params) -> dict[str, Any]:
    channel = f"broadcast:bench-presence-{name}"
    try:
        for i, url in enumerate(urls):
            share = n // len(urls) + (i < n % len(urls))
            bench.pool.connect(url, channel, share, params.processes, kind="presence")
        interval = 0.0 if mode == "burst" else 1.0 / PACE
        clients_before = bench.pool.cpu()
        before = measure.usage(bench, clients=clients_before, writer=0.0)
        closes_before = measure.slow_consumer_closes(bench)
        start_at = time.time() + START_DELAY
        tracking = bench.pool.track(channel, n, start_at, interval)
        seen = bench.pool.presence(channel, WAIT + START_DELAY + n * interval)
        after = measure.usage(bench, clients=bench.pool.cpu(), writer=0.0)
        figures = _figures(seen, n, tracking, start_at, start_at + (n - 1) * interval)
        figures["slow_consumer_closes"] = measure.slow_consumer_closes(bench) - closes_before
        figures.update(measure.cpu_figures(before, after))
        return figures
    finally:
        bench.pool.close(abort=True)


def _figures(
    seen: list[PresenceSeen], n: int, tracking: int, first_track: float, last_track: float
) -> dict[str, Any]:
    full_at = [t for part in seen for t in part.full_at]
    members = [m for part in seen for m in part.members]
    reached = [t for t in full_at if t is not None]
    complete = len(reached) == n == tracking and all(m == n for m in members)
    last = max(reached) if reached else None
    diff_bytes = sum(part.diff_bytes for part in seen)
    return {
        "connections": tracking,
        "complete": float(complete),
        "short": sum(t is None for t in full_at),  # connections that never saw all N
        "overcounted": sum(m > n for m in members),
        "errors": sum(len(part.errors) for part in seen),
        "closed": sum(part.closed for part in seen),
        # Until the last connection saw all N, from the first track and from the last.
        "all_seen_ms": 1000 * (last - first_track) if complete and last is not None else None,
        "after_last_track_ms": 1000 * (last - last_track) if complete and last is not None else None,
        "median_seen_ms": 1000 * (statistics.median(reached) - first_track) if reached else None,
        "bytes_per_join": diff_bytes / max(1, len(members)) / n,
        "diffs_per_member": sum(part.diff_frames for part in seen) / max(1, len(members)),
    }


MODE_TITLES = {"burst": "all track at once", "paced": f"tracks paced at {PACE:.0f}/s"}
BUS_TITLES = {"postgres": "PostgreSQL bus", "redis": "Redis bus"}


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    small, large = params.counts
    lines = []
    for bus in params.buses:
        for mode in MODES:
            base = f"{bus}.{mode}."
            big = f"{base}n{large}."
            elapsed = "all_seen_ms" if mode == "burst" else "after_last_track_ms"
            since = "the first track" if mode == "burst" else "the last track"
            lines += [
                Row(
                    f"presence: {large:,} conns on 2 instances, {BUS_TITLES[bus]}, {MODE_TITLES[mode]}",
                    f"every connection sees {large:,}: time after {since}",
                    big + elapsed,
                    "{:,.0f}",
                    "ms",
                    Target("<=", 2000, "≤ 2,000 ms"),
                ),
                Row(
                    "",
                    "half of the connections saw all (from the first track)",
                    big + "median_seen_ms",
                    "{:,.0f}",
                    "ms",
                ),
                Row(
                    "",
                    f"diff bytes per join and member, N = {small:,}",
                    f"{base}n{small}.bytes_per_join",
                    "{:,.0f}",
                    "B",
                ),
                Row(
                    "",
                    f"diff bytes per join and member, N = {large:,}",
                    big + "bytes_per_join",
                    "{:,.0f}",
                    "B",
                ),
                Row(
                    "",
                    f"ratio N = {large:,} / N = {small:,} (a full state per join: ~{large / small:.0f})",
                    base + "bytes_ratio",
                    "{:.2f}",
                    "",
                    Target("<=", 1.5, "≤ 1.5 (constant)"),
                ),
                Row(
                    "", f"presence_diff frames per member, N = {large:,}", big + "diffs_per_member", "{:,.0f}"
                ),
                Row("", "every connection saw exactly N (runs)", big + "complete", "{:.0%}"),
            ]
    return lines


def load(size: Size) -> list[tuple[str, str]]:
    params = SIZES[size]
    n = params.counts[1]
    return [
        (f"presence: {n:,} conns, {BUS_TITLES[bus]}, {MODE_TITLES[mode]}", f"{bus}.{mode}.n{n}.")
        for bus in params.buses
        for mode in MODES
    ]


SCENARIO = Scenario(
    name="presence", measure=measure_run, rows=rows, load=load, params=lambda s: SIZES[s], server_env=ENV
)
