"""How late the event loop runs its timers: the process's own measure of being short of CPU.

Everything a process does (accepts, upgrades, subscribes, fan-out, heartbeats, the bus) runs on its one
event loop. When there is more to do than its core gives (a reconnect storm on a shared machine), every
callback waits for the loop to come round, timers included: a timer that asks for INTERVAL seconds and
fires late measures that wait. A lateness of seconds means clients' acks, heartbeats and the bus's own
heartbeats are seconds late too (other instances then take this one for lost). Admission may read `recent()`
(REALTIME_MAX_LOOP_LAG_SECONDS): past a bound, new connections are refused before the upgrade
(app.routers.realtime), so that the loop serves the connections it has on time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from app.services.histogram import LATENCY_BUCKETS, Histogram

INTERVAL = 0.25  # seconds between samples: four a second costs nothing and sees a one-second stall
# Samples `recent()` looks back over: a loop late by seconds a moment ago is taken as still overloaded
# until a second of samples says otherwise, so that one prompt timer between stalls does not open the door.
RECENT = 4


class LoopLag:
    """Samples the loop's lateness every `interval` seconds into a histogram, for /metrics."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self._interval = interval
        self.histogram = Histogram(LATENCY_BUCKETS)
        self.worst = 0.0  # the largest lateness seen since the process started
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._due: float | None = None  # when the sample under way is due (loop time), while running

    def recent(self) -> float:
        """How late the loop is running now: the most of the last samples' lateness and of the lateness of
        the sample under way, if it is overdue (a loop stalled right now is late before its timer fires)."""
        overdue = 0.0 if self._due is None else asyncio.get_running_loop().time() - self._due
        return max(overdue, *self._recent, 0.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._due = due = loop.time() + self._interval
                await asyncio.sleep(self._interval)
                late = max(0.0, loop.time() - due)
                self.histogram.observe(late)
                self._recent.append(late)
                self.worst = max(self.worst, late)
        finally:
            self._due = None
