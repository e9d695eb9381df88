"""One measurement of delivery: a writer's commits against subscribers already connected, with the CPU
each part of the machine spent meanwhile."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import harness, stats
from bench.clients import SubscriberPool
from bench.deliveries import Sample, WriterReport
from bench.harness import Server
from bench.workers import Worker

# Delivery keeps up when every change arrived and the lag did not grow by more than the larger of a
# floor (scheduling noise) and a share of the measurement's length: a lag growing by 5% of the time
# written means delivery ran below about 95% of the offered rate.
GROWTH_FLOOR_MS = 25.0
GROWTH_SHARE = 0.05


@dataclass
class Bench:
    """What every scenario measures with: the scratch database, the service, the load generator."""

    dsn: str
    server: Server
    pool: SubscriberPool
    writer: Worker
    work_dir: Path

    @property
    def dbname(self) -> str:
        return str(psycopg.conninfo.conninfo_to_dict(self.dsn)["dbname"])


@dataclass(frozen=True)
class Usage:
    """CPU seconds used so far by each part, and the wall clock, at one moment."""

    wall: float
    server: float
    server_system: float  # of `server`, the time in the kernel (socket writes, mostly)
    postgres: float
    clients: float
    writer: float
    machine_busy: float  # clock ticks, all cores
    machine_total: float


def usage(bench: Bench, *, clients: float, writer: float) -> Usage:
    """Now; the client and writer CPU times are the ones their processes last reported."""
    user, system = bench.server.cpu_seconds()
    return Usage(
        time.monotonic(),
        user + system,
        system,
        harness.postgres_cpu_seconds(bench.dbname),
        clients,
        writer,
        *harness.machine_cpu_times(),
    )


def cpu_figures(before: Usage, after: Usage) -> dict[str, float]:
    """CPU shares over a span: each part in % of one core, the whole machine in % of all its cores."""
    return span_figures([(before, after)])


def span_figures(spans: list[tuple[Usage, Usage]]) -> dict[str, float]:
    """`cpu_figures` over several spans taken together (say, every phase with realtime on)."""
    wall = max(1e-9, sum(after.wall - before.wall for before, after in spans))

    def used(part: str) -> float:
        return float(sum(getattr(after, part) - getattr(before, part) for before, after in spans))

    figures = {
        f"cpu_{part}_pct": 100 * used(part) / wall
        for part in ("server", "server_system", "postgres", "writer", "clients")
    }
    # Near 100 means the machine, not the service alone, is the limit.
    figures["cpu_machine_pct"] = 100 * used("machine_busy") / max(1.0, used("machine_total"))
    # Whatever else ran meanwhile (other work on the machine, other databases): it skews every figure.
    ours = sum(figures[f"cpu_{part}_pct"] for part in ("server", "postgres", "writer", "clients"))
    figures["cpu_other_pct"] = max(0.0, figures["cpu_machine_pct"] * (os.cpu_count() or 1) - ours)
    return figures


@dataclass
class Measurement:
    """Figures of one measurement, and its latency CDF (ms at stats.CDF_PROBABILITIES)."""

    figures: dict[str, Any]
    cdf: list[float] = field(default_factory=list)


def paced(
    bench: Bench,
    table: str,
    *,
    rate: float,
    duration: float,
    payload_bytes: int,
    drain_timeout: float,
    owners: tuple[str, ...] = (),
) -> Measurement:
    """Single-row transactions at `rate`/s for `duration` s, delivered to the pool's connections; with
    `owners`, rows owned by each in turn, delivered to that owner's connections only (by tag)."""
    args = (bench.dsn, table, rate, duration, payload_bytes, owners)
    return _measure(bench, ("paced", args), duration * 3 + 60, drain_timeout)


def flat_out(
    bench: Bench,
    table: str,
    *,
    rows: int,
    duration: float,
    max_rows: int,
    drain_timeout: float,
    per_second: float = 0.0,
) -> Measurement:
    """`rows`-row INSERT statements as fast as one writer can commit them (or `per_second` of them), for
    `duration` s."""
    args = (bench.dsn, table, rows, duration, max_rows, per_second)
    return _measure(bench, ("flat_out", args), duration * 3 + 60, drain_timeout)


def _measure(
    bench: Bench, command: tuple[str, tuple[Any, ...]], write_timeout: float, drain_timeout: float
) -> Measurement:
    clients_before = bench.pool.reset()
    before = usage(bench, clients=clients_before, writer=bench.writer.call("cpu"))
    closes_before = bench.server.stats()["slow_consumer_disconnects"]
    report: WriterReport = bench.writer.call(command[0], *command[1], timeout=write_timeout)
    sample, clients_after = bench.pool.collect(report, drain_timeout)
    after = usage(bench, clients=clients_after, writer=report.cpu)
    latencies = sorted(sample.latencies)
    figures = delivery_figures(report, sample, latencies)
    figures["slow_consumer_closes"] = bench.server.stats()["slow_consumer_disconnects"] - closes_before
    figures["keeps_up"] = bool(figures["keeps_up"]) and figures["slow_consumer_closes"] == 0
    figures.update(cpu_figures(before, after))
    return Measurement(figures, stats.cdf_ms(latencies))


def growth_limit_ms(seconds: float) -> float:
    """The most the lag may grow during a measurement of `seconds` for delivery to count as keeping up."""
    return max(GROWTH_FLOOR_MS, GROWTH_SHARE * seconds * 1000)


def delivery_figures(report: WriterReport, sample: Sample, latencies: list[float]) -> dict[str, Any]:
    """Everything a reader needs to judge one measurement of delivery (`latencies`: sorted)."""
    window = sample.last_received - report.committed_at[0] if sample.delivered and report.ids else 0.0
    growth = stats.lag_growth_ms(sample.completion)
    complete = not (
        sample.missing or sample.disordered or sample.unexpected or sample.leaked or sample.closed_by_server
    )
    return {
        "subscribers": sample.subscribers,
        "changes": sample.changes,
        "statements": report.statements,
        "writer_rate": report.rate,
        "writer_late": report.late,
        "expected": sample.delivered + sample.missing,  # subscribers x changes, or each owner's share
        "delivered": sample.delivered,
        "missing": sample.missing,
        "disordered": sample.disordered,
        "unexpected": sample.unexpected,
        "stale": sample.stale,
        "closed_by_server": sample.closed_by_server,
        "other_frames": sample.other_frames,
        "leaked": sample.leaked,
        # From the first COMMIT to the last frame received: a rate sustained end to end.
        "deliveries_per_s": sample.delivered / window if window > 0 else 0.0,
        "changes_per_s": sample.delivered / max(1, sample.subscribers) / window if window > 0 else 0.0,
        **stats.latency_figures(latencies),
        "lag_growth_ms": growth,
        # A lag that shrank as much means the measurement began with a backlog or a stall: not clean.
        "keeps_up": complete and growth is not None and abs(growth) <= growth_limit_ms(report.elapsed),
    }


def warm_up(bench: Bench, table: str, *, rate: float, seconds: float = 0.3, payload_bytes: int = 64) -> None:
    """A short paced write whose figures are thrown away: the first changes after connecting pay for
    prepared statements, caches and the allocator's first growth."""
    paced(bench, table, rate=rate, duration=seconds, payload_bytes=payload_bytes, drain_timeout=10)
