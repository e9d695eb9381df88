"""When the hub writes the clients' broadcasts it holds (app.services.pacing.FlushPacer)."""

from __future__ import annotations

import pytest

from app.services.pacing import FlushPacer


def drive(pacer: FlushPacer, arrivals: list[float]) -> list[float]:
    """Each arrival starts a flush (nothing is held at that moment); returns each flush's delay, after
    running the flush when it is due."""
    delays = []
    for now in arrivals:
        delay = pacer.delay(now)
        delays.append(delay)
        pacer.flushed(now + delay)
    return delays


def test_sparse_broadcasts_are_written_at_the_end_of_their_turn() -> None:
    # 20 ms apart, with a 10 ms interval: never sustained.
    assert drive(FlushPacer(0.01), [1.00, 1.02, 1.04, 1.06, 1.08]) == [0.0] * 5


def test_sustained_broadcasts_are_written_at_most_once_per_interval() -> None:
    # Every 4 ms, with a 10 ms interval: two flushes in a row within the interval still run at once; from
    # the third on, each waits until an interval has passed since the last flush.
    delays = drive(FlushPacer(0.01), [1.000, 1.004, 1.008, 1.012, 1.026, 1.040])
    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3] == pytest.approx(0.006)  # flushed at 1.018
    assert delays[4] == pytest.approx(0.002)  # flushed at 1.028
    assert delays[5] == 0.0  # 12 ms since the last flush: no longer sustained


def test_paced_flushes_stay_paced_while_traffic_lasts_and_a_pause_ends_them() -> None:
    pacer = FlushPacer(0.01)
    drive(pacer, [1.000, 1.004, 1.008])
    assert pacer.delay(1.009) == pytest.approx(0.009)
    pacer.flushed(1.018)
    assert pacer.delay(1.019) == pytest.approx(0.009)  # a flush paced last time: still within
    pacer.flushed(1.028)
    assert pacer.delay(1.040) == 0.0  # an interval without anything: back to the turn's end
    pacer.flushed(1.040)
    assert pacer.delay(1.041) == 0.0  # and the streak starts over


def test_no_interval_never_paces() -> None:
    assert drive(FlushPacer(0.0), [1.0, 1.0, 1.0, 1.0, 1.0]) == [0.0] * 5
