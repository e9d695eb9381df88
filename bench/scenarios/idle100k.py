"""Scenario idle100k (issue 14): 100,000 idle subscribed connections on one instance.

The clients are resuming subscribers (bench/resuming.py: a few hundred bytes each) in several processes
of their own, spread over loopback source addresses 127.0.0.x (bench/sources.py), so that neither the
ephemeral ports of one address pair nor the client processes' memory are the limit. Figures: the server's
RSS per connection (a few connections are opened first, so one-time costs are not charged to them), the
connect + subscribe rate, what heartbeats cost the server while every connection is idle (CPU over whole
heartbeat intervals, and per heartbeat sent, read from /metrics), and one change delivered to all: the
time from its COMMIT to each delivery, the last one above all.

The open-file limit is per process (hard 20,000 on the benchmark's machine: root without
CAP_SYS_RESOURCE), so where one process cannot hold them all the instance runs as many worker processes
as it takes (REALTIME_WORKERS, on one port: docs/operations.md); every server figure is the instance's,
summed over its processes, and each worker's connections are recorded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench import harness, measure, scale, sources, stats, workers
from bench.fleet import FleetPool
from bench.measure import Bench
from bench.scenarios.base import Row, RunResult, Scenario, Size, Target

TABLE = "bench_idle100k"
HEARTBEAT_INTERVAL = 5.0  # the server's, in this scenario: several intervals fit in a short idle span
DEFAULT_HEARTBEAT_INTERVAL = 30.0  # REALTIME_HEARTBEAT_INTERVAL's default, for the projected cost
HEARTBEAT_SAMPLE = 'messages_sent_total{type="heartbeat"}'


@dataclass(frozen=True)
class Params:
    connections: int
    warm: int = 500  # opened before the baseline RSS is taken
    processes: int = 4  # client processes
    in_flight: int = 64  # connection attempts under way at once, per client process
    settle: float = 2.0  # seconds before reading RSS: the last handshakes' buffers are released
    idle_intervals: int = 3  # heartbeat intervals the idle CPU is measured over
    open_timeout: float = 900.0
    drain_timeout: float = 60.0


SIZES: dict[Size, Params] = {
    "quick": Params(connections=5_000, idle_intervals=2, settle=1.0),
    "full": Params(connections=100_000),
}


def measure_run(bench: Bench, size: Size, earlier: list[RunResult]) -> RunResult:
    wanted = SIZES[size]
    connections = workers.instance_connections("idle100k", wanted.connections)
    params = replace(
        wanted, connections=connections, processes=workers.client_processes(connections, wanted.processes)
    )
    channel = harness.create_table(bench.dsn, TABLE)
    server = bench.server
    addresses = sources.source_addresses(params.connections)
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "channel": channel,
        "sources": addresses,
    }
    fleet = FleetPool(params.processes)
    try:
        fleet.open(settings, params.warm, params.in_flight, params.open_timeout)
        time.sleep(params.settle)
        rss_warm = server.rss_bytes()
        clients_warm = sum(s.rss_bytes for s in fleet.status())
        before = measure.usage(bench, clients=fleet.cpu_seconds(), writer=0.0)
        seconds = fleet.open(
            settings, params.connections - params.warm, params.in_flight, params.open_timeout
        )
        after = measure.usage(bench, clients=fleet.cpu_seconds(), writer=0.0)
        time.sleep(params.settle)
        rss_full = server.rss_bytes()
        server_stats = server.stats()
        open_on_server = server_stats["connections"]
        idle = idle_cost([server], params.idle_intervals * HEARTBEAT_INTERVAL)
        status = fleet.status()
        delivery = _one_change_to_all(bench, fleet, params.drain_timeout)
    finally:
        fleet.close()
        fleet.stop()
    added = params.connections - params.warm
    per_heartbeat = idle.pop("server_us_per_heartbeat")
    figures = {
        "connections": params.connections,
        "server_processes": workers.server_processes(wanted.connections),
        "capped_by_fd_limit": params.connections < wanted.connections,
        "open_on_server": open_on_server,
        "live_clients": sum(s.live for s in status),
        "rss_warm_mb": rss_warm / 2**20,
        "rss_full_mb": rss_full / 2**20,
        "kb_per_connection": (rss_full - rss_warm) / max(1, added) / 1024,
        "connect_per_s": added / seconds if seconds else 0.0,
        "connect_s": seconds,
        "server_cpu_us_per_connect": 1e6 * (after.server - before.server) / max(1, added),
        **measure.cpu_figures(before, after),
        **idle,
        "server_us_per_heartbeat": per_heartbeat,
        # The same work at the default interval, in % of one core.
        "heartbeat_pct_at_default": per_heartbeat * params.connections / DEFAULT_HEARTBEAT_INTERVAL / 1e4,
        **delivery.figures,
        **scale.client_figures(status),
        # Like the server's: what the connections added to the client processes, not their interpreters.
        "client_kb_per_connection": (sum(s.rss_bytes for s in status) - clients_warm) / max(1, added) / 1024,
    }
    details = {
        "kernel": sources.kernel_limits(),
        "server_fd_limit": sources.process_fd_limit(server.pid),
        "fd_note": workers.fd_limit_note(SIZES[size].connections),
        "per_worker_connections": [w.get("connections") for w in _workers_of(server_stats)],
        "source_addresses": len(addresses),
        "client_errors": [e for s in status for e in s.errors][:10],
        "params": asdict(params),
    }
    return RunResult(figures, {}, {**details, "delivery_cdf_ms": delivery.cdf})


def idle_cost(servers: Sequence[harness.Server], seconds: float) -> dict[str, float]:
    """The servers' CPU (summed) while every connection is idle, over `seconds` (whole heartbeat
    intervals)."""

    def sent_so_far() -> float:
        return sum(scale.scrape(server).get(HEARTBEAT_SAMPLE, 0.0) for server in servers)

    def cpu_so_far() -> float:
        return sum(sum(server.cpu_seconds()) for server in servers)

    sent_before = sent_so_far()
    cpu_before, started = cpu_so_far(), time.monotonic()
    time.sleep(seconds)
    cpu = cpu_so_far() - cpu_before
    wall = time.monotonic() - started
    sent = sent_so_far() - sent_before
    return {
        "idle_server_cpu_pct": 100 * cpu / wall,
        "heartbeats_sent": sent,
        # All of the idle CPU is charged to heartbeats: an upper bound (idle polls are in it too).
        "server_us_per_heartbeat": 1e6 * cpu / sent if sent else 0.0,
    }


@dataclass(frozen=True)
class Delivery:
    figures: dict[str, float | None]
    cdf: list[float]


def _one_change_to_all(bench: Bench, fleet: FleetPool, timeout: float) -> Delivery:
    fleet.forget()
    user_before, system_before = bench.server.cpu_seconds()
    row_id, committed_at = scale.insert_row(bench.dsn, TABLE)
    delivered = fleet.wait_rows(row_id, timeout)
    user_after, system_after = bench.server.cpu_seconds()
    verdicts = fleet.verdicts(row_id, row_id, 1, row_id, float("inf"))
    latencies = sorted(t - committed_at for t in scale.joined(verdicts, "received_at") if t > 0)
    counts = scale.merged(verdicts)
    figures = {
        "change_delivered": delivered,
        "change_exact": counts["exact"],
        # The server's CPU per delivery, in Python and in the kernel: on loopback the sender's send also
        # pays for the receiver's TCP work, which a network would move to the clients' machines.
        "delivery_user_us": 1e6 * (user_after - user_before) / max(1, delivered),
        "delivery_system_us": 1e6 * (system_after - system_before) / max(1, delivered),
        **{f"change_{k}": v for k, v in stats.latency_figures(latencies).items()},
    }
    return Delivery(figures, stats.cdf_ms(latencies))


def rows(size: Size) -> list[Row]:
    params = SIZES[size]
    return [
        Row(
            f"idle100k: {params.connections:,} idle subscribed, one instance "
            f"({_processes(params.connections)})",
            "server RSS per connection",
            "kb_per_connection",
            "{:.1f}",
            "KB",
            Target("<=", 10, "≤ 10 KB"),
        ),
        Row("", "connections held", "open_on_server", "{:,.0f}"),
        Row("", "worker processes (open files are limited per process)", "server_processes", "{:,.0f}"),
        Row(
            "", "connect + subscribe rate", "connect_per_s", "{:,.0f}", "/s", Target(">=", 5000, "≥ 5,000/s")
        ),
        Row("", "server RSS with all open", "rss_full_mb", "{:,.0f}", "MB"),
        Row(
            "",
            f"server CPU idle (heartbeat every {HEARTBEAT_INTERVAL:g} s)",
            "idle_server_cpu_pct",
            "{:.1f}",
            "%",
        ),
        Row("", "server CPU per heartbeat sent", "server_us_per_heartbeat", "{:.1f}", "µs"),
        Row("", "one change to all: delivered", "change_delivered", "{:,.0f}"),
        Row("", "one change to all: p50 (from the INSERT sent)", "change_p50_ms", "{:,.0f}", "ms"),
        Row(
            "",
            "one change to all: last delivery",
            "change_max_ms",
            "{:,.0f}",
            "ms",
            Target("<=", 1000, "≤ 1 s"),
        ),
        Row("", "one change to all: server CPU per delivery, user", "delivery_user_us", "{:.1f}", "µs"),
        Row("", "one change to all: server CPU per delivery, kernel", "delivery_system_us", "{:.1f}", "µs"),
        Row("", "client RSS per connection", "client_kb_per_connection", "{:.1f}", "KB"),
    ]


def _workers_of(server_stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each worker process's own stats (REALTIME_WORKERS > 1), or none."""
    return list(server_stats.get("workers") or [])


def _processes(connections: int) -> str:
    count = workers.server_processes(connections)
    return "one process" if count == 1 else f"{count} worker processes on one port"


SCENARIO = Scenario(
    name="idle100k",
    measure=measure_run,
    rows=rows,
    load=lambda s: [(f"idle100k: opening {SIZES[s].connections:,}", "")],
    params=lambda s: SIZES[s],
    server_env={"REALTIME_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL)},
    sized_env=lambda s: workers.instance_env(SIZES[s].connections),
    max_runs=1,  # minutes per run at full size
)
