"""How late the event loop runs its timers: the process's own measure of being short of CPU.

Everything a process does (accepts, upgrades, subscribes, fan-out, heartbeats, the bus) runs on its one
event loop. When there is more to do than its core gives (a reconnect storm on a shared machine), every
callback waits for the loop to come round, timers included: a timer that asks for INTERVAL seconds and
fires late measures that wait. A lateness of seconds means clients' acks, heartbeats and the bus's own
heartbeats are seconds late too (other instances then take this one for lost).
"""

from __future__ import annotations

import asyncio

from app.services.histogram import LATENCY_BUCKETS, Histogram

INTERVAL = 0.25  # seconds between samples: four a second costs nothing and sees a one-second stall


class LoopLag:
    """Samples the loop's lateness every `interval` seconds into a histogram, for /metrics."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self._interval = interval
        self.histogram = Histogram(LATENCY_BUCKETS)
        self.worst = 0.0  # the largest lateness seen since the process started

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            late = max(0.0, loop.time() - due)
            self.histogram.observe(late)
            self.worst = max(self.worst, late)
