"""A histogram cheap enough for the delivery path: plain ints, read by /metrics at scrape time."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# Seconds, from a tenth of a millisecond (a pass on an idle database) to the slow-client timeout's range.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Counts observations per bucket. `observe` is a bisect and three additions, with no lock: every
    observer runs on the event loop. prometheus_client's own Histogram takes a lock per observation."""

    __slots__ = ("_counts", "bounds", "count", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Record `value` `times` times (a batch of changes that all waited as long)."""
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus' `le`).
        self._counts[bisect.bisect_left(self.bounds, value)] += times
        self.count += times
        self.sum += value * times

    def cumulative(self) -> list[tuple[str, int]]:
        """(`le`, observations at or below it) for every bound and `+Inf`, as Prometheus exposes them."""
        buckets: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self._counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets
