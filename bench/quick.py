"""`make bench-quick`: delivery latency and fan-out throughput over loopback, in well under a minute.

The service runs as its own subprocess; subscribers and the writer run in separate (spawned) processes,
so no client shares the server's event loop. Figures are printed as Markdown and written, with the
machine's facts, to bench/results/quick-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import clients, harness, writer
from bench.harness import PROJECT_ROOT, Server

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
# How long subscribers may keep receiving after the last commit; a bound, so a stuck run still ends.
DRAIN_TIMEOUT = 10.0
SETUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Scenario:
    """One load shape: `subscribers` on one table's channel, a writer at `rate` changes/s for `duration` s."""

    name: str
    table: str
    subscribers: int
    processes: int
    rate: float
    duration: float

    @property
    def label(self) -> str:
        return f"{self.name}: {self.subscribers} subs, {self.rate:g} changes/s for {self.duration:g}s"


SCENARIOS = (
    Scenario("latency", "bench_latency", subscribers=100, processes=2, rate=200, duration=5),
    Scenario("fan-out", "bench_fanout", subscribers=1000, processes=2, rate=100, duration=5),
)


def run_scenario(scenario: Scenario, server: Server, dsn: str) -> dict[str, Any]:
    """One run: subscribe everyone, write, let deliveries drain, and summarize what arrived."""
    spawn = multiprocessing.get_context("spawn")
    results: Any = spawn.Queue()
    controls: list[Any] = [spawn.Queue() for _ in range(scenario.processes)]
    share, extra = divmod(scenario.subscribers, scenario.processes)
    counts = [share + (i < extra) for i in range(scenario.processes)]
    channel = f"table:public.{scenario.table}"
    # Daemons: should the coordinator die, they die with it instead of waiting for orders forever.
    processes = [
        spawn.Process(target=clients.run, args=(server.ws_url, channel, n, control, results), daemon=True)
        for n, control in zip(counts, controls, strict=True)
    ]
    writer_args = (dsn, scenario.table, scenario.rate, scenario.duration, results)
    processes.append(spawn.Process(target=writer.run, args=writer_args, daemon=True))
    before = server.stats()
    try:
        for process in processes[:-1]:
            process.start()
        connect_started = time.monotonic()
        cpu_at_ready = _collect(results, "ready", scenario.processes, SETUP_TIMEOUT)
        # Usage is measured from here on: delivery only, not process start-up or connecting.
        usage_before = _usage(server)
        processes[-1].start()  # the writer starts only once every subscription is acked
        (report,) = _collect(results, "writer", 1, scenario.duration * 3 + SETUP_TIMEOUT)
        for control in controls:
            control.put((len(report.ids), DRAIN_TIMEOUT))
        per_process = _collect(results, "report", scenario.processes, DRAIN_TIMEOUT + SETUP_TIMEOUT)
        usage_after = _usage(server)
    except BaseException:
        for process in processes:
            if process.pid is not None:
                process.terminate()
        raise
    finally:
        for process in processes:
            if process.pid is not None:
                process.join(timeout=10)
    figures = summarize(report, [d for deliveries, _ in per_process for d in deliveries])
    figures["connect_s"] = usage_before[0] - connect_started
    clients_cpu = sum(cpu for _, cpu in per_process) - sum(cpu_at_ready)
    figures.update(_cpu_figures(usage_before, usage_after, clients_cpu))
    figures["slow_consumer_disconnects"] = (
        server.stats()["slow_consumer_disconnects"] - before["slow_consumer_disconnects"]
    )
    return figures


Usage = tuple[float, float, float, float]


def _usage(server: Server) -> Usage:
    """(wall clock, server CPU seconds, machine busy ticks, machine total ticks) now."""
    return (time.monotonic(), server.cpu_seconds(), *harness.machine_cpu_times())


def _cpu_figures(before: Usage, after: Usage, clients_cpu: float) -> dict[str, float]:
    """CPU shares over a span: server and clients in % of one core, the machine in % of all cores."""
    wall = after[0] - before[0]
    return {
        "server_cpu_pct": 100 * (after[1] - before[1]) / wall,
        "clients_cpu_pct": 100 * clients_cpu / wall,
        # Near 100 means the machine, not the service alone, is the limit.
        "machine_cpu_pct": 100 * (after[2] - before[2]) / max(1.0, after[3] - before[3]),
    }


def _collect(results: Any, kind: str, count: int, timeout: float) -> list[Any]:
    """The payloads of the next `count` messages of `kind`; a child's error or the timeout raises."""
    deadline = time.monotonic() + timeout
    payloads: list[Any] = []
    while len(payloads) < count:
        try:
            message = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {kind!r} messages") from None
        if message[0] == "error":
            raise RuntimeError(f"{message[1]} process failed: {message[2]}")
        if message[0] != kind:
            raise RuntimeError(f"expected {kind!r}, got {message[0]!r}")
        payloads.append(message[1])
    return payloads


def summarize(report: writer.WriterReport, deliveries: list[clients.Deliveries]) -> dict[str, Any]:
    """Latency of every (subscriber, change) delivery, plus what was missing, doubled or out of order."""
    committed_at = dict(zip(report.ids, report.committed_at, strict=True))
    latencies: list[float] = []
    missing = duplicates = unexpected = out_of_order = 0
    for connection in deliveries:
        seen: set[int] = set()
        previous = 0
        for row_id, received in zip(connection.ids, connection.received_at, strict=True):
            if row_id not in committed_at:
                unexpected += 1
            elif row_id in seen:
                duplicates += 1
            else:
                seen.add(row_id)
                latencies.append(received - committed_at[row_id])
            # One writer commits in id order, so the service must deliver in id order too.
            out_of_order += row_id < previous
            previous = row_id
        missing += len(committed_at) - len(seen)
    times = [
        t for connection in deliveries for t in (connection.received_at[:1] + connection.received_at[-1:])
    ]
    window = max(times) - min(times) if times else 0.0
    latencies.sort()
    return {
        "subscribers": len(deliveries),
        "changes": len(committed_at),
        "writer_rate": len(committed_at) / report.elapsed if report.elapsed else 0.0,
        "writer_late_commits": report.late,
        "expected": len(deliveries) * len(committed_at),
        "delivered": len(latencies),
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "out_of_order": out_of_order,
        "closed_by_server": sum(c.close_code is not None for c in deliveries),
        "other_frames": sum(c.other_frames for c in deliveries),
        "deliveries_per_s": len(latencies) / window if window else 0.0,
        "min_ms": _percentile(latencies, 0.0),
        "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": _percentile(latencies, 1.0),
    }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and min-max of every numeric figure across runs."""
    summary = {}
    for key, value in runs[0].items():
        values = [run[key] for run in runs if run[key] is not None]
        if isinstance(value, int | float) and values:
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


COLUMNS = (
    ("expected", "expected", "{:.0f}"),
    ("delivered", "delivered", "{:.0f}"),
    ("missing", "missing", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p95 ms", "p95_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("max ms", "max_ms", "{:.1f}"),
    ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
    ("server %core", "server_cpu_pct", "{:.0f}"),
    ("clients %core", "clients_cpu_pct", "{:.0f}"),
    ("machine %all", "machine_cpu_pct", "{:.0f}"),
    ("slow closes", "slow_consumer_disconnects", "{:.0f}"),
)


def markdown(summaries: dict[str, dict[str, dict[str, float]]], runs: int) -> str:
    """One row per scenario; with several runs each cell is `median (min-max)`."""
    lines = [
        "| scenario | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for label, summary in summaries.items():
        cells = []
        for _, key, spec in COLUMNS:
            figure = summary.get(key)
            if figure is None:
                cells.append("-")
            elif runs == 1 or figure["min"] == figure["max"]:
                cells.append(spec.format(figure["median"]))
            else:
                low, high = spec.format(figure["min"]), spec.format(figure["max"])
                cells.append(f"{spec.format(figure['median'])} ({low}-{high})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(document: dict[str, Any]) -> Path:
    """bench/results/quick-<UTC timestamp>.json, written whole or not at all."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"quick-{document['started_at']}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quick", description=__doc__)
    parser.add_argument("--runs", type=int, default=1, help="repetitions of each scenario (median, min-max)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # SIGTERM as an exception, so the server is stopped and the scratch database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started, stamp = time.monotonic(), datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Other work on a 2-core machine skews every figure: keep a record of how busy it was.
    load_at_start = os.getloadavg()
    admin_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)
    runs: dict[str, list[dict[str, Any]]] = {s.label: [] for s in SCENARIOS}
    with (
        tempfile.TemporaryDirectory(prefix="fluxbase-bench-") as work,
        harness.scratch_database(admin_url) as dsn,
    ):
        with harness.running_server(dsn, Path(work) / "server.log") as server:
            try:
                for scenario in SCENARIOS:
                    harness.create_realtime_table(dsn, scenario.table)
                for scenario in SCENARIOS:
                    for _ in range(args.runs):
                        runs[scenario.label].append(run_scenario(scenario, server, dsn))
            except BaseException:
                print("\n".join(["server log (last lines):", *server.log_lines()[-20:]]), file=sys.stderr)
                raise
            facts = {**harness.machine_facts(dsn), "load_average_at_start": load_at_start}
            server_stats = server.stats()
        server_log = server.log_lines()  # LOG_LEVEL=warning: anything here is worth reading

    summaries = {name: aggregate(results) for name, results in runs.items()}
    document = {
        "started_at": stamp,
        "elapsed_s": time.monotonic() - started,
        "machine": facts,
        "scenarios": [asdict(s) for s in SCENARIOS],
        "drain_timeout_s": DRAIN_TIMEOUT,
        "runs": runs,
        "summary": summaries,
        "server_stats": server_stats,
        "server_log": server_log[-50:],
    }
    print_report(document, write_results(document), args.runs)


def print_report(document: dict[str, Any], path: Path, runs: int) -> None:
    """The Markdown table, then what a reader needs to judge it."""
    facts = document["machine"]
    load = facts["load_average_at_start"][0]
    print(markdown(document["summary"], runs))
    print(
        f"\n{facts['cpu_count']} CPUs ({facts['cpu_model']}), load average {load:.2f}"
        " at start: the server, PostgreSQL, the writer and the client processes compete for them, so latency"
        " includes client-side scheduling and deliveries/s is a floor, not the server's ceiling."
    )
    print(
        f"Latency: client receive minus the writer's COMMIT return (same clock). Missing: not received"
        f" within {DRAIN_TIMEOUT:.0f}s of the last commit. %core: of one core; machine %all: of all cores."
    )
    print(f"{len(document['server_log'])} server log lines at WARNING or above.")
    print(f"Results: {path.relative_to(PROJECT_ROOT)}; took {document['elapsed_s']:.1f}s.")


if __name__ == "__main__":
    main()
