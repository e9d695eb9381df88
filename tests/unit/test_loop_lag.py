"""The loop-lag sampler on a real event loop: a loop held by synchronous work shows up as lateness."""

from __future__ import annotations

import asyncio
import contextlib
import time

from app.services.loop_lag import RECENT, LoopLag

HELD = 0.3  # seconds the test holds the loop (a real stall, not a measure of speed)
INTERVAL = 0.01


async def test_a_stalled_loop_is_seen_as_late_timers() -> None:
    lag = LoopLag(interval=INTERVAL)
    task = asyncio.create_task(lag.run())
    try:
        while lag.histogram.count < 3:  # noqa: ASYNC110 - running, with samples of an unheld loop
            await asyncio.sleep(INTERVAL)
        before = lag.histogram.count
        time.sleep(HELD)  # noqa: ASYNC251 - holds the loop on purpose: the sampler's timer cannot fire
        while lag.histogram.count == before:  # noqa: ASYNC110 - the sample taken after the stall
            await asyncio.sleep(INTERVAL)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The timer was due at most INTERVAL after the stall began, and fired after it ended.
    assert lag.worst >= HELD - INTERVAL
    buckets = dict(lag.histogram.cumulative())
    assert buckets["+Inf"] - buckets["0.25"] >= 1  # one sample above a quarter of a second


async def test_recent_lag_sees_a_stall_at_once_and_forgets_it_after_the_recent_samples() -> None:
    lag = LoopLag(interval=INTERVAL)
    task = asyncio.create_task(lag.run())
    seen_in_stall = 0.0

    def held() -> None:
        nonlocal seen_in_stall
        time.sleep(HELD)
        seen_in_stall = lag.recent()  # still on the held loop: the sample under way is overdue

    try:
        while lag.histogram.count < 3:  # noqa: ASYNC110 - running, with samples of an unheld loop
            await asyncio.sleep(INTERVAL)
        assert lag.recent() < HELD - INTERVAL
        asyncio.get_running_loop().call_soon(held)
        await asyncio.sleep(0)  # the stall runs here
        assert seen_in_stall >= HELD - INTERVAL
        after = lag.histogram.count
        while lag.histogram.count < after + 1:  # noqa: ASYNC110 - the late sample is taken
            await asyncio.sleep(INTERVAL)
        assert lag.recent() >= HELD - INTERVAL  # remembered by the samples, not only while overdue
        while lag.histogram.count < after + 1 + RECENT:  # noqa: ASYNC110 - as many prompt samples more
            await asyncio.sleep(INTERVAL)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert lag.recent() < HELD - INTERVAL
