"""The benchmark suite of issue 5: `make bench` (full sizes, 3 runs) and `make bench-quick` (short sizes).

The service runs as its own subprocess on a scratch database; subscribers and the writer are spawned
worker processes, started once and reused by every scenario. Each scenario's figures are medians over
`--runs` runs with their spread. Writes bench/results/<size>-<UTC timestamp>.json (every figure and the
machine's facts), a Markdown table (printed, and saved as latest.md, or quick-latest.md), and PNG plots.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness, plots, report, sender, stats, workers, writer
from bench.clients import SubscriberPool
from bench.harness import PROJECT_ROOT
from bench.measure import Bench
from bench.scenarios import ALL, BY_NAME
from bench.scenarios.base import RunResult, Scenario, Size

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CLIENT_PROCESSES = 4


def main(argv: list[str] | None = None, *, size: Size = "full") -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=("quick", "full"), default=size, help="scenario sizes")
    parser.add_argument("--runs", type=int, help="runs per scenario (default: 3 full, 1 quick)")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in ALL], help="these scenarios only")
    parser.add_argument(
        "--capture",
        choices=("trigger", "logical", "both"),
        default="trigger",
        help="the service's capture mode; both: each scenario in each mode, side by side (on a private "
        "wal_level=logical PostgreSQL unless BENCH_DATABASE_URL has it)",
    )
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (3 if args.size == "full" else 1)
    if runs < 1:
        parser.error("--runs must be at least 1")
    # SIGTERM as an exception, so the servers are stopped and the scratch database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = [BY_NAME[name] for name in args.only] if args.only else list(ALL)
    scenarios = [s for s in chosen if args.capture != "logical" or s.name != CAPTURE_SCENARIO]
    if args.capture != "trigger":
        scenarios = [
            variant
            for s in scenarios
            for variant in ([s] if s.name == CAPTURE_SCENARIO else _in_modes(s, args.capture))
        ]
    started = time.monotonic()
    document = run(scenarios, args.size, runs, logical_everywhere=args.capture != "trigger")
    text = report.markdown(document, scenarios)
    print(text)
    json_path = report.write_json(document)
    md_path = report.write_markdown(text, args.size)
    prefix = "" if args.size == "full" else "quick-"
    pngs = plots.draw(document, report.RESULTS_DIR, prefix)
    written = ", ".join(str(p.relative_to(PROJECT_ROOT)) for p in [json_path, md_path, *pngs])
    print(f"\nWrote {written}; took {time.monotonic() - started:.0f} s.")
    if any("error" in result for result in document["results"].values()):
        sys.exit(1)


CAPTURE_SCENARIO = "capture"  # needs wal_level=logical whatever the mode: it runs both
LOGICAL_SUFFIX = "@logical"


def _in_modes(scenario: Scenario, capture: str) -> list[Scenario]:
    """The scenario in each mode asked for; the logical variant's rows say so."""

    def logical_rows(size: Size) -> list[Any]:
        return [
            dataclasses.replace(row, scenario=f"[logical] {row.scenario}" if row.scenario else "")
            for row in scenario.rows(size)
        ]

    logical = dataclasses.replace(
        scenario,
        name=scenario.name + LOGICAL_SUFFIX,
        rows=logical_rows,
        load=lambda size: [(f"[logical] {title}", prefix) for title, prefix in scenario.load(size)],
    )
    return [logical] if capture == "logical" else [scenario, logical]


def run(
    scenarios: list[Scenario], size: Size, runs: int, *, logical_everywhere: bool = False
) -> dict[str, Any]:
    """Every scenario, `runs` times; a failed scenario is recorded, not fatal.

    Each run gets a fresh scratch database and server, so that no run inherits another's change log
    (whose size the service's costs depend on) or memory. The load generator's processes are shared.
    """
    started, stamp = time.monotonic(), datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Other work on a small machine skews every figure: keep a record of how busy it was.
    load_at_start = os.getloadavg()
    busy_before = harness.machine_busy_pct(0.5)
    admin_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)
    facts_at_start = harness.machine_facts(admin_url)
    workers.raise_fd_limit()  # inherited by the servers and the workers
    results: dict[str, dict[str, Any]] = {}
    load = LoadGenerator()
    try:
        # Under /tmp with mode 755: a private cluster's server runs as `nobody` when this runs as root.
        with (
            tempfile.TemporaryDirectory(prefix="fluxbase-bench-", dir="/tmp") as work,
            contextlib.ExitStack() as stack,
        ):
            Path(work).chmod(0o755)
            logical_url: str | None = None
            for scenario in scenarios:
                url = admin_url
                if logical_everywhere or scenario.name == CAPTURE_SCENARIO:
                    if logical_url is None:
                        logical_url = (
                            admin_url
                            if harness.wal_level(admin_url) == "logical"
                            else stack.enter_context(harness.logical_cluster(Path(work)))
                        )
                    url = logical_url
                results[scenario.name] = _run_scenario(load, url, Path(work), scenario, size, runs)
                if "error" in results[scenario.name]:
                    # A failed command can leave answers queued: start the load generator afresh.
                    load.stop()
                    load = LoadGenerator()
    finally:
        load.stop()
    _derive(scenarios, results)
    return {
        "started_at": stamp,
        "size": size,
        "runs": runs,
        "elapsed_s": time.monotonic() - started,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "machine_busy_before_pct": busy_before,
        "machine": facts_at_start,
        "machine_at_end": harness.machine_facts(admin_url),
        "params": {s.name: asdict(s.params(size)) for s in scenarios},
        "cdf_probabilities": stats.CDF_PROBABILITIES,
        "results": results,
    }


def _derive(scenarios: list[Scenario], results: dict[str, dict[str, Any]]) -> None:
    """Figures that compare scenarios of this run (say, broadcast against table fan-out)."""
    summaries = {name: result["summary"] for name, result in results.items() if "summary" in result}
    for scenario in scenarios:
        if scenario.derive is not None and scenario.name in summaries:
            summaries[scenario.name].update(scenario.derive(summaries))


class LoadGenerator:
    """The client and writer processes, started once for the whole suite."""

    def __init__(self) -> None:
        self.pool = SubscriberPool(CLIENT_PROCESSES)
        self.writer = workers.Worker("writer", writer.run)
        self.sender = workers.Worker("sender", sender.run)

    def stop(self) -> None:
        self.pool.stop()
        self.writer.stop()
        self.sender.stop()


def _run_scenario(
    load: LoadGenerator, admin_url: str, work: Path, scenario: Scenario, size: Size, runs: int
) -> dict[str, Any]:
    started = time.monotonic()
    runs = min(runs, scenario.max_runs or runs)
    print(f"[{scenario.name}] running ({size}, {runs} run(s))...", file=sys.stderr, flush=True)
    measured: list[RunResult] = []
    server_log: list[str] = []
    try:
        for index in range(runs):
            log_path = work / f"{scenario.name}-{index}.log"
            mode = "logical" if scenario.name.endswith(LOGICAL_SUFFIX) else "trigger"
            with (
                harness.scratch_database(admin_url) as dsn,
                harness.running_server(dsn, log_path, scenario.env(size), mode) as server,
            ):
                bench = Bench(dsn, server, load.pool, load.writer, work, sender=load.sender)
                code = harness.server_code_digest()  # read just after the server started from it
                try:
                    measured.append(scenario.measure(bench, size, measured))
                    measured[-1].details["server_stats"] = server.stats()
                    measured[-1].details["server_code"] = code
                finally:
                    # LOG_LEVEL=warning: anything here is worth reading (other instances' too).
                    lines = [*server.log_lines(), *bench.log_lines]
                    server_log += [f"run {index}: {line}" for line in lines]
    except Exception:
        error = traceback.format_exc()
        print(f"[{scenario.name}] failed:\n{error}", file=sys.stderr)
        print("\n".join(["server log (last lines):", *server_log[-20:]]), file=sys.stderr)
        return {"error": error, "elapsed_s": time.monotonic() - started, "server_log": server_log[-50:]}
    labels = dict.fromkeys(label for result in measured for label in result.cdfs)  # in order
    elapsed = time.monotonic() - started
    print(f"[{scenario.name}] done in {elapsed:.1f} s", file=sys.stderr, flush=True)
    return {
        "elapsed_s": elapsed,
        "summary": stats.aggregate([result.figures for result in measured]),
        "cdf": {label: stats.median_curve([r.cdfs.get(label, []) for r in measured]) for label in labels},
        "runs": [{"figures": r.figures, "details": r.details} for r in measured],
        "server_log": server_log[-50:],
    }
