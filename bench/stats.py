"""Numbers from numbers: percentiles, CDF points, lag growth, and medians with spreads across runs."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# Probabilities at which a latency CDF is kept: even steps, then finer ones in the tail worth seeing.
CDF_PROBABILITIES: tuple[float, ...] = (
    *(i / 100 for i in range(100)),
    *(0.99 + i / 1000 for i in range(1, 10)),
    0.9995,
    1.0,
)
# Lag growth is judged on the changes of the first and the last fifth of a measurement.
GROWTH_FRACTION = 0.2


def percentile_ms(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def latency_figures(ordered: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of sorted latencies (seconds), in ms."""
    return {
        "p50_ms": percentile_ms(ordered, 0.50),
        "p95_ms": percentile_ms(ordered, 0.95),
        "p99_ms": percentile_ms(ordered, 0.99),
        "max_ms": percentile_ms(ordered, 1.0),
    }


def cdf_ms(ordered: Sequence[float]) -> list[float]:
    """The latency (ms) at each of CDF_PROBABILITIES: enough to draw the CDF without every point."""
    return [percentile_ms(ordered, q) or 0.0 for q in CDF_PROBABILITIES] if ordered else []


def lag_growth_ms(completion: Sequence[float]) -> float | None:
    """How much later the last changes reached everyone than the first ones did: the median completion
    lag of the last fifth of changes minus that of the first fifth, in ms. Near zero when delivery keeps
    up; when it does not, the backlog (and this) grows with the length of the measurement."""
    delivered = [lag for lag in completion if lag >= 0]
    part = max(1, int(len(delivered) * GROWTH_FRACTION))
    if len(delivered) < 5:
        return None
    return 1000 * (statistics.median(delivered[-part:]) - statistics.median(delivered[:part]))


Summary = dict[str, dict[str, float]]


def aggregate(runs: Sequence[Mapping[str, Any]]) -> Summary:
    """Median, min and max of every numeric figure across runs (booleans count as 0/1)."""
    summary: Summary = {}
    for key in runs[0] if runs else ():
        values = [float(run[key]) for run in runs if isinstance(run.get(key), int | float)]
        if values:
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def median_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Pointwise median of CDFs sampled at the same probabilities (still a CDF: each is monotonic)."""
    curves = [c for c in curves if c]
    return [statistics.median(points) for points in zip(*curves, strict=True)] if curves else []
