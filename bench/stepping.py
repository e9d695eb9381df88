"""The search for the highest rate that delivery sustains: step the offered rate up until it lags, then
narrow the gap between the last rate that kept up and the first that did not.

Shared by the table fan-out and the broadcast fan-out scenarios, so that their figures mean the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.measure import Measurement

# A step only counts when the load generator (the writer, or the broadcast sender) kept at least this
# share of the rate asked of it: otherwise it, not delivery, set the pace, and the rate was never offered.
WRITER_PACE = 0.95

Step = tuple[float, Measurement]


@dataclass(frozen=True)
class Search:
    """(highest rate that kept up, its measurement), (the lowest rate that did not, whether because the
    load generator could not keep its pace), and every step tried."""

    best: Step | None
    failed: tuple[float, bool] | None
    steps: list[dict[str, Any]]

    def figures(self, kept: tuple[str, ...], subscribers: int) -> dict[str, Any]:
        """The `kept` figures of the best step, its rate, and the offered deliveries/s that lagged."""
        figures: dict[str, Any] = dict.fromkeys(kept)
        if self.best is not None:
            figures.update({key: self.best[1].figures.get(key) for key in kept})
            figures["rate"] = self.best[0]
            figures.update({k: v for k, v in self.best[1].figures.items() if k.startswith("cpu_")})
        failed = self.failed
        figures["failed_deliveries"] = failed[0] * subscribers if failed is not None else None
        figures["failed_by_writer"] = float(failed[1]) if failed is not None else None
        return figures


def highest_sustained(
    step: Callable[[float], Measurement],
    start: float,
    *,
    factor: float,
    resolution: float,
    max_steps: int,
) -> Search:
    """Rates (per second) from `start`, times `factor` until one lags (or divided until one keeps up),
    then the geometric middle of the gap until it is within `resolution`, at most `max_steps` steps."""
    best: Step | None = None
    failed: tuple[float, bool] | None = None
    steps: list[dict[str, Any]] = []
    rate = start
    for _ in range(max_steps):
        measured = step(rate)
        paced = measured.figures["writer_rate"] >= WRITER_PACE * rate
        steps.append({"rate": rate, "writer_kept_pace": paced, **measured.figures})
        if measured.figures["keeps_up"] and paced:
            if best is None or rate > best[0]:
                best = (rate, measured)
        elif failed is None or rate < failed[0]:
            failed = (rate, not paced)
        if best is not None and failed is not None:
            if failed[0] / best[0] <= resolution:
                break
            rate = math.sqrt(best[0] * failed[0])
        else:
            rate = rate * factor if failed is None else rate / factor
    return Search(best, failed, steps)
