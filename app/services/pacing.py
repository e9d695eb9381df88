"""When the change feed runs its next sequencer pass: at once, paced, polling, or when woken."""

from __future__ import annotations


class PassPacer:
    """Decides the feed's schedule from what each pass saw.

    Idle or moderately busy, the feed runs a pass per wake-up (a NOTIFY). Under sustained writes (`streak`
    passes in a row saw more commit while they ran) passes start at most every `interval` seconds: each
    pass commits (and flushes WAL) once, however many changes it numbers, so letting the next pass find a
    batch bounds the flushes per second the feed adds to the writers'. A change that merely committed
    during one pass, as happens now and then at moderate rates, is not held back: pacing on the first such
    pass cost 0.2 ms of p50 and 2.5 ms of p99 latency at 200 changes/s.

    With a `grace`, sustained writes also make the feed *poll*: it runs a pass every `interval` without
    waiting to be woken, and asks each pass that finds new changes to extend the polling lease by `grace`
    (`lease`), which lets writers skip NOTIFY (sql/capture.sql). It stops polling once
    twice the grace has passed without a new change, so a transaction that read a valid lease and commits
    within the grace after it is still found by a polling pass.
    """

    def __init__(self, interval: float, *, grace: float = 0.0, streak: int = 3) -> None:
        self._interval = interval
        self._grace = grace if interval else 0.0
        self._streak = streak
        self._overlapped = 0  # passes in a row that saw more committed while they ran
        self._polling = False
        self._last_new = 0.0  # when a polling pass last found new changes

    @property
    def polling(self) -> bool:
        """Run the next pass after the pause whether or not anything wakes the feed."""
        return self._polling

    @property
    def lease(self) -> float | None:
        """Seconds of polling lease the next pass should take when it finds new changes (None: none)."""
        return self._grace if self._polling else None

    def pause_after(
        self, started: float, now: float, *, more_arrived: bool, found_new: bool = False
    ) -> float:
        """Seconds to wait after a pass that began at `started` and ended at `now`."""
        if self._polling:
            if found_new:
                self._last_new = now
            elif now - self._last_new >= 2 * self._grace:
                self._polling = False
                self._overlapped = 0
                return 0.0
            return max(0.0, started + self._interval - now)
        self._overlapped = self._overlapped + 1 if more_arrived else 0
        if not self._interval or self._overlapped < self._streak:
            return 0.0
        if self._grace:
            self._polling, self._last_new = True, now
        return max(0.0, started + self._interval - now)


class FlushPacer:
    """Decides when the hub writes the clients' broadcasts it holds (app.services.hub.Hub.offer_live).

    Idle or moderately busy, at the end of the loop turn that brought them: a broadcast waits for no
    later one. Under sustained traffic (the first frame of `streak` flushes in a row came within
    `interval` of the flush before), at most every `interval` seconds: a 1,000-member channel then costs
    1,000 socket writes per interval whatever the rate, instead of 1,000 per broadcast, as the feed's
    paced passes do for table changes. Traffic that pauses for an `interval` is back to the end of the
    turn at once.
    """

    __slots__ = ("_interval", "_last", "_streak", "_within")

    def __init__(self, interval: float, *, streak: int = 3) -> None:
        self._interval = interval
        self._streak = streak
        self._within = 0  # flushes in a row whose first frame came within the interval of the last flush
        self._last = float("-inf")  # when the last flush ran

    def delay(self, now: float) -> float:
        """The first frame of a flush is held at `now`: seconds until that flush (0: the turn's end)."""
        if now - self._last >= self._interval:
            self._within = 0
            return 0.0
        self._within += 1
        if self._within < self._streak:
            return 0.0
        return self._last + self._interval - now

    def flushed(self, now: float) -> None:
        """A flush ran at `now`."""
        self._last = now
