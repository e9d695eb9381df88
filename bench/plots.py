"""PNG plots of a run, drawn from its result document: latency CDFs, and fan-out against subscribers.

Needs matplotlib (the `bench` extra); without it the plots are skipped with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import plots_scale
from bench.stats import CDF_PROBABILITIES

TARGET_DELIVERIES = 120_000
LATENCY_TARGETS_MS = (1.5, 4.5)  # p50 and p99 at 200 changes/s to 100 subscribers
MIN_MS = 0.3  # the left edge of latency axes


def draw(document: dict[str, Any], directory: Path, prefix: str) -> list[Path]:
    """`<prefix>latency-cdf.png`, `<prefix>fanout.png` and the scale plots (bench/plots_scale.py) in
    `directory`; returns the paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots.")
        return []
    subtitle = (
        f"{document['size']} run {document['started_at']}, {document['runs']} run(s), "
        f"{document['machine']['cpu_count']} CPUs shared by server, PostgreSQL and load generator"
    )
    paths = []
    cdfs = {
        label: curve
        for result in document["results"].values()
        for label, curve in result.get("cdf", {}).items()
        if curve
    }
    if cdfs:
        paths.append(_latency_cdf(cdfs, directory / f"{prefix}latency-cdf.png", subtitle))
    fanout = document["results"].get("fanout", {})
    if fanout.get("summary"):
        paths.append(_fanout(fanout, directory / f"{prefix}fanout.png", subtitle))
    return paths + plots_scale.draw(document, directory, prefix, subtitle)


def _latency_cdf(cdfs: dict[str, list[float]], path: Path, subtitle: str) -> Path:
    """Left: the CDF; right: the same data as the share of deliveries slower than x, on a log scale,
    where p99 and p99.9 can be read."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, (body, tail) = plt.subplots(1, 2, figsize=(13, 6), dpi=110)
    for label, curve in cdfs.items():
        # A delivery can beat the writer's own clock reading when the writer is descheduled right
        # after COMMIT: such (tiny or negative) latencies are drawn at the axis' left edge.
        xs = [max(value, MIN_MS) for value in curve]
        ps = CDF_PROBABILITIES[: len(curve)]
        (line,) = body.step(xs, ps, where="post", label=label, linewidth=1.4)
        # The last point (p100, the maximum) has no share slower than it: drawn at the plot's floor.
        tail.step(xs, [max(1 - p, 1e-4) for p in ps], where="post", color=line.get_color(), linewidth=1.4)
    milliseconds = FuncFormatter(lambda value, _: f"{value:g}")
    for axes in (body, tail):
        axes.set_xscale("log")
        axes.set_xlim(left=MIN_MS)
        axes.xaxis.set_major_formatter(milliseconds)
        axes.set_xlabel("latency: COMMIT returned to frame received (ms, log scale)")
        axes.grid(True, which="both", alpha=0.3)
        for limit in LATENCY_TARGETS_MS:
            axes.axvline(limit, color="tab:red", linewidth=0.8, linestyle="--")
    body.plot(
        [],
        [],
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label="targets of the latency scenario: p50 1.5 ms, p99 4.5 ms",
    )
    body.set_ylabel("fraction of deliveries at or below")
    body.set_ylim(0, 1.01)
    body.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    body.set_title("CDF", fontsize=10)
    tail.set_yscale("log")
    tail.set_ylim(1e-4, 1.05)
    tail.set_yticks([1, 0.5, 0.1, 0.01, 0.001, 0.0001], ["all", "p50", "p90", "p99", "p99.9", "p99.99"])
    tail.set_ylabel("share of deliveries slower than x")
    tail.set_title("tail (log scale)", fontsize=10)
    figure.suptitle(f"Delivery latency per scenario\n{subtitle}", fontsize=11)
    figure.legend(*body.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    figure.savefig(path)
    plt.close(figure)
    return path


def _fanout(result: dict[str, Any], path: Path, subtitle: str) -> Path:
    """Sustained deliveries/s against subscribers (median, min-max, p99 there), over every step tried."""
    import matplotlib.pyplot as plt

    summary = result["summary"]
    counts = sorted(
        int(key[1:].split(".")[0])
        for key in summary
        if key.startswith("s") and key.endswith(".deliveries_per_s")
    )
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for kept, marker, color, label in (
        (True, "o", "tab:green", "a step that kept up"),
        (False, "x", "tab:red", "a step that lagged (deliveries/s measured)"),
    ):
        steps = [
            (int(n), step["deliveries_per_s"])
            for run in result.get("runs", [])
            for n, tried in run["details"].get("steps", {}).items()
            for step in tried
            if bool(step["keeps_up"]) == kept
        ]
        if steps:
            xs, ys = [n for n, _ in steps], [rate for _, rate in steps]
            axes.scatter(xs, ys, marker=marker, color=color, alpha=0.45, s=22, label=label)
    rates = [summary[f"s{n}.deliveries_per_s"] for n in counts]
    medians = [r["median"] for r in rates]
    errors = [[r["median"] - r["min"] for r in rates], [r["max"] - r["median"] for r in rates]]
    axes.errorbar(
        counts,
        medians,
        yerr=errors,
        marker="o",
        capsize=4,
        linewidth=1.8,
        color="tab:blue",
        label="sustainable deliveries/s (median of runs, min-max)",
    )
    axes.axhline(
        TARGET_DELIVERIES,
        color="tab:red",
        linestyle="--",
        linewidth=1,
        label=f"target {TARGET_DELIVERIES:,}/s at 1,000 subs",
    )
    for n, median in zip(counts, medians, strict=True):
        latency = summary.get(f"s{n}.p99_ms")
        if latency is not None:
            axes.annotate(
                f"p99 {latency['median']:.0f} ms",
                (n, median),
                textcoords="offset points",
                xytext=(8, 6),
                ha="left",
                fontsize=8,
            )
    axes.set_xscale("log")
    axes.set_xticks(counts, [f"{n:,}" for n in counts])
    axes.set_xticks([], minor=True)
    axes.set_xlim(min(counts) / 1.5, max(counts) * 1.5)
    axes.set_xlabel("subscribers on the channel (log scale)")
    axes.set_ylabel("deliveries per second")
    axes.set_ylim(0, max([*medians, TARGET_DELIVERIES]) * 1.3)
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    axes.grid(True, alpha=0.3)
    axes.set_title(f"Fan-out: highest rate delivered without a growing lag\n{subtitle}", fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
