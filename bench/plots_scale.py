"""PNG plots of the 100,000-connection scenarios (issue 14): clients live again over time after the
storm's kill, and the delivery-time CDF of idle100k's and spread100k's one change to every connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.stats import CDF_PROBABILITIES

STORM_TARGET_S = 30.0
DELIVERY_TARGET_MS = 1000.0


def draw(document: dict[str, Any], directory: Path, prefix: str, subtitle: str) -> list[Path]:
    """`<prefix>storm.png`, `<prefix>idle100k-delivery.png` and `<prefix>spread100k-delivery.png` for
    the scenarios that ran; their paths."""
    paths = []
    storm = [run for run in document["results"].get("storm", {}).get("runs", []) if run["details"]]
    if storm:
        paths.append(_storm(storm, directory / f"{prefix}storm.png", subtitle))
    for name in ("idle100k", "spread100k"):
        runs = [run for run in document["results"].get(name, {}).get("runs", []) if run["details"]]
        if runs:
            paths.append(_delivery(runs, directory / f"{prefix}{name}-delivery.png", subtitle))
    return paths


def _storm(runs: list[dict[str, Any]], path: Path, subtitle: str) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 6), dpi=110)
    for number, run in enumerate(runs, 1):
        points = run["details"].get("live_curve", [])
        figures = run["figures"]
        xs = [0.0, *(seconds for seconds, _ in points)]
        ys = [0, *(count for _, count in points)]
        axes.step(
            xs,
            ys,
            where="post",
            linewidth=1.4,
            label=f"run {number}: {_outcome(figures)} (first after {figures['first_live_s']:.1f} s)",
        )
    database = axes.twinx()  # what the storm cost the database, on the same time axis
    for run in runs:
        points = run["details"].get("db_curve", [])
        database.plot([t for t, _ in points], [n for _, n in points], color="tab:purple", linewidth=0.9)
    database.set_ylabel("database transactions committed since the kill (purple)")
    clients = runs[0]["figures"]["clients"]
    axes.axvline(STORM_TARGET_S, color="tab:red", linewidth=0.8, linestyle="--", label="target: 30 s")
    axes.set_xlabel("seconds since the server was killed (SIGKILL), then restarted on its port")
    axes.set_ylabel("clients subscribed again (acked, with since)")
    axes.set_ylim(0, clients * 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(
        f"Reconnect storm: {clients:,} clients after a SIGKILL and restart\n{subtitle}", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _outcome(figures: dict[str, Any]) -> str:
    if figures.get("all_live_s") is not None:
        return f"all live after {figures['all_live_s']:.1f} s"
    return f"{figures['live_again']:,.0f} of {figures['clients']:,.0f} live at the end of the wait"


def _delivery(runs: list[dict[str, Any]], path: Path, subtitle: str) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 6), dpi=110)
    for number, run in enumerate(runs, 1):
        curve = run["details"].get("delivery_cdf_ms", [])
        axes.step(
            curve,
            CDF_PROBABILITIES[: len(curve)],
            where="post",
            linewidth=1.4,
            label=f"run {number}: last delivery {run['figures'].get('change_max_ms') or 0:,.0f} ms",
        )
    connections = runs[0]["figures"]["connections"]
    # spread100k's: several processes on one machine (the open-file limit is per process).
    instances = runs[0]["figures"].get("instances", 1)
    where = f"over {instances} instances on one machine" if instances > 1 else "on one instance"
    axes.axvline(DELIVERY_TARGET_MS, color="tab:red", linewidth=0.8, linestyle="--", label="target: 1 s")
    axes.set_xlabel("ms from the INSERT sent to the frame received")
    axes.set_ylabel("fraction of connections that had it")
    axes.set_ylim(0, 1.01)
    axes.set_xlim(left=0)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(f"One change to {connections:,} idle connections {where}\n{subtitle}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
