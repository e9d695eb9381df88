"""The results as a reader sees them: Markdown tables (figures against targets, then the load the machine
was under) and the files a run leaves in bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import PROJECT_ROOT
from bench.scenarios.base import Row, Scenario, Size
from bench.stats import Summary

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
BUSY_WARNING_PCT = 15.0
RANGE = "\u2013"  # an en dash: "(-22-67)" with hyphens would be ambiguous
LOAD_COLUMNS = (
    ("server %core", "cpu_server_pct"),
    ("PostgreSQL %core", "cpu_postgres_pct"),
    ("writer %core", "cpu_writer_pct"),
    ("clients %core", "cpu_clients_pct"),
    ("Redis %core", "cpu_redis_pct"),
    ("other %core", "cpu_other_pct"),
    ("machine %all", "cpu_machine_pct"),
)


def cell(summary: Summary, row: Row, runs: int) -> str:
    """`median unit`, with ` (min-max)` when runs differ."""
    figure = summary.get(row.key)
    if figure is None:
        return "-"
    unit = f" {row.unit}" if row.unit and not row.unit.startswith("/") else row.unit
    median = row.fmt.format(figure["median"])
    if runs == 1 or row.fmt.format(figure["min"]) == row.fmt.format(figure["max"]):
        return f"{median}{unit}"
    return f"{median}{unit} ({row.fmt.format(figure['min'])}{RANGE}{row.fmt.format(figure['max'])})"


def verdict(summary: Summary, row: Row) -> str:
    if row.target is None:
        return ""
    figure = summary.get(row.key)
    if figure is None:
        return "✗ (no figure)"
    return "✓" if row.target.met(figure["median"]) else "✗"


def figures_table(scenarios: list[Scenario], summaries: dict[str, Summary], size: Size, runs: int) -> str:
    spread = f"median of {runs} runs (min{RANGE}max)" if runs > 1 else "1 run"
    lines = [
        f"| scenario | figure | measured, {spread} | target | |",
        "|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        summary = summaries.get(scenario.name)
        if summary is None:
            lines.append(f"| {scenario.name} | failed: see the JSON file | | | |")
            continue
        for row in scenario.rows(size):
            target = row.target.text if row.target else ""
            lines.append(
                f"| {row.scenario} | {row.figure} | {cell(summary, row, runs)} | {target} | "
                f"{verdict(summary, row)} |"
            )
    return "\n".join(lines)


def load_table(scenarios: list[Scenario], summaries: dict[str, Summary], size: Size) -> str:
    """CPU shares (medians) while each measurement ran: who competed for the two cores."""
    lines = [
        "| while measuring | " + " | ".join(title for title, _ in LOAD_COLUMNS) + " |",
        "|---" * (len(LOAD_COLUMNS) + 1) + "|",
    ]
    for scenario in scenarios:
        summary = summaries.get(scenario.name, {})
        for title, prefix in scenario.load(size):
            values = [summary.get(prefix + key) for _, key in LOAD_COLUMNS]
            cells = ["-" if v is None else f"{v['median']:.0f}" for v in values]
            system = summary.get(prefix + "cpu_server_system_pct")
            if system is not None and values[0] is not None:
                cells[0] += f" ({system['median']:.0f} in kernel)"
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(document: dict[str, Any]) -> list[str]:
    """What a reader needs to judge the tables."""
    facts = document["machine"]
    load = document["load_average_at_start"]
    lines = [
        f"{facts['cpu_count']} CPUs ({facts['cpu_model']}), PostgreSQL {facts['postgresql']}, Python "
        f"{facts['python']}; load average {load[0]:.2f} at start. The server, PostgreSQL, the writer and "
        "the client processes share these cores, so every figure is a floor, not the server's ceiling.",
        "Latency: the client's receipt of the frame minus the moment the writer's COMMIT returned (same "
        "clock). Kept up (sustainable): every change delivered, in order, no slow-consumer close, and the "
        "lag (until a change had reached every subscriber) grew or shrank by at most 25 ms or 5% of the "
        "measurement's length between its first and last fifth: delivery ran at ~95% of the offered rate "
        "or more. Fan-out: the highest rate that kept up, stepping the rate up by 1.5x, then halving the "
        "gap to the first rate that lagged until within 1.25x.",
        "Memory: the server's RSS (kernel socket buffers are not in it). %core: of one core; machine "
        "%all: of all cores.",
    ]
    if {"broadcast", "presence"} & set(document["results"]):
        lines.append(
            "Broadcast (issue 9): latency from the sender's socket write (the send time is in the payload) "
            "to the subscriber's read, same clock; `writer %core` is the sender there. Two instances: the "
            "sender and half of the subscribers on one, the other half on the other. Presence: times from "
            "the first (all at once) or the last (paced) track to the moment the last connection had "
            "counted every member; bytes per join: presence_diff bytes a member received while N joined, "
            "divided by N. Redis %core: the shared redis-server (anyone else's use counts too)."
        )
    if document["machine_busy_before_pct"] > BUSY_WARNING_PCT:
        lines.append(
            f"**The machine was already {document['machine_busy_before_pct']:.0f}% busy (all cores) before "
            "the run started**: other work competed with it (see `other %core`)."
        )
    if facts.get("server_code_modified"):
        lines.append("The server code (app/, sql/) had uncommitted changes when this started.")
    if facts.get("git_head") != document["machine_at_end"].get("git_head"):
        lines.append("**New commits landed while this ran** (git HEAD differs at start and end).")
    codes = {
        run["details"].get("server_code")
        for result in document["results"].values()
        for run in result.get("runs", [])
    }
    if len(codes) > 1:
        lines.append(
            f"**The server code changed during this run**: runs measured {len(codes)} different versions "
            "of app/, sql/ and alembic/ (`server_code` of each run in the JSON file)."
        )
    failed = [name for name, result in document["results"].items() if "error" in result]
    if failed:
        lines.append(f"Failed scenarios: {', '.join(failed)} (tracebacks in the JSON file).")
    times = ", ".join(f"{name} {result['elapsed_s']:.0f} s" for name, result in document["results"].items())
    lines.append(f"Time per scenario: {times}.")
    logged = sum(len(result.get("server_log", [])) for result in document["results"].values())
    lines.append(f"{logged} server log lines at WARNING or above (in the JSON file).")
    return lines


def markdown(document: dict[str, Any], scenarios: list[Scenario]) -> str:
    size, runs = document["size"], document["runs"]
    summaries = {
        name: result["summary"] for name, result in document["results"].items() if "summary" in result
    }
    return "\n\n".join(
        [
            f"## Benchmark ({size}, {document['started_at']}, {document['elapsed_s']:.0f} s)",
            figures_table(scenarios, summaries, size, runs),
            load_table(scenarios, summaries, size),
            "\n".join(f"- {line}" for line in notes(document)),
        ]
    )


def write_json(document: dict[str, Any]) -> Path:
    """bench/results/<size>-<UTC timestamp>.json, written whole or not at all."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{document['size']}-{document['started_at']}.json"
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(document, indent=2, default=str) + "\n")
    partial.replace(path)
    return path


def write_markdown(text: str, size: Size) -> Path:
    """bench/results/latest.md for a full run (docs/benchmarks.md quotes it); quick-latest.md for quick."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ("latest.md" if size == "full" else "quick-latest.md")
    path.write_text(text + "\n")
    return path
