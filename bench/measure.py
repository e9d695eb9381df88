"""One measurement of delivery: a writer's commits against subscribers already connected, with the CPU
each part of the machine spent meanwhile."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
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
    sender: Worker | None = None  # the broadcast sender (bench/sender.py)
    # The instances whose CPU and counters a measurement takes: the suite's server, or those of
    # `instances()` while it runs; and whether the shared Redis works for them (its CPU is counted too).
    measured: list[Server] = field(default_factory=list)
    uses_redis: bool = False
    log_lines: list[str] = field(default_factory=list)  # of instances() that stopped

    def __post_init__(self) -> None:
        self.measured = self.measured or [self.server]

    @property
    def dbname(self) -> str:
        return str(psycopg.conninfo.conninfo_to_dict(self.dsn)["dbname"])

    @contextlib.contextmanager
    def instances(
        self, count: int, env: Mapping[str, str], *, with_server: bool = False
    ) -> Iterator[list[Server]]:
        """`count` more servers on this run's database (instances of one service), with `env` on top of
        the benchmark's; measurements count them (and, `with_server`, the suite's server, first in the
        list: it must have the same bus settings) instead of the suite's server until they stop."""
        with contextlib.ExitStack() as stack:
            servers = [self.server] if with_server else []
            for _ in range(count):
                log_path = self.work_dir / f"instance-{secrets.token_hex(4)}.log"
                stack.callback(self._keep_log, log_path)
                servers.append(stack.enter_context(harness.running_server(self.dsn, log_path, env)))
            before = self.measured, self.uses_redis
            self.measured, self.uses_redis = servers, bool(env.get("REALTIME_REDIS_URL"))
            try:
                yield servers
            finally:
                self.measured, self.uses_redis = before

    def _keep_log(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            self.log_lines.extend(path.read_text(errors="replace").splitlines())


@dataclass(frozen=True)
class Usage:
    """CPU seconds used so far by each part, and the wall clock, at one moment."""

    wall: float
    server: float  # every measured instance
    server_system: float  # of `server`, the time in the kernel (socket writes, mostly)
    postgres: float
    clients: float
    writer: float  # or the broadcast sender
    machine_busy: float  # clock ticks, all cores
    machine_total: float
    redis: float = 0.0  # the shared redis-server, when the instances use it


def usage(bench: Bench, *, clients: float, writer: float) -> Usage:
    """Now; the client and writer CPU times are the ones their processes last reported."""
    times = [server.cpu_seconds() for server in bench.measured]
    user, system = sum(t[0] for t in times), sum(t[1] for t in times)
    return Usage(
        time.monotonic(),
        user + system,
        system,
        harness.postgres_cpu_seconds(bench.dbname),
        clients,
        writer,
        *harness.machine_cpu_times(),
        redis=harness.redis_cpu_seconds() if bench.uses_redis else 0.0,
    )


def slow_consumer_closes(bench: Bench) -> int:
    """So far, over the measured instances."""
    return sum(server.stats()["slow_consumer_disconnects"] for server in bench.measured)


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
    if used("redis"):
        figures["cpu_redis_pct"] = 100 * used("redis") / wall
    # Near 100 means the machine, not the service alone, is the limit.
    figures["cpu_machine_pct"] = 100 * used("machine_busy") / max(1.0, used("machine_total"))
    # Whatever else ran meanwhile (other work on the machine, other databases): it skews every figure.
    parts = ("server", "postgres", "writer", "clients", "redis")
    ours = sum(figures.get(f"cpu_{part}_pct", 0.0) for part in parts)
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
    return _measure_writer(bench, ("paced", args), duration * 3 + 60, drain_timeout)


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
    return _measure_writer(bench, ("flat_out", args), duration * 3 + 60, drain_timeout)


def _measure_writer(
    bench: Bench, command: tuple[str, tuple[Any, ...]], write_timeout: float, drain_timeout: float
) -> Measurement:
    return deliveries_of(
        bench,
        lambda: bench.writer.call(command[0], *command[1], timeout=write_timeout),
        lambda: float(bench.writer.call("cpu")),
        drain_timeout,
    )


def deliveries_of(
    bench: Bench,
    load: Callable[[], WriterReport],
    load_cpu: Callable[[], float],
    drain_timeout: float,
    by_url: Mapping[str, str] | None = None,
) -> Measurement:
    """`load()` (a writer's commits, or a sender's broadcasts) judged against what the pool's connections
    received, with the CPU each part used meanwhile (`load_cpu()`: the load generator's CPU seconds so
    far). With `by_url` ({url: prefix}), also the latency figures of each instance's connections."""
    clients_before = bench.pool.reset()
    before = usage(bench, clients=clients_before, writer=load_cpu())
    closes_before = slow_consumer_closes(bench)
    report = load()
    sample, parts, clients_after = bench.pool.collect_by_url(report, drain_timeout)
    after = usage(bench, clients=clients_after, writer=report.cpu)
    latencies = sorted(sample.latencies)
    figures = delivery_figures(report, sample, latencies)
    for url, prefix in (by_url or {}).items():
        part = parts.get(url)
        if part is not None:
            figures.update({prefix + k: v for k, v in stats.latency_figures(sorted(part.latencies)).items()})
    figures["slow_consumer_closes"] = slow_consumer_closes(bench) - closes_before
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
